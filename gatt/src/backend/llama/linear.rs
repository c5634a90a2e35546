//! Linear layers: dense or quantized weights, an optional bias, an optional LoRA
//! adapter with its (seeded) dropout.

use super::matmul::matmul_scaled;
use super::qmatvec::QMatrix;
use super::rows::contiguous_f32;
use candle_core::quantized::QMatMul;
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Result, Shape, Tensor, D};
use std::sync::Mutex;

/// How weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weights {
    /// Dequantized to f32 at load for prompts and training (the f32 matrix product,
    /// `matmul.rs`, picks AVX2/AVX-512 at run time and is fastest for many rows), with
    /// the file's Q4_1/Q8_0 blocks kept beside them for decoding steps (`qmatvec.rs`,
    /// also dispatched at run time; decoding is bound by reading the weights, and the
    /// blocks are 4-6x smaller). About 4x the file's size in memory.
    #[default]
    Dense,
    /// Kept as stored in the file, through candle's quantized kernels: least memory, but
    /// those only use SIMD when the binary is built for the CPU (`-C target-cpu=native`).
    Quantized,
}

pub(super) enum Weight {
    /// Transposed: (in, out).
    Dense(Tensor),
    Quantized(QMatMul),
}

/// A low-rank adapter: `y += scale * dropout(x) A B`.
pub struct Lora {
    /// (in, rank), transposed like the dense weights.
    pub a: Tensor,
    /// (rank, out).
    pub b: Tensor,
    pub scale: f64,
    pub dropout: f32,
}

/// A linear layer, with an optional (dequantized) bias and LoRA adapter.
pub(super) struct Linear {
    pub(super) weight: Weight,
    /// The file's quantized blocks beside dense weights, for products of a few rows
    /// (decoding), which then read 4-6x fewer bytes. Dropped whenever the dense weights
    /// may change (training, merging), so the two never disagree.
    pub(super) blocks: Option<QMatrix>,
    pub(super) bias: Option<Tensor>,
    pub(super) lora: Option<Lora>,
}

/// `scale * x w` for `x` (.., k) and `w` (k, n), as one matrix product for all rows:
/// weights are read once.
fn matmul_rows(x: &Tensor, w: &Tensor, scale: f64) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = dims[dims.len() - 1];
    let rows = x.elem_count() / k;
    let x2 = x.reshape((rows, k))?;
    let y = matmul_scaled(&x2, w, scale)?;
    let mut out = dims;
    *out.last_mut().expect("at least one dim") = w.dim(1)?;
    y.reshape(out)
}

/// How one forward pass runs its linear layers.
#[derive(Clone, Copy, Default)]
pub(super) struct Pass<'a> {
    /// LoRA dropout while training.
    pub dropout: Option<&'a Mutex<Dropout>>,
    /// One row per sequence (a decoding step, or the last position's logits): the
    /// product reads the quantized blocks where there are some. Chosen by the kind of
    /// step, never by the batch size, so a sequence computes the same numbers alone as
    /// in any batch. Measured on 2 cores, the blocks beat the f32 product for every
    /// SmolLM2 matrix at 1 and 4 rows and for a whole decoding step at 16.
    pub one_row_per_sequence: bool,
}

/// The blocks can take `x` (.., k): on the CPU, f32, and no gradient needed (the caller
/// also checks that the dense weight is not being trained).
fn blocks_take(x: &Tensor, k: usize) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && !x.track_op() && x.dims().last() == Some(&k)
}

/// `x` (.., k) times several block matrices, their outputs side by side: (.., Σ n_out).
struct BlockProduct<'a>(Vec<&'a QMatrix>);

impl CustomOp1 for BlockProduct<'_> {
    fn name(&self) -> &'static str {
        "gatt-quantized-rows"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "quantized product")?;
        let k = self.0[0].k;
        let y = QMatrix::matmul_stacked(&self.0, x, x.len() / k, Default::default());
        let mut dims = layout.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = self.0.iter().map(|q| q.n_out).sum();
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
}

impl Linear {
    pub(super) fn forward(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let [y] = Self::forward_all([self], x, pass)?;
        Ok(y)
    }

    /// Layers that read one input (q, k and v; gate and up). Those that decode from
    /// blocks share one quantization of `x` and one product.
    pub(super) fn forward_all<const N: usize>(
        layers: [&Linear; N],
        x: &Tensor,
        pass: Pass,
    ) -> Result<[Tensor; N]> {
        let blocks: Vec<Option<&QMatrix>> = layers.iter().map(|l| l.blocks_for(x, pass)).collect();
        let stacked: Vec<&QMatrix> = blocks.iter().flatten().copied().collect();
        let mut side_by_side = None;
        if !stacked.is_empty() {
            side_by_side = Some(x.contiguous()?.apply_op1_no_bwd(&BlockProduct(stacked))?);
        }
        let mut at = 0;
        let mut out = Vec::with_capacity(N);
        for (layer, blocks) in layers.iter().zip(&blocks) {
            let y = match (blocks, &side_by_side) {
                (Some(q), Some(all)) => {
                    at += q.n_out;
                    all.narrow(D::Minus1, at - q.n_out, q.n_out)?
                }
                _ => layer.product(x)?,
            };
            out.push(layer.with_bias_and_lora(y, x, pass)?);
        }
        Ok(out.try_into().expect("one output per layer"))
    }

    /// `[x·W₁ᵀ | x·W₂ᵀ | …]` as one tensor when every layer decodes from blocks and has no
    /// bias or adapter, else `None` (the model's gate and up, which the SiLU gate then
    /// reads in place).
    pub(super) fn forward_side_by_side(
        layers: &[&Linear],
        x: &Tensor,
        pass: Pass,
    ) -> Result<Option<Tensor>> {
        let plain = |l: &&Linear| l.bias.is_none() && l.lora.is_none();
        let blocks: Option<Vec<&QMatrix>> = layers
            .iter()
            .map(|l| plain(l).then(|| l.blocks_for(x, pass)).flatten())
            .collect();
        match blocks {
            Some(b) if !b.is_empty() => {
                Ok(Some(x.contiguous()?.apply_op1_no_bwd(&BlockProduct(b))?))
            }
            _ => Ok(None),
        }
    }

    /// The blocks that compute this layer's product for `x` in `pass`, if any.
    fn blocks_for(&self, x: &Tensor, pass: Pass) -> Option<&QMatrix> {
        match (&self.weight, &self.blocks) {
            (Weight::Dense(w), Some(q))
                if pass.one_row_per_sequence && !w.track_op() && blocks_take(x, q.k) =>
            {
                Some(q)
            }
            _ => None,
        }
    }

    /// `x` times the weights.
    fn product(&self, x: &Tensor) -> Result<Tensor> {
        match &self.weight {
            Weight::Quantized(q) => q.forward(x),
            Weight::Dense(w) => matmul_rows(x, w, 1.0),
        }
    }

    fn with_bias_and_lora(&self, mut y: Tensor, x: &Tensor, pass: Pass) -> Result<Tensor> {
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if let Some(l) = &self.lora {
            let x = match pass.dropout {
                Some(d) if l.dropout > 0.0 => {
                    let mask =
                        d.lock()
                            .expect("dropout rng")
                            .mask(x.dims(), l.dropout, x.device())?;
                    (x * mask)?
                }
                _ => x.clone(),
            };
            let delta = matmul_rows(&matmul_rows(&x, &l.a, 1.0)?, &l.b, l.scale)?;
            y = (y + delta)?;
        }
        Ok(y)
    }

    pub(super) fn out_dim(&self) -> Result<usize> {
        match &self.weight {
            Weight::Dense(w) => w.dim(1),
            Weight::Quantized(q) => match q {
                QMatMul::QTensor(t) => Ok(t.shape().dims()[0]),
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dim(0),
            },
        }
    }

    pub(super) fn in_dim(&self) -> Result<usize> {
        match &self.weight {
            Weight::Dense(w) => w.dim(0),
            Weight::Quantized(q) => match q {
                QMatMul::QTensor(t) => Ok(t.shape().dims()[1]),
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dim(1),
            },
        }
    }
}

/// Seeded inverted dropout for LoRA inputs while training (reproducible on resume).
/// A splitmix64 stream: one cheap 64-bit draw gives the keep/drop bits of two elements.
pub struct Dropout {
    state: u64,
}

impl Dropout {
    pub fn new(seed: u64) -> Self {
        Dropout { state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn mask(&mut self, dims: &[usize], p: f32, device: &Device) -> Result<Tensor> {
        let n: usize = dims.iter().product();
        let keep = 1.0 / (1.0 - p);
        let threshold = (p as f64 * u32::MAX as f64) as u32;
        let mut m = Vec::with_capacity(n + 1);
        while m.len() < n {
            let r = self.next();
            for half in [r as u32, (r >> 32) as u32] {
                m.push(if half < threshold { 0.0 } else { keep });
            }
        }
        m.truncate(n);
        Tensor::from_vec(m, dims, device)
    }
}
