//! Linear layers: dense or quantized weights, an optional bias, an optional LoRA
//! adapter with its (seeded) dropout.

use crate::kernels::lora_linear;
use crate::kernels::matmul::matmul_scaled;
use crate::kernels::qmatvec::QMatrix;
use crate::kernels::rows::contiguous_f32;
use candle_core::quantized::QMatMul;
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Result, Shape, Tensor, D};
use gatt::seed::SplitMix64;
use std::sync::Mutex;

/// How weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weights {
    /// Dequantized to f32 at load for training (the f32 matrix product, `matmul.rs`,
    /// picks AVX2/AVX-512 at run time), with the file's Q4_1/Q8_0 blocks kept beside
    /// them for inference on the CPU, prompts and decoding steps alike (`qmatvec.rs`,
    /// also dispatched at run time: 8-bit integer products run about three times as many
    /// multiply-adds per second as the f32 product, and read 4-6x fewer bytes). Rows
    /// with outlying activations and matrices in other formats use the f32 weights.
    /// In memory, the f32 weights plus the blocks: about 7x a Q4_1 file's size (the
    /// default model: 93 MB on disk, 540 MB of f32 weights), about 5x a Q8_0 file's.
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

/// A low-rank adapter (f32): `y += scale * dropout(x) A B`. peft stores the same matrices
/// transposed, as `lora_A` (rank, in) and `lora_B` (out, rank).
pub struct Lora {
    /// (in, rank), transposed like the dense weights.
    pub a: Tensor,
    /// (rank, out).
    pub b: Tensor,
    /// Multiplier of the adapter's output: peft's `lora_alpha / r`.
    pub scale: f64,
    /// Probability of zeroing an input element of the adapter while training (inverted
    /// dropout: kept elements are scaled by 1 / (1 - p)); 0 for none.
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
    if x.rank() == 3 && x.dim(0)? == 1 && w.rank() == 2 && x.device().is_cpu() {
        // One batch of rows (a packed training chunk): no reshape, which would be one
        // more node of candle's graph with a zero tensor and an addition of its own in
        // the backward pass.
        return matmul_scaled(x, w, scale);
    }
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
    /// An inference pass (a prompt, a decoding step, the logits): products read the
    /// quantized blocks where there are some. Chosen by the kind of pass, never by the
    /// batch size or the prompt's length, and the blocks compute every row on its own
    /// (see [`OUTLIER`] for the rows they leave to the f32 weights), so a sequence
    /// computes the same numbers alone as in any batch. Measured on 2 cores, the blocks
    /// beat the f32 product at every batch size, and took prefill of a 512-token prompt
    /// from about 470 to 750-850 tokens/s.
    pub inference: bool,
}

/// The blocks can take `x` (.., k): on the CPU, f32, and no gradient needed (the caller
/// also checks that the dense weight is not being trained).
fn blocks_take(x: &Tensor, k: usize) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && !x.track_op() && x.dims().last() == Some(&k)
}

/// Rows with an activation of at least this magnitude use the f32 weights even where
/// blocks exist. An 8-bit block keeps 127 steps of its largest value, so the "massive
/// activations" of a prompt's first token (about 3,000 at SmolLM2's down-projection
/// input, against at most about 100 in other rows) leave the rest of their block at zero;
/// with them quantized, the default model's greedy answer to "What is the capital of
/// France?" lost Paris. The choice is made row by row, from the row alone, so a sequence
/// still computes the same numbers in any batch.
const OUTLIER: f32 = 128.0;

/// `x` (.., k) times several block matrices, their outputs side by side: (.., Σ n_out).
/// Each matrix comes with its dense weights (k, n_out) for the outlier rows.
struct BlockProduct<'a>(Vec<(&'a QMatrix, &'a Tensor)>);

impl CustomOp1 for BlockProduct<'_> {
    fn name(&self) -> &'static str {
        "gatt-quantized-rows"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "quantized product")?;
        let k = self.0[0].0.k;
        let mats: Vec<&QMatrix> = self.0.iter().map(|(q, _)| *q).collect();
        let mut y = QMatrix::matmul_stacked(&mats, x, x.len() / k, Default::default());
        let width: usize = mats.iter().map(|q| q.n_out).sum();
        for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(width)) {
            if xr.iter().any(|v| v.abs() >= OUTLIER || v.is_nan()) {
                self.dense_row(xr, yr)?;
            }
        }
        let mut dims = layout.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = width;
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
}

impl BlockProduct<'_> {
    /// One row's outputs from the f32 weights: `y = Σᵢ xᵢ · W[i, ..]`, in input order.
    fn dense_row(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        let mut at = 0;
        for (q, w) in &self.0 {
            let (storage, layout) = w.storage_and_layout();
            let candle_core::Storage::Cpu(storage) = &*storage else {
                candle_core::bail!("quantized product: dense weights off the CPU")
            };
            let w = contiguous_f32(storage, layout, "quantized product")?;
            let out = &mut y[at..at + q.n_out];
            out.fill(0.0);
            for (&xi, wi) in x.iter().zip(w.chunks_exact(q.n_out)) {
                out.iter_mut().zip(wi).for_each(|(o, &w)| *o += xi * w);
            }
            at += q.n_out;
        }
        Ok(())
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
        let blocks: Vec<Option<(&QMatrix, &Tensor)>> =
            layers.iter().map(|l| l.blocks_for(x, pass)).collect();
        let stacked: Vec<(&QMatrix, &Tensor)> = blocks.iter().flatten().copied().collect();
        let mut side_by_side = None;
        if !stacked.is_empty() {
            side_by_side = Some(x.contiguous()?.apply_op1_no_bwd(&BlockProduct(stacked))?);
        }
        let mut at = 0;
        let mut out = Vec::with_capacity(N);
        for (layer, blocks) in layers.iter().zip(&blocks) {
            let y = match (blocks, &side_by_side) {
                (Some((q, _)), Some(all)) => {
                    at += q.n_out;
                    all.narrow(D::Minus1, at - q.n_out, q.n_out)?
                }
                _ => {
                    if let Some(y) = layer.fused_lora(x, pass)? {
                        out.push(y);
                        continue;
                    }
                    layer.product(x)?
                }
            };
            out.push(layer.with_bias_and_lora(y, x, pass)?);
        }
        Ok(out.try_into().expect("one output per layer"))
    }

    /// `[x·Aᵀ | x·Bᵀ]` as one tensor of two equal halves when both layers decode from
    /// blocks, are as wide and have no bias or adapter, else `None` (the model's gate and
    /// up, which the SiLU gate then reads in place).
    pub(super) fn forward_halves(
        a: &Linear,
        b: &Linear,
        x: &Tensor,
        pass: Pass,
    ) -> Result<Option<Tensor>> {
        let plain = |l: &Linear| l.bias.is_none() && l.lora.is_none();
        match (a.blocks_for(x, pass), b.blocks_for(x, pass)) {
            (Some(qa), Some(qb)) if plain(a) && plain(b) && qa.0.n_out == qb.0.n_out => Ok(Some(
                x.contiguous()?
                    .apply_op1_no_bwd(&BlockProduct(vec![qa, qb]))?,
            )),
            _ => Ok(None),
        }
    }

    /// The blocks that compute this layer's product for `x` in `pass`, if any, with the
    /// dense weights they stand for.
    fn blocks_for(&self, x: &Tensor, pass: Pass) -> Option<(&QMatrix, &Tensor)> {
        match (&self.weight, &self.blocks) {
            (Weight::Dense(w), Some(q))
                if pass.inference && !w.track_op() && blocks_take(x, q.k) =>
            {
                Some((q, w))
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

    /// Whether every row's product is the same sequence of operations whatever other rows
    /// share the call (inference on the CPU): the file's blocks, and no adapter. `gemm`'s
    /// f32 products (and candle's quantized ones) sum a row in an order that depends on
    /// how many rows the call has.
    pub(super) fn rows_independent(&self) -> bool {
        self.blocks.is_some() && self.lora.is_none()
    }

    /// `x W + b + s (x ∘ m) A B` as one op (`kernels::lora_linear`), when this layer has
    /// an adapter and frozen f32 weights on the CPU; `None` otherwise. Draws the same
    /// dropout mask as the composed path.
    fn fused_lora(&self, x: &Tensor, pass: Pass) -> Result<Option<Tensor>> {
        let (Weight::Dense(w), Some(l)) = (&self.weight, &self.lora) else {
            return Ok(None);
        };
        if w.track_op() || !x.device().is_cpu() || x.dtype() != DType::F32 {
            return Ok(None);
        }
        let mask = match pass.dropout {
            Some(d) if l.dropout > 0.0 => Some(
                d.lock()
                    .expect("dropout rng")
                    .mask_values(x.elem_count(), l.dropout),
            ),
            _ => None,
        };
        let mut y = lora_linear::lora_linear(x, w, &l.a, &l.b, l.scale as f32, mask)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        Ok(Some(y))
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
    rng: SplitMix64,
}

impl Dropout {
    /// Dropout drawing from the splitmix64 stream of `seed` (the trainer passes the
    /// step's seed from `gatt::seed::Stream::TrainDropout`).
    pub fn new(seed: u64) -> Self {
        Dropout {
            rng: SplitMix64::new(seed),
        }
    }

    fn mask(&mut self, dims: &[usize], p: f32, device: &Device) -> Result<Tensor> {
        let n: usize = dims.iter().product();
        Tensor::from_vec(self.mask_values(n, p), dims, device)
    }

    /// `n` factors, each 0 (dropped, probability `p`) or 1 / (1 - p).
    pub(super) fn mask_values(&mut self, n: usize, p: f32) -> Vec<f32> {
        let keep = 1.0 / (1.0 - p);
        let threshold = (p as f64 * u32::MAX as f64) as u32;
        let mut m = Vec::with_capacity(n + 1);
        while m.len() < n {
            let r = self.rng.next_u64();
            for half in [r as u32, (r >> 32) as u32] {
                m.push(if half < threshold { 0.0 } else { keep });
            }
        }
        m.truncate(n);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::qmatvec::QType;
    use candle_core::Device;

    /// A row with an outlying activation gets the f32 product of its own row; the other
    /// rows keep the blocks' numbers, bit for bit, as if they were alone.
    #[test]
    fn outlier_rows_use_the_dense_weights() {
        let (n, k) = (24, 64);
        let wf: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 80.0)
            .collect();
        let q = QMatrix::quantize_from_f32(QType::Q4_1, n, k, &wf);
        // Dense (k, n), as the loader keeps them: the blocks' own values, transposed.
        let dense = Tensor::from_vec(q.dequantize(), (n, k), &Device::Cpu)
            .unwrap()
            .t()
            .unwrap()
            .contiguous()
            .unwrap();
        let mut x: Vec<f32> = (0..3 * k)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 10.0)
            .collect();
        x[k + 7] = 3000.0;
        let xt = Tensor::from_vec(x.clone(), (3, k), &Device::Cpu).unwrap();
        let y = xt
            .apply_op1_no_bwd(&BlockProduct(vec![(&q, &dense)]))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let d = q.dequantize();
        for j in 0..n {
            let terms = (0..k).map(|i| x[k + i] as f64 * d[j * k + i] as f64);
            let (exact, size): (f64, f64) =
                terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
            // f32 summation error only.
            assert!(
                (y[1][j] as f64 - exact).abs() <= 1e-6 * size,
                "row 1, output {j}"
            );
        }
        for r in [0, 2] {
            let alone = q.matmul(&x[r * k..(r + 1) * k], 1);
            assert!(alone
                .iter()
                .zip(&y[r])
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        // Quantized, the outlier's row would be far off: the check above can fail.
        let quantized = q.matmul(&x[k..2 * k], 1);
        let exact: f64 = (0..k).map(|i| x[k + i] as f64 * d[i] as f64).sum();
        assert!((quantized[0] as f64 - exact).abs() > 1e-2);
    }
}
