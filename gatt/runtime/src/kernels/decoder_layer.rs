//! One decoder layer of training on the CPU as a single op: the forward pass of
//! the pre-norm block (RMS norm, grouped-query attention with rotary positions over
//! packed sequences, RMS norm, SwiGLU MLP, both residual additions) and its backward
//! pass written out by hand, the trained tensors' gradients added into a [`GradSink`].
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
//! A projection may carry a LoRA adapter (`y = x W + s (x ∘ m) A B`, as
//! `lora_linear` computes it, the adapter merged into a copy of the weights for large
//! batches without dropout); frozen weights and norms get no gradient. Which tensors are
//! trained is read from the tensors: a variable is trained, anything else is frozen.
//!
//! The steps are the model's own kernels on slices (`norm`, `rope`,
//! `packed_attention`, `swiglu`, the products of `matmul`), so the numbers are those of
//! the composed layer up to the order of a few float additions; the model's tests
//! compare both ways on every gradient.

use super::lora_linear::{merge, MERGE_FROM_ROWS};
use super::matmul::{mm, mm_new, M};
use super::norm::{rms_norm_grad_w_rows, rms_norm_grad_x_rows, rms_norm_rows};
use super::packed_attention::{Heads, Packed};
use super::rope::Rope;
use super::rows::contiguous_f32;
use super::swiglu::{silu_mul_all, silu_mul_grad_all};
use candle_core::backprop::GradStore;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor, TensorId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A LoRA adapter on a projection: `y += scale · (x ∘ mask) A B`.
#[derive(Clone)]
pub struct Adapter {
    /// (in, rank).
    pub a: Tensor,
    /// (rank, out).
    pub b: Tensor,
    /// peft's `lora_alpha / r`.
    pub scale: f32,
    /// The dropout's factor (0 or 1 / (1 - p)) for each element of the projection's
    /// input (T x in), or `None` without dropout.
    pub mask: Option<Vec<f32>>,
}

/// A projection: its weights, transposed as the model holds them (in, out), and its
/// adapter if it has one.
#[derive(Clone)]
pub struct Projection {
    pub w: Tensor,
    pub adapter: Option<Adapter>,
}

/// A layer's weights: norms (hidden) and projections q (hidden, heads·hd), k and v
/// (hidden, kv_heads·hd), o (heads·hd, hidden), gate and up (hidden, intermediate), down
/// (intermediate, hidden).
#[derive(Clone)]
pub struct LayerWeights {
    pub attn_norm: Tensor,
    pub q: Projection,
    pub k: Projection,
    pub v: Projection,
    pub o: Projection,
    pub ffn_norm: Tensor,
    pub gate: Projection,
    pub up: Projection,
    pub down: Projection,
}

/// Indices of the projections in [`LayerWeights::projections`] order.
const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const GATE: usize = 4;
const UP: usize = 5;
const DOWN: usize = 6;

impl LayerWeights {
    /// q, k, v, o, gate, up, down: the order the model runs them (and draws their
    /// adapters' dropout masks).
    pub fn projections(&self) -> [&Projection; 7] {
        [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ]
    }

    /// [`LayerWeights::projections`], mutable.
    pub fn projections_mut(&mut self) -> [&mut Projection; 7] {
        [
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.o,
            &mut self.gate,
            &mut self.up,
            &mut self.down,
        ]
    }

    /// Every tensor: the two norms, then each projection's weights and adapter.
    fn tensors(&self) -> Vec<&Tensor> {
        let mut all = vec![&self.attn_norm, &self.ffn_norm];
        for p in self.projections() {
            all.push(&p.w);
            if let Some(a) = &p.adapter {
                all.extend([&a.a, &a.b]);
            }
        }
        all
    }
}

/// Each token's rotary angles, read out of candle once per forward pass and shared by
/// every layer: cos and sin, T x head_dim / 2 each.
pub struct RopeAngles {
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeAngles {
    /// From the model's tables gathered for the tokens, (1, T, head_dim / 2) each.
    ///
    /// # Errors
    ///
    /// When the two tables differ in shape or are not f32.
    pub fn new(cos: &Tensor, sin: &Tensor) -> Result<Self> {
        if cos.dims() != sin.dims() {
            bail!(
                "rope angles: cos {:?} against sin {:?}",
                cos.dims(),
                sin.dims()
            )
        }
        Ok(RopeAngles {
            cos: cos.flatten_all()?.to_vec1::<f32>()?,
            sin: sin.flatten_all()?.to_vec1::<f32>()?,
        })
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
    /// Adds `scale · a (m x k) b (k x n)` to the gradient of `w` (m x n): the first
    /// product is written straight into a new buffer, later ones accumulate inside gemm.
    #[allow(clippy::too_many_arguments)]
    fn add_product(&self, w: &Tensor, m: usize, n: usize, k: usize, a: M, b: M, scale: f32) {
        let mut sums = self.0.lock().expect("gradient sink lock");
        match sums.get_mut(&w.id()) {
            Some((_, g)) => mm(m, n, k, g, 1.0, a, b, scale),
            None => {
                let g = mm_new(m, n, k, a, b, scale);
                sums.insert(w.id(), (w.shape().clone(), g));
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
/// end (`segments`, their lengths), each sequence attending only to itself; `angles`
/// are each token's rotary angles. Returns (1, T, hidden). The
/// backward pass returns the gradient of `x` and adds the trained tensors' gradients to
/// `sink` (to be drained into the step's [`GradStore`]); it runs once per forward pass.
///
/// # Errors
///
/// Tensors off the CPU or not f32, shapes that do not fit together, or segments that do
/// not cover the T tokens.
pub fn decoder_layer(
    x: &Tensor,
    weights: LayerWeights,
    shape: LayerShape,
    angles: &Arc<RopeAngles>,
    segments: &[usize],
    sink: &Arc<GradSink>,
) -> Result<Tensor> {
    let (b, t, hidden) = x.dims3()?;
    let (q, kv) = (
        shape.heads * shape.head_dim,
        shape.kv_heads * shape.head_dim,
    );
    let inter = weights.gate.w.dim(1)?;
    let (h, i) = (hidden, inter);
    let io = [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)];
    let mut bad = None;
    for (n, want) in [&weights.attn_norm, &weights.ffn_norm]
        .into_iter()
        .zip([h, h])
    {
        if n.dims() != [want] {
            bad = Some((n.dims().to_vec(), vec![want]));
        }
    }
    for (p, (k, n)) in weights.projections().into_iter().zip(io) {
        if p.w.dims() != [k, n] {
            bad = Some((p.w.dims().to_vec(), vec![k, n]));
        }
        if let Some(a) = &p.adapter {
            let r = a.a.dim(1)?;
            if a.a.dims() != [k, r] || a.b.dims() != [r, n] {
                bad = Some((a.b.dims().to_vec(), vec![r, n]));
            }
            if a.mask.as_ref().is_some_and(|m| m.len() != t * k) {
                bail!("decoder layer: a dropout mask does not fit the input of {t} x {k}")
            }
        }
    }
    if let Some((got, want)) = bad {
        bail!("decoder layer: a weight of {got:?}, expected {want:?}")
    }
    let f32_cpu = |w: &&Tensor| w.device().is_cpu() && w.dtype() == candle_core::DType::F32;
    if !weights.tensors().iter().all(f32_cpu) {
        bail!("decoder layer: weights must be f32 tensors on the CPU")
    }
    let half = shape.head_dim / 2;
    if b != 1 || !shape.head_dim.is_multiple_of(2) || angles.cos.len() != t * half {
        bail!(
            "decoder layer: input {:?} with {} angles, expected (1, T, hidden) and T x {half}",
            x.dims(),
            angles.cos.len()
        )
    }
    let attn = Packed::new(segments, 1.0 / (shape.head_dim as f64).sqrt() as f32);
    attn.check(shape.heads, shape.kv_heads, t)?;
    let op = DecoderLayer {
        angles: Arc::clone(angles),
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
    angles: Arc<RopeAngles>,
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
    /// What each projection's adapter keeps, in [`LayerWeights::projections`] order.
    proj: Vec<ProjSaved>,
}

/// What a projection with an adapter keeps for its backward pass.
#[derive(Default)]
struct ProjSaved {
    /// `(x ∘ m) A`, T x rank.
    xa: Vec<f32>,
    /// `W + s A B`, laid out as `W`, when the adapter was merged for the forward pass.
    merged: Option<Vec<f32>>,
}

/// One projection's elements: weights, and the adapter's A and B.
#[derive(Clone, Copy)]
struct ProjSlices<'a> {
    w: &'a [f32],
    ab: Option<(&'a [f32], &'a [f32])>,
}

/// The weights' elements, borrowed for one pass.
struct Slices<'a> {
    attn_norm: &'a [f32],
    ffn_norm: &'a [f32],
    /// In [`LayerWeights::projections`] order.
    p: Vec<ProjSlices<'a>>,
}

/// Runs `f` on the weights' elements, holding their storage for the call.
fn with_slices<R>(w: &LayerWeights, f: impl FnOnce(&Slices) -> Result<R>) -> Result<R> {
    let held: Vec<_> = w.tensors().iter().map(|t| t.storage_and_layout()).collect();
    let mut s = Vec::with_capacity(held.len());
    for (storage, layout) in &held {
        let Storage::Cpu(cpu) = &**storage else {
            bail!("decoder layer: weights off the CPU")
        };
        s.push(contiguous_f32(cpu, layout, "decoder layer")?);
    }
    let mut next = s[2..].iter().copied();
    let mut p = Vec::with_capacity(7);
    for proj in w.projections() {
        let wt = next.next().expect("one slice per tensor");
        let mut one = || next.next().expect("one slice per tensor");
        let ab = proj.adapter.as_ref().map(|_| (one(), one()));
        p.push(ProjSlices { w: wt, ab });
    }
    f(&Slices {
        attn_norm: s[0],
        ffn_norm: s[1],
        p,
    })
}

/// `x ∘ mask`, or `x` itself without dropout.
fn masked<'a>(x: &'a [f32], mask: Option<&[f32]>) -> Cow<'a, [f32]> {
    match mask {
        Some(m) => Cow::Owned(x.iter().zip(m).map(|(x, m)| x * m).collect()),
        None => Cow::Borrowed(x),
    }
}

fn rows(v: &[f32], n: usize) -> M<'_> {
    M::rows(v, n)
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
    fn heads(&self) -> Heads {
        let sh = self.shape;
        Heads {
            nh: sh.heads,
            nkv: sh.kv_heads,
            hd: sh.head_dim,
        }
    }

    fn rope(&self, n: usize, back: bool, x: &[f32], t: usize) -> Vec<f32> {
        let r = Rope {
            n,
            interleaved: self.shape.interleaved,
            back,
        };
        let a = &self.angles;
        r.apply(x, &a.cos, &a.sin, t, self.shape.head_dim)
    }

    /// Projection `i` of `x` (t x in): `x W (+ s (x ∘ m) A B)`, added to `residual`
    /// when given (the product accumulates into it).
    fn project(
        &self,
        i: usize,
        x: &[f32],
        t: usize,
        residual: Option<Vec<f32>>,
        w: &Slices,
    ) -> (Vec<f32>, ProjSaved) {
        let p = w.p[i];
        let k = x.len() / t;
        let n = p.w.len() / k;
        let product = |weights: &[f32]| match residual {
            Some(mut r) => {
                mm(t, n, k, &mut r, 1.0, rows(x, k), rows(weights, n), 1.0);
                r
            }
            None => mm_new(t, n, k, rows(x, k), rows(weights, n), 1.0),
        };
        let (Some((a, b)), Some(ad)) = (p.ab, &self.weights.projections()[i].adapter) else {
            return (product(p.w), ProjSaved::default());
        };
        let rank = a.len() / k;
        let xd = masked(x, ad.mask.as_deref());
        let xa = mm_new(t, rank, k, rows(&xd, k), rows(a, rank), 1.0);
        let merged = match ad.mask {
            None if t >= MERGE_FROM_ROWS => merge(rows(p.w, n), k, n, a, b, rank, ad.scale),
            _ => None,
        };
        let y = match &merged {
            Some(m) => product(m),
            None => {
                let mut y = product(p.w);
                mm(
                    t,
                    n,
                    rank,
                    &mut y,
                    1.0,
                    rows(&xa, rank),
                    rows(b, n),
                    ad.scale,
                );
                y
            }
        };
        (y, ProjSaved { xa, merged })
    }

    /// The backward pass of projection `i` with input `x` (t x in) for the output
    /// gradient `dy` (t x out): the input's gradient added to `dx` (written when `dx`
    /// is empty), the trained tensors' gradients to the sink.
    #[allow(clippy::too_many_arguments)]
    fn project_back(
        &self,
        i: usize,
        x: &[f32],
        dy: &[f32],
        t: usize,
        saved: ProjSaved,
        w: &Slices,
        dx: &mut Vec<f32>,
    ) {
        let (p, proj) = (w.p[i], self.weights.projections()[i]);
        let (k, n) = (x.len() / t, dy.len() / t);
        if proj.w.is_variable() {
            let xt = rows(x, k).t();
            self.sink
                .add_product(&proj.w, k, n, t, xt, rows(dy, n), 1.0);
        }
        let wt = rows(saved.merged.as_deref().unwrap_or(p.w), n).t();
        if dx.is_empty() {
            *dx = mm_new(t, k, n, rows(dy, n), wt, 1.0);
        } else {
            mm(t, k, n, dx, 1.0, rows(dy, n), wt, 1.0);
        }
        let (Some((a, b)), Some(ad)) = (p.ab, &proj.adapter) else {
            return;
        };
        let (rank, s) = (a.len() / k, ad.scale);
        // g = dy Bᵀ (t x rank); dB = s (x∘m A)ᵀ dy; dA = s (x∘m)ᵀ g.
        let g = mm_new(t, rank, n, rows(dy, n), rows(b, n).t(), 1.0);
        if ad.b.is_variable() {
            let xat = rows(&saved.xa, rank).t();
            self.sink
                .add_product(&ad.b, rank, n, t, xat, rows(dy, n), s);
        }
        if ad.a.is_variable() {
            let xd = masked(x, ad.mask.as_deref());
            let xdt = rows(&xd, k).t();
            self.sink
                .add_product(&ad.a, k, rank, t, xdt, rows(&g, rank), s);
        }
        if saved.merged.is_some() {
            return; // the merged weights' product above holds the adapter's part
        }
        match &ad.mask {
            None => mm(t, k, rank, dx, 1.0, rows(&g, rank), rows(a, rank).t(), s),
            Some(m) => {
                let ga = mm_new(t, k, rank, rows(&g, rank), rows(a, rank).t(), 1.0);
                for ((d, g), m) in dx.iter_mut().zip(&ga).zip(m) {
                    *d += s * g * m;
                }
            }
        }
    }

    fn forward(&self, x: &[f32], hidden: usize, w: &Slices) -> (Vec<f32>, Saved) {
        let sh = self.shape;
        let (hd, t) = (sh.head_dim, x.len() / hidden);
        let xn1 = rms_norm_rows(x, w.attn_norm, sh.eps);
        let (qr, q_saved) = self.project(Q, &xn1, t, None, w);
        let (kr, k_saved) = self.project(K, &xn1, t, None, w);
        let (vr, v_saved) = self.project(V, &xn1, t, None, w);
        let qh = self.rope(sh.heads, false, &qr, t);
        let kh = self.rope(sh.kv_heads, false, &kr, t);
        let vh = rows_to_heads(&vr, sh.kv_heads, hd);
        drop((qr, kr, vr));
        let (att_h, probs) = self.attn.forward(&qh, &kh, &vh, self.heads());
        let att = heads_to_rows(&att_h, sh.heads, hd);
        drop(att_h);
        // x2 = x + att Wo: the residual added inside the product.
        let (x2, o_saved) = self.project(O, &att, t, Some(x.to_vec()), w);
        let xn2 = rms_norm_rows(&x2, w.ffn_norm, sh.eps);
        let (gate, gate_saved) = self.project(GATE, &xn2, t, None, w);
        let (up, up_saved) = self.project(UP, &xn2, t, None, w);
        let gated = silu_mul_all(&gate, &up);
        let (out, down_saved) = self.project(DOWN, &gated, t, Some(x2.clone()), w);
        let proj = vec![
            q_saved, k_saved, v_saved, o_saved, gate_saved, up_saved, down_saved,
        ];
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
            proj,
        };
        (out, saved)
    }

    /// The gradient of the input `x` for the output gradient `dy`; the trained
    /// tensors' gradients go to the sink.
    fn backward(&self, x: &[f32], dy: &[f32], hidden: usize, w: &Slices, s: Saved) -> Vec<f32> {
        let sh = self.shape;
        let (hd, t) = (sh.head_dim, x.len() / hidden);
        let (q, kv) = (sh.heads * hd, sh.kv_heads * hd);
        let inter = s.gate.len() / t;
        let mut proj = s.proj.into_iter();
        let mut saved = || proj.next().expect("one per projection");
        let (q_s, k_s, v_s, o_s) = (saved(), saved(), saved(), saved());
        let (gate_s, up_s, down_s) = (saved(), saved(), saved());
        // MLP: out = x2 + silu(gate) up Wd.
        let mut d_gated = Vec::new();
        self.project_back(DOWN, &s.gated, dy, t, down_s, w, &mut d_gated);
        drop(s.gated);
        let d_both = silu_mul_grad_all(&s.gate, &s.up, &d_gated);
        drop((d_gated, s.gate, s.up));
        let (d_gate, d_up) = d_both.split_at(t * inter);
        let mut d_xn2 = Vec::new();
        self.project_back(GATE, &s.xn2, d_gate, t, gate_s, w, &mut d_xn2);
        self.project_back(UP, &s.xn2, d_up, t, up_s, w, &mut d_xn2);
        drop((d_both, s.xn2));
        // The residual stream's gradient before the MLP: dy plus the norm's.
        let mut dx2 = dy.to_vec();
        rms_norm_grad_x_rows(&s.x2, w.ffn_norm, &d_xn2, sh.eps, &mut dx2, true);
        if self.weights.ffn_norm.is_variable() {
            let d_norm = rms_norm_grad_w_rows(&s.x2, &d_xn2, sh.eps, hidden);
            self.sink.add(&self.weights.ffn_norm, d_norm);
        }
        drop((d_xn2, s.x2));
        // Attention: x2 = x + att Wo.
        let mut d_att = Vec::new();
        self.project_back(O, &s.att, &dx2, t, o_s, w, &mut d_att);
        drop(s.att);
        let d_att_h = rows_to_heads(&d_att, sh.heads, hd);
        drop(d_att);
        let (heads, kvh) = (sh.heads, sh.kv_heads);
        let qkv = (&s.qh[..], &s.kh[..], &s.vh[..]);
        let all = self.attn.backward(&s.probs, &d_att_h, qkv, self.heads());
        drop((d_att_h, s.probs, s.qh, s.kh, s.vh));
        let (dqh, rest) = all.split_at(t * q);
        let (dkh, dvh) = rest.split_at(t * kv);
        let dq = self.rope(heads, true, dqh, t);
        let dk = self.rope(kvh, true, dkh, t);
        let dv = heads_to_rows(dvh, kvh, hd);
        drop(all);
        let mut d_xn1 = Vec::new();
        self.project_back(Q, &s.xn1, &dq, t, q_s, w, &mut d_xn1);
        self.project_back(K, &s.xn1, &dk, t, k_s, w, &mut d_xn1);
        self.project_back(V, &s.xn1, &dv, t, v_s, w, &mut d_xn1);
        drop(s.xn1);
        let mut dx = dx2;
        rms_norm_grad_x_rows(x, w.attn_norm, &d_xn1, sh.eps, &mut dx, true);
        if self.weights.attn_norm.is_variable() {
            let d_norm = rms_norm_grad_w_rows(x, &d_xn1, sh.eps, hidden);
            self.sink.add(&self.weights.attn_norm, d_norm);
        }
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
