//! One decoder layer of full fine-tuning on the CPU as a single op: the forward pass of
//! the pre-norm block (RMS norm, grouped-query attention with rotary positions over
//! packed sequences, RMS norm, SwiGLU MLP, both residual additions) and its backward
//! pass written out by hand, the weights' gradients added into a [`GradSink`].
//!
//! Composed from one op per step, candle's backward pass gives every node of the graph
//! (about fifteen a layer) a zero tensor and then adds the node's gradient to it
//! (`GradStore::or_insert` and `Tensor::add`, candle-core 0.11), and keeps every
//! intermediate until the whole graph is dropped. Profiled on a full fine-tuning step of
//! the default model (2,048 tokens, 2 threads), those zero-then-add passes alone took
//! about 10% of the step. Here a layer is one node: the backward pass writes each
//! gradient once, adds the residual branches inside the products (gemm's `alpha`), and
//! frees the layer's saved activations as soon as its gradients are out.
//!
//! The steps are the model's own kernels on slices (`norm`, `rope`,
//! `packed_attention`, `swiglu`, the products of `matmul`), so the numbers are those of
//! the composed layer up to the order of a few float additions; the model's tests
//! compare both ways on every gradient.

use super::matmul::{mm, mm_new, M};
use super::norm::{rms_norm_grad_w_rows, rms_norm_grad_x_rows, rms_norm_rows};
use super::packed_attention::Packed;
use super::rope::Rope;
use super::rows::contiguous_f32;
use super::swiglu::{silu_mul_all, silu_mul_grad_all};
use candle_core::backprop::GradStore;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor, TensorId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A layer's weights, as the model holds them: norms (hidden), projections transposed
/// (in, out): q (hidden, heads·hd), k and v (hidden, kv_heads·hd), o (heads·hd, hidden),
/// gate and up (hidden, intermediate), down (intermediate, hidden).
#[derive(Clone)]
pub struct LayerWeights {
    pub attn_norm: Tensor,
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub o: Tensor,
    pub ffn_norm: Tensor,
    pub gate: Tensor,
    pub up: Tensor,
    pub down: Tensor,
}

impl LayerWeights {
    fn all(&self) -> [&Tensor; 9] {
        [
            &self.attn_norm,
            &self.q,
            &self.k,
            &self.v,
            &self.o,
            &self.ffn_norm,
            &self.gate,
            &self.up,
            &self.down,
        ]
    }
}

/// The layer's hyper-parameters.
#[derive(Clone, Copy, Debug)]
pub struct LayerShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// The RMS norms' epsilon.
    pub eps: f32,
    /// Rotary pairs are adjacent elements (llama's GGUF order), not the halves of a head.
    pub interleaved: bool,
}

/// Weight gradients computed outside candle's graph, summed per weight (keyed by the
/// weight tensor's id) until [`GradSink::drain_into`] hands them to a [`GradStore`].
#[derive(Default)]
pub struct GradSink(Mutex<HashMap<TensorId, (Shape, Vec<f32>)>>);

impl GradSink {
    /// Adds `a (m x k) b (k x n)` to the gradient of `w` (m x n): the first product is
    /// written straight into a new buffer, later ones accumulate inside gemm.
    fn add_product(&self, w: &Tensor, m: usize, n: usize, k: usize, a: M, b: M) {
        let mut sums = self.0.lock().expect("gradient sink lock");
        match sums.get_mut(&w.id()) {
            Some((_, g)) => mm(m, n, k, g, 1.0, a, b, 1.0),
            None => {
                sums.insert(w.id(), (w.shape().clone(), mm_new(m, n, k, a, b, 1.0)));
            }
        }
    }

    /// Adds `g` to the gradient of `w`.
    fn add(&self, w: &Tensor, g: Vec<f32>) {
        let mut sums = self.0.lock().expect("gradient sink lock");
        match sums.get_mut(&w.id()) {
            Some((_, old)) => old.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
            None => {
                sums.insert(w.id(), (w.shape().clone(), g));
            }
        }
    }

    /// Forgets every gradient summed so far.
    pub fn clear(&self) {
        self.0.lock().expect("gradient sink lock").clear();
    }

    /// Moves every gradient summed so far into `store` (added to one already there),
    /// leaving the sink empty.
    ///
    /// # Errors
    ///
    /// When candle cannot make or add the tensors.
    pub fn drain_into(&self, store: &mut GradStore) -> Result<()> {
        let sums = std::mem::take(&mut *self.0.lock().expect("gradient sink lock"));
        for (id, (shape, g)) in sums {
            let mut g = Tensor::from_vec(g, shape, &candle_core::Device::Cpu)?;
            if let Some(old) = store.get_id(id) {
                g = (old + g)?;
            }
            store.insert_id(id, g);
        }
        Ok(())
    }
}

/// The decoder layer applied to `x` (1, T, hidden), T tokens of sequences packed end to
/// end (`segments`, their lengths), each sequence attending only to itself; `cos`/`sin`
/// (1, T, head_dim / 2) are each token's rotary angles. Returns (1, T, hidden). The
/// backward pass returns the gradient of `x` and adds the weights' gradients to `sink`
/// (to be drained into the step's [`GradStore`]); it runs once per forward pass.
///
/// # Errors
///
/// Tensors off the CPU or not f32, shapes that do not fit together, or segments that do
/// not cover the T tokens.
pub fn decoder_layer(
    x: &Tensor,
    weights: LayerWeights,
    shape: LayerShape,
    (cos, sin): (&Tensor, &Tensor),
    segments: &[usize],
    sink: &Arc<GradSink>,
) -> Result<Tensor> {
    let (b, t, hidden) = x.dims3()?;
    let (q, kv) = (
        shape.heads * shape.head_dim,
        shape.kv_heads * shape.head_dim,
    );
    let inter = weights.gate.dim(1)?;
    let expected: [&[usize]; 9] = [
        &[hidden],
        &[hidden, q],
        &[hidden, kv],
        &[hidden, kv],
        &[q, hidden],
        &[hidden],
        &[hidden, inter],
        &[hidden, inter],
        &[inter, hidden],
    ];
    for (w, want) in weights.all().iter().zip(expected) {
        if w.dims() != want || !w.device().is_cpu() || w.dtype() != candle_core::DType::F32 {
            bail!(
                "decoder layer: a weight of {:?} {:?}, expected {want:?} f32 on the CPU",
                w.dims(),
                w.dtype()
            )
        }
    }
    let half = shape.head_dim / 2;
    if b != 1
        || !shape.head_dim.is_multiple_of(2)
        || cos.dims() != [1, t, half]
        || sin.dims() != cos.dims()
    {
        bail!(
            "decoder layer: input {:?} with angles {:?}, expected (1, T, hidden) and (1, T, {half})",
            x.dims(),
            cos.dims()
        )
    }
    let attn = Packed::new(segments, 1.0 / (shape.head_dim as f64).sqrt() as f32);
    attn.check(shape.heads, shape.kv_heads, t)?;
    let op = DecoderLayer {
        cos: cos.flatten_all()?.to_vec1::<f32>()?,
        sin: sin.flatten_all()?.to_vec1::<f32>()?,
        weights,
        shape,
        attn,
        sink: Arc::clone(sink),
        saved: Mutex::new(None),
    };
    x.contiguous()?.apply_op1(op)
}

struct DecoderLayer {
    weights: LayerWeights,
    shape: LayerShape,
    cos: Vec<f32>,
    sin: Vec<f32>,
    attn: Packed,
    sink: Arc<GradSink>,
    saved: Mutex<Option<Saved>>,
}

/// What the backward pass reads from the forward pass (T tokens; Q = heads·hd, KV =
/// kv_heads·hd, I = intermediate).
struct Saved {
    /// The first norm's output, T x hidden.
    xn1: Vec<f32>,
    /// Rotated queries (heads x T x hd), keys and values (kv_heads x T x hd).
    qh: Vec<f32>,
    kh: Vec<f32>,
    vh: Vec<f32>,
    /// The attention's probabilities (`packed_attention`'s blocks).
    probs: Vec<f32>,
    /// The attention's output as rows, T x Q.
    att: Vec<f32>,
    /// The residual stream after the attention, T x hidden, and its norm.
    x2: Vec<f32>,
    xn2: Vec<f32>,
    /// Gate and up products (T x I) and the gated product `silu(gate) up`.
    gate: Vec<f32>,
    up: Vec<f32>,
    gated: Vec<f32>,
}

/// The weights' elements, borrowed for one pass.
struct Slices<'a> {
    attn_norm: &'a [f32],
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    o: &'a [f32],
    ffn_norm: &'a [f32],
    gate: &'a [f32],
    up: &'a [f32],
    down: &'a [f32],
}

/// Runs `f` on the weights' elements, holding their storage for the call.
fn with_slices<R>(w: &LayerWeights, f: impl FnOnce(&Slices) -> Result<R>) -> Result<R> {
    let held: Vec<_> = w.all().iter().map(|t| t.storage_and_layout()).collect();
    let mut s = Vec::with_capacity(9);
    for (storage, layout) in &held {
        let Storage::Cpu(cpu) = &**storage else {
            bail!("decoder layer: weights off the CPU")
        };
        s.push(contiguous_f32(cpu, layout, "decoder layer")?);
    }
    f(&Slices {
        attn_norm: s[0],
        q: s[1],
        k: s[2],
        v: s[3],
        o: s[4],
        ffn_norm: s[5],
        gate: s[6],
        up: s[7],
        down: s[8],
    })
}

/// T rows of n heads side by side (T x n·hd) to heads (n x T x hd).
fn rows_to_heads(x: &[f32], n: usize, hd: usize) -> Vec<f32> {
    let t = x.len() / (n * hd);
    let mut out = vec![0f32; x.len()];
    for (ti, row) in x.chunks_exact(n * hd).enumerate() {
        for (h, head) in row.chunks_exact(hd).enumerate() {
            out[(h * t + ti) * hd..][..hd].copy_from_slice(head);
        }
    }
    out
}

/// Heads (n x T x hd) to T rows of the n heads side by side (T x n·hd).
fn heads_to_rows(x: &[f32], n: usize, hd: usize) -> Vec<f32> {
    let t = x.len() / (n * hd);
    let mut out = vec![0f32; x.len()];
    for (i, head_row) in x.chunks_exact(hd).enumerate() {
        let (h, ti) = (i / t, i % t);
        out[(ti * n + h) * hd..][..hd].copy_from_slice(head_row);
    }
    out
}

impl DecoderLayer {
    fn rope(&self, n: usize, back: bool, x: &[f32], t: usize) -> Vec<f32> {
        let r = Rope {
            n,
            interleaved: self.shape.interleaved,
            back,
        };
        r.apply(x, &self.cos, &self.sin, t, self.shape.head_dim)
    }

    fn forward(&self, x: &[f32], hidden: usize, w: &Slices) -> (Vec<f32>, Saved) {
        let sh = self.shape;
        let (hd, t) = (sh.head_dim, x.len() / hidden);
        let (q, kv, inter) = (sh.heads * hd, sh.kv_heads * hd, w.gate.len() / hidden);
        let xn1 = rms_norm_rows(x, w.attn_norm, sh.eps);
        let a = M::rows(&xn1, hidden);
        let qr = mm_new(t, q, hidden, a, M::rows(w.q, q), 1.0);
        let kr = mm_new(t, kv, hidden, a, M::rows(w.k, kv), 1.0);
        let vr = mm_new(t, kv, hidden, a, M::rows(w.v, kv), 1.0);
        let qh = self.rope(sh.heads, false, &qr, t);
        let kh = self.rope(sh.kv_heads, false, &kr, t);
        let vh = rows_to_heads(&vr, sh.kv_heads, hd);
        drop((qr, kr, vr));
        let (att_h, probs) = self.attn.forward(&qh, &kh, &vh, sh.heads, sh.kv_heads, hd);
        let att = heads_to_rows(&att_h, sh.heads, hd);
        drop(att_h);
        // x2 = x + att Wo: the residual added inside the product.
        let mut x2 = x.to_vec();
        mm(
            t,
            hidden,
            q,
            &mut x2,
            1.0,
            M::rows(&att, q),
            M::rows(w.o, hidden),
            1.0,
        );
        let xn2 = rms_norm_rows(&x2, w.ffn_norm, sh.eps);
        let a = M::rows(&xn2, hidden);
        let gate = mm_new(t, inter, hidden, a, M::rows(w.gate, inter), 1.0);
        let up = mm_new(t, inter, hidden, a, M::rows(w.up, inter), 1.0);
        let gated = silu_mul_all(&gate, &up);
        let mut out = x2.clone();
        let g = M::rows(&gated, inter);
        mm(
            t,
            hidden,
            inter,
            &mut out,
            1.0,
            g,
            M::rows(w.down, hidden),
            1.0,
        );
        let saved = Saved {
            xn1,
            qh,
            kh,
            vh,
            probs,
            att,
            x2,
            xn2,
            gate,
            up,
            gated,
        };
        (out, saved)
    }

    /// The gradient of the input `x` for the output gradient `dy`; the weights'
    /// gradients go to the sink.
    fn backward(&self, x: &[f32], dy: &[f32], hidden: usize, w: &Slices, s: Saved) -> Vec<f32> {
        let sh = self.shape;
        let (hd, t) = (sh.head_dim, x.len() / hidden);
        let (q, kv, inter) = (sh.heads * hd, sh.kv_heads * hd, w.gate.len() / hidden);
        let wt = &self.weights;
        let sink = &self.sink;
        fn rows(v: &[f32], n: usize) -> M<'_> {
            M::rows(v, n)
        }
        // MLP: out = x2 + silu(gate) up Wd.
        let d_gated = mm_new(
            t,
            inter,
            hidden,
            rows(dy, hidden),
            rows(w.down, hidden).t(),
            1.0,
        );
        sink.add_product(
            &wt.down,
            inter,
            hidden,
            t,
            rows(&s.gated, inter).t(),
            rows(dy, hidden),
        );
        drop(s.gated);
        let d_both = silu_mul_grad_all(&s.gate, &s.up, &d_gated);
        drop((d_gated, s.gate, s.up));
        let (d_gate, d_up) = d_both.split_at(t * inter);
        let mut d_xn2 = mm_new(
            t,
            hidden,
            inter,
            rows(d_gate, inter),
            rows(w.gate, inter).t(),
            1.0,
        );
        let (d_up_m, w_up_t) = (rows(d_up, inter), rows(w.up, inter).t());
        mm(t, hidden, inter, &mut d_xn2, 1.0, d_up_m, w_up_t, 1.0);
        let xn2_t = rows(&s.xn2, hidden).t();
        sink.add_product(&wt.gate, hidden, inter, t, xn2_t, rows(d_gate, inter));
        sink.add_product(&wt.up, hidden, inter, t, xn2_t, d_up_m);
        drop((d_both, s.xn2));
        // The residual stream's gradient before the MLP: dy plus the norm's.
        let mut dx2 = dy.to_vec();
        rms_norm_grad_x_rows(&s.x2, w.ffn_norm, &d_xn2, sh.eps, &mut dx2, true);
        let d_norm = rms_norm_grad_w_rows(&s.x2, &d_xn2, sh.eps, hidden);
        sink.add(&wt.ffn_norm, d_norm);
        drop((d_xn2, s.x2));
        // Attention: x2 = x + att Wo.
        let d_att = mm_new(t, q, hidden, rows(&dx2, hidden), rows(w.o, hidden).t(), 1.0);
        sink.add_product(&wt.o, q, hidden, t, rows(&s.att, q).t(), rows(&dx2, hidden));
        drop(s.att);
        let d_att_h = rows_to_heads(&d_att, sh.heads, hd);
        drop(d_att);
        let (heads, kvh) = (sh.heads, sh.kv_heads);
        let all = self
            .attn
            .backward(&s.probs, &d_att_h, &s.qh, &s.kh, &s.vh, heads, kvh, hd);
        drop((d_att_h, s.probs, s.qh, s.kh, s.vh));
        let (dqh, rest) = all.split_at(t * q);
        let (dkh, dvh) = rest.split_at(t * kv);
        let dq = self.rope(heads, true, dqh, t);
        let dk = self.rope(kvh, true, dkh, t);
        let dv = heads_to_rows(dvh, kvh, hd);
        drop(all);
        let mut d_xn1 = mm_new(t, hidden, q, rows(&dq, q), rows(w.q, q).t(), 1.0);
        mm(
            t,
            hidden,
            kv,
            &mut d_xn1,
            1.0,
            rows(&dk, kv),
            rows(w.k, kv).t(),
            1.0,
        );
        mm(
            t,
            hidden,
            kv,
            &mut d_xn1,
            1.0,
            rows(&dv, kv),
            rows(w.v, kv).t(),
            1.0,
        );
        let xn1_t = rows(&s.xn1, hidden).t();
        sink.add_product(&wt.q, hidden, q, t, xn1_t, rows(&dq, q));
        sink.add_product(&wt.k, hidden, kv, t, xn1_t, rows(&dk, kv));
        sink.add_product(&wt.v, hidden, kv, t, xn1_t, rows(&dv, kv));
        drop(s.xn1);
        let mut dx = dx2;
        rms_norm_grad_x_rows(x, w.attn_norm, &d_xn1, sh.eps, &mut dx, true);
        sink.add(
            &wt.attn_norm,
            rms_norm_grad_w_rows(x, &d_xn1, sh.eps, hidden),
        );
        dx
    }
}

impl CustomOp1 for DecoderLayer {
    fn name(&self) -> &'static str {
        "gatt-decoder-layer"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "decoder layer")?;
        let hidden = layout.dims()[2];
        let (out, saved) = with_slices(&self.weights, |w| Ok(self.forward(x, hidden, w)))?;
        *self.saved.lock().expect("saved activations lock") = Some(saved);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // Taken, not shared: the layer's activations are freed as soon as its gradients
        // are out, which keeps the backward pass's peak memory down.
        let Some(saved) = self.saved.lock().expect("saved activations lock").take() else {
            bail!("decoder layer: a second backward pass over the same forward pass")
        };
        let grad = grad.contiguous()?;
        let (gs, gl) = grad.storage_and_layout();
        let (xs, xl) = arg.storage_and_layout();
        let (Storage::Cpu(gs), Storage::Cpu(xs)) = (&*gs, &*xs) else {
            bail!("decoder layer: gradients off the CPU")
        };
        let dy = contiguous_f32(gs, gl, "decoder layer")?;
        let x = contiguous_f32(xs, xl, "decoder layer")?;
        let hidden = xl.dims()[2];
        let dx = with_slices(
            &self.weights,
            |w| Ok(self.backward(x, dy, hidden, w, saved)),
        )?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}
