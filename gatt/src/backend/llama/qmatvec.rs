//! Fast CPU products of a few f32 activation rows with GGUF-quantized weight matrices.
//!
//! The weights are the GGUF file's own 32-element ggml blocks ([`QType::Q4_1`] or
//! [`QType::Q8_0`]) for an `n_out × k` matrix. [`QMatrix::matmul_stacked`] computes
//! `Y = X · Wᵀ` for `m` activation rows (`X`: `m × k`, `Y`: `m × n_out`), for several
//! matrices that read the same rows at once.
//!
//! The method follows llama.cpp: every activation row is quantized once per call into Q8
//! blocks (`d = max|x| / 127`, `q = round(x / d)`, plus `s = d · Σq` for the Q4_1 offset term),
//! and each weight block is then combined with the activation blocks by integer dot products
//! scaled into float accumulators:
//!
//! * Q4_1 · Q8: `d4·d8·Σ q4ᵢ·q8ᵢ + m4·s8`
//! * Q8_0 · Q8: `d·d8·Σ qᵢ·q8ᵢ`
//!
//! **Layout.** At load the blocks are regrouped so that [`GROUP`] = 8 weight rows lie side by
//! side: for each block index, the 8 rows' scales, then their quants in 4-byte runs, row after
//! row. One 256-bit register then holds four consecutive quants of each of the 8 rows, and
//! multiplying it with four activation quants broadcast to every lane (`dpbusd` on AVX-512
//! VNNI, `maddubs` + `madd` on AVX2) sums a block for 8 outputs at once: no horizontal sums,
//! one scale multiply per 8 outputs, and the unpacked weights serve up to four activation
//! rows. The bytes are the file's, reordered, so the weights stay 4-6x smaller than f32.
//!
//! **Same numbers for any batch.** Every output is the same sequence of operations whatever
//! `m`, the tiling or the threading: exact integer block sums, then per block
//! `acc = fma(isum, d·d8, acc)` (and `macc = fma(m4, s8, macc)`), then `acc + macc`. The
//! scalar, AVX2 and VNNI kernels give bit-identical results, so a sequence decodes the same
//! tokens alone, in any batch, and on any x86 CPU.
//!
//! The SIMD kernels are chosen at run time (detected once, then cached); other CPUs use the
//! portable scalar kernel. Large products split the groups into contiguous chunks over
//! candle's (spinning) barrier pool.
//!
//! Why the model needs this: decoding multiplies one row (or a batch of a few) by every
//! weight matrix, so its speed is the speed of reading the weights, and with many rows the
//! speed of the integer products.

use half::f16;
use std::mem::MaybeUninit;
use std::sync::{Mutex, OnceLock};

/// One activation row's outputs for a chunk of weight rows, written once each.
type Out<'a> = &'a mut [MaybeUninit<f32>];

/// Number of elements in one ggml block.
pub const BLOCK: usize = 32;

/// Weight rows regrouped side by side (one 32-bit lane of a 256-bit register each).
pub const GROUP: usize = 8;

/// Weight quantization formats supported by the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QType {
    /// 20-byte blocks: `d: f16, m: f16, qs: [u8; 16]`; element `i` = `d·(qs[i] & 15) + m`,
    /// element `i + 16` = `d·(qs[i] >> 4) + m`.
    Q4_1,
    /// 34-byte blocks: `d: f16, qs: [i8; 32]`; element `i` = `d·qs[i]`.
    Q8_0,
}

impl QType {
    /// Bytes in one 32-element block of the GGUF file.
    pub const fn block_bytes(self) -> usize {
        match self {
            QType::Q4_1 => 20,
            QType::Q8_0 => 34,
        }
    }

    /// Bytes of one block index of a regrouped group of [`GROUP`] rows:
    /// Q4_1 `[d f16; 8] [m f16; 8] [4 × 32 bytes of nibbles]`, Q8_0 `[d f16; 8] [8 × 32 bytes]`.
    /// Quant vector `v`, lane `j` holds row `j`'s GGUF quant bytes `4v .. 4v + 4`.
    const fn group_block_bytes(self) -> usize {
        match self {
            QType::Q4_1 => 32 + 128,
            QType::Q8_0 => 16 + 256,
        }
    }

    /// Offset of the quant vectors in a group block.
    const fn quants_at(self) -> usize {
        match self {
            QType::Q4_1 => 32,
            QType::Q8_0 => 16,
        }
    }
}

/// Instruction sets the kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust.
    Scalar,
    /// AVX2 + FMA + F16C (`maddubs` / `madd` integer products).
    Avx2,
    /// The AVX2 set plus AVX-512 VNNI on 256-bit registers (`dpbusd`).
    Vnni,
}

impl Isa {
    /// Whether this CPU can run the kernel.
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => has_avx2(),
            Isa::Vnni => has_vnni(),
        }
    }

    /// The fastest kernel this CPU can run.
    pub fn best() -> Isa {
        if has_vnni() {
            Isa::Vnni
        } else if has_avx2() {
            Isa::Avx2
        } else {
            Isa::Scalar
        }
    }
}

/// How a call may use threads and which kernel it uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatmulOptions {
    /// `None`: split over candle's barrier pool (one chunk per participant) only when the
    /// product is large enough (see [`PAR_MIN_WORK`]). `Some(1)`: run on the calling
    /// thread. `Some(t)`: always split the groups into `t` contiguous chunks, shared out
    /// among the pool's participants.
    pub threads: Option<usize>,
    /// `None`: the fastest available kernel ([`Isa::best`]). A named kernel must be
    /// available (testing, benchmarking).
    pub isa: Option<Isa>,
}

/// Automatic mode splits a call over threads when `weight bytes × (m + 2)` reaches this value
/// (one-thread time is roughly proportional to it). candle's barrier pool spins between
/// jobs, so splitting costs a few microseconds, not the 10–25 µs of waking rayon's pool:
/// with this threshold every SmolLM2 matrix splits at m = 1, which took a whole decoding
/// step from 12.9 to 7.9 ms on 2 cores (`decode_speed` example; 2 MiB, the threshold
/// measured with rayon, kept the layers on one thread).
pub const PAR_MIN_WORK: usize = 64 << 10;

/// A weight matrix of `n_out` rows × `k` columns, its GGUF blocks regrouped by [`GROUP`]
/// rows (the last group padded with zero rows).
#[derive(Clone, Debug)]
pub struct QMatrix {
    /// Block format.
    pub qtype: QType,
    /// Number of rows (outputs).
    pub n_out: usize,
    /// Number of columns (inputs); a multiple of 32.
    pub k: usize,
    /// `n_out.div_ceil(GROUP)` groups of `k / 32` group blocks.
    data: Vec<u8>,
}

impl QMatrix {
    /// Takes raw GGUF block bytes (row after row, each row `k / 32` blocks) and regroups them.
    /// Fails if `k` is not a positive multiple of 32 or `gguf` has the wrong length.
    pub fn new(qtype: QType, n_out: usize, k: usize, gguf: Vec<u8>) -> Result<Self, String> {
        if k == 0 || !k.is_multiple_of(BLOCK) {
            return Err(format!("k = {k} is not a positive multiple of {BLOCK}"));
        }
        let want = n_out
            .checked_mul(k / BLOCK * qtype.block_bytes())
            .ok_or("matrix size overflows usize")?;
        if gguf.len() != want {
            return Err(format!(
                "{qtype:?} {n_out}x{k}: expected {want} bytes, got {}",
                gguf.len()
            ));
        }
        let nb = k / BLOCK;
        let (bb, gbb, at) = (
            qtype.block_bytes(),
            qtype.group_block_bytes(),
            qtype.quants_at(),
        );
        let mut data = vec![0u8; n_out.div_ceil(GROUP) * nb * gbb];
        for (j, row) in gguf.chunks_exact(nb * bb).enumerate() {
            let (g, lane) = (j / GROUP, j % GROUP);
            for (b, src) in row.chunks_exact(bb).enumerate() {
                let dst = &mut data[(g * nb + b) * gbb..][..gbb];
                dst[2 * lane..2 * lane + 2].copy_from_slice(&src[0..2]);
                let quants = match qtype {
                    QType::Q4_1 => {
                        dst[16 + 2 * lane..16 + 2 * lane + 2].copy_from_slice(&src[2..4]);
                        &src[4..]
                    }
                    QType::Q8_0 => &src[2..],
                };
                for (v, run) in quants.chunks_exact(4).enumerate() {
                    dst[at + 32 * v + 4 * lane..][..4].copy_from_slice(run);
                }
            }
        }
        Ok(Self {
            qtype,
            n_out,
            k,
            data,
        })
    }

    /// Bytes of one group (all its block indices).
    fn group_bytes(&self) -> usize {
        self.k / BLOCK * self.qtype.group_block_bytes()
    }

    /// Row `j`'s block `b`: scale `d`, offset `m` (0 for Q8_0) and the 32 integer quants in
    /// element order (the portable kernel's and the tests' view of the regrouped bytes).
    fn block(&self, j: usize, b: usize) -> (f32, f32, [i32; BLOCK]) {
        let gbb = self.qtype.group_block_bytes();
        let (g, lane) = (j / GROUP, j % GROUP);
        let blk = &self.data[(g * (self.k / BLOCK) + b) * gbb..][..gbb];
        let half_at = |at: usize| f16::from_le_bytes([blk[at], blk[at + 1]]).to_f32();
        let d = half_at(2 * lane);
        let quant = |v: usize, t: usize| blk[self.qtype.quants_at() + 32 * v + 4 * lane + t];
        let mut q = [0i32; BLOCK];
        let mut m = 0.0;
        match self.qtype {
            QType::Q4_1 => {
                m = half_at(16 + 2 * lane);
                for i in 0..16 {
                    let byte = quant(i / 4, i % 4);
                    q[i] = (byte & 15) as i32;
                    q[i + 16] = (byte >> 4) as i32;
                }
            }
            QType::Q8_0 => {
                for (i, qi) in q.iter_mut().enumerate() {
                    *qi = quant(i / 4, i % 4) as i8 as i32;
                }
            }
        }
        (d, m, q)
    }

    /// Quantizes an `n_out × k` row-major f32 matrix the way ggml's reference quantizers do
    /// (meant for tests and benchmarks).
    #[cfg(test)]
    pub fn quantize_from_f32(qtype: QType, n_out: usize, k: usize, w: &[f32]) -> Self {
        assert_eq!(w.len(), n_out * k, "w must hold n_out * k values");
        Self::new(qtype, n_out, k, quantize_gguf(qtype, k, w)).expect("sizes are consistent")
    }

    /// Dequantizes to an `n_out × k` row-major f32 matrix (the reference values).
    #[cfg(test)]
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.n_out * self.k);
        for j in 0..self.n_out {
            for b in 0..self.k / BLOCK {
                let (d, m, q) = self.block(j, b);
                out.extend(q.iter().map(|&q| d * q as f32 + m));
            }
        }
        out
    }

    /// `Y = X · Wᵀ` for `m` activation rows `x` (`m × k`, row-major); returns `m × n_out`.
    /// Uses the automatic threading policy and the fastest available kernel. (The model
    /// calls [`matmul_stacked`](Self::matmul_stacked); the one-matrix forms serve tests.)
    #[cfg(test)]
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_with(x, m, MatmulOptions::default())
    }

    /// [`matmul`](Self::matmul) with explicit threading / kernel options.
    #[cfg(test)]
    pub fn matmul_with(&self, x: &[f32], m: usize, opts: MatmulOptions) -> Vec<f32> {
        Self::matmul_stacked(&[self], x, m, opts)
    }

    /// `[X·W₁ᵀ | X·W₂ᵀ | …]` for matrices of one `k`: each activation row's outputs side by
    /// side (`m × Σ n_out`). The activations are quantized once and one dispatch to the
    /// pool runs every product: the model's q, k and v (and its gate and up) projections
    /// read one input.
    pub fn matmul_stacked(mats: &[&QMatrix], x: &[f32], m: usize, opts: MatmulOptions) -> Vec<f32> {
        let k = mats.first().map_or(0, |w| w.k);
        assert!(
            mats.iter().all(|w| w.k == k),
            "stacked matrices must share k"
        );
        assert_eq!(x.len(), m * k, "x must be m x k");
        let width: usize = mats.iter().map(|w| w.n_out).sum();
        let len = m * width;
        // Left uninitialized for the kernels to write (zeroing the logits of a batch first
        // was an extra pass over 3 MB per decoding step).
        let mut y = Vec::with_capacity(len);
        if len > 0 {
            product(mats, x, m, width, &mut y.spare_capacity_mut()[..len], opts);
        }
        // SAFETY: `product` wrote all `len` elements.
        unsafe { y.set_len(len) };
        y
    }

    /// Computes output rows `j0 .. j0 + outs[0].len()` (`j0` a multiple of [`GROUP`]) for all
    /// activation rows.
    fn run_chunk(&self, j0: usize, outs: &mut [Out], acts: &QActs, isa: Isa) {
        // What the kernels' unchecked reads rely on.
        assert!(acts.nb * BLOCK == self.k && outs.len() == acts.m && j0.is_multiple_of(GROUP));
        let n = outs[0].len();
        let gb = self.group_bytes();
        let groups = &self.data[j0 / GROUP * gb..(j0 + n).div_ceil(GROUP) * gb];
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: `isa` was checked to be available on this CPU.
            unsafe {
                match (isa, self.qtype) {
                    (Isa::Avx2, QType::Q4_1) => return simd::q4_1_avx2(groups, acts, outs),
                    (Isa::Avx2, QType::Q8_0) => return simd::q8_0_avx2(groups, acts, outs),
                    (Isa::Vnni, QType::Q4_1) => return simd::q4_1_vnni(groups, acts, outs),
                    (Isa::Vnni, QType::Q8_0) => return simd::q8_0_vnni(groups, acts, outs),
                    (Isa::Scalar, _) => {}
                }
            }
        }
        scalar::chunk(self, j0, acts, outs);
    }
}

/// A run of whole groups of one matrix, in one share of the work.
struct Piece {
    thread: usize,
    mat: usize,
    /// First output row (a multiple of [`GROUP`]) and number of rows.
    j0: usize,
    width: usize,
}

/// One thread's pieces, each with its part of every activation row's outputs.
type Job<'a> = Vec<(&'a Piece, Vec<Out<'a>>)>;

/// Writes every element of `y` (`m × width`, the matrices' outputs side by side).
fn product(
    mats: &[&QMatrix],
    x: &[f32],
    m: usize,
    width: usize,
    y: &mut [MaybeUninit<f32>],
    opts: MatmulOptions,
) {
    let isa = opts.isa.unwrap_or_else(Isa::best);
    assert!(isa.available(), "{isa:?} kernels need a CPU that has them");
    let acts = QActs::new(x, m, mats[0].k, isa != Isa::Scalar);
    let bytes: usize = mats.iter().map(|w| w.data.len()).sum();
    let pool = candle_core::utils::barrier_pool();
    let parts = pool.n_workers() + 1;
    let threads = match opts.threads {
        Some(t) => t.max(1),
        None if bytes * (m + 2) >= PAR_MIN_WORK => parts,
        None => 1,
    };
    // Equal shares of all the groups, in output order; a share may span matrices.
    let total: usize = mats.iter().map(|w| w.n_out.div_ceil(GROUP)).sum();
    let per = total.div_ceil(threads);
    let mut pieces = Vec::new();
    let mut done = 0;
    for (mat, w) in mats.iter().enumerate() {
        let groups = w.n_out.div_ceil(GROUP);
        let mut g = 0;
        while g < groups {
            let thread = done / per;
            let end = groups.min(g + (thread + 1) * per - done);
            pieces.push(Piece {
                thread,
                mat,
                j0: g * GROUP,
                width: (end * GROUP).min(w.n_out) - g * GROUP,
            });
            done += end - g;
            g = end;
        }
    }
    // The pieces tile every output row in order.
    let mut outs: Vec<Vec<Out>> = pieces.iter().map(|_| Vec::with_capacity(m)).collect();
    for row in y.chunks_exact_mut(width) {
        let mut rest = row;
        for (piece, out) in pieces.iter().zip(outs.iter_mut()) {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(piece.width);
            out.push(head);
            rest = tail;
        }
    }
    let n_threads = pieces.last().map_or(0, |p| p.thread + 1);
    let mut jobs: Vec<Job> = (0..n_threads).map(|_| Vec::new()).collect();
    for (piece, out) in pieces.iter().zip(outs) {
        jobs[piece.thread].push((piece, out));
    }
    let acts = &acts;
    let run = |job: &mut Job| {
        for (piece, out) in job.iter_mut() {
            mats[piece.mat].run_chunk(piece.j0, out, acts, isa);
        }
    };
    if n_threads <= 1 {
        jobs.iter_mut().for_each(run);
        return;
    }
    // The shares run on candle's barrier pool, whose workers spin for a while after each
    // job before they sleep: decoding calls one product after another, and a sleeping
    // pool (rayon's) takes longer to wake than a small product takes. The calling thread
    // is one of the pool's participants.
    let jobs: Vec<Mutex<Job>> = jobs.into_iter().map(Mutex::new).collect();
    // `execute_chunked` hands out the shares one at a time, and runs them all on the
    // calling thread if it is a pool worker itself (a nested call would deadlock).
    pool.execute_chunked(n_threads, |range| {
        for t in range {
            run(&mut jobs[t].lock().expect("job lock"));
        }
    });
}

/// Quantizes rows of `k` values to GGUF block bytes as ggml's reference quantizers do.
#[cfg(test)]
pub fn quantize_gguf(qtype: QType, k: usize, w: &[f32]) -> Vec<u8> {
    assert!(
        k > 0 && k.is_multiple_of(BLOCK) && w.len().is_multiple_of(k),
        "k must be a positive multiple of 32 dividing w.len()"
    );
    let mut data = Vec::with_capacity(w.len() / BLOCK * qtype.block_bytes());
    for x in w.chunks_exact(BLOCK) {
        match qtype {
            QType::Q4_1 => {
                let (mn, mx) = x
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                        (a.min(v), b.max(v))
                    });
                let d = (mx - mn) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                data.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                data.extend_from_slice(&f16::from_f32(mn).to_le_bytes());
                for i in 0..16 {
                    let q0 = (((x[i] - mn) * id + 0.5) as u8).min(15);
                    let q1 = (((x[i + 16] - mn) * id + 0.5) as u8).min(15);
                    data.push(q0 | (q1 << 4));
                }
            }
            QType::Q8_0 => {
                let amax = x.iter().fold(0f32, |a, &v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                data.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                data.extend(x.iter().map(|&v| (v * id).round() as i8 as u8));
            }
        }
    }
    data
}

/// True when the AVX2 + FMA + F16C kernels can run (detected once, then cached).
pub fn has_avx2() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// True when the VNNI kernels can run: the AVX2 set plus AVX-512 VNNI and VL.
pub fn has_vnni() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            has_avx2()
                && is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("avx512vl")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Activation rows quantized to Q8 blocks, stored block-major so the `m` rows of one block
/// index are adjacent: block `b` of row `r` is entry `b·m + r`.
struct QActs {
    m: usize,
    nb: usize,
    /// `nb·m` blocks of 32 quants.
    qs: Vec<[i8; BLOCK]>,
    /// Block scales `d`.
    d: Vec<f32>,
    /// `d · Σ q` per block (the Q4_1 offset term).
    s: Vec<f32>,
    /// `Σ q` per block (the VNNI Q8_0 kernel's correction for its unsigned weights).
    sum: Vec<i32>,
}

impl QActs {
    fn new(x: &[f32], m: usize, k: usize, simd: bool) -> Self {
        let nb = k / BLOCK;
        let mut a = QActs {
            m,
            nb,
            qs: Vec::with_capacity(nb * m),
            d: Vec::with_capacity(nb * m),
            s: Vec::with_capacity(nb * m),
            sum: Vec::with_capacity(nb * m),
        };
        // Block-major order: entry b·m + r is pushed b·m + r-th.
        for b in 0..nb {
            for r in 0..m {
                let xb: &[f32; BLOCK] = x[r * k + b * BLOCK..][..BLOCK].try_into().unwrap();
                let mut q = [0i8; BLOCK];
                #[cfg(target_arch = "x86_64")]
                let (d, sum) = if simd {
                    // SAFETY: the caller picked a SIMD kernel, so AVX2 + FMA + F16C were detected.
                    unsafe { simd::quantize_block(xb, &mut q) }
                } else {
                    quantize_block_scalar(xb, &mut q)
                };
                #[cfg(not(target_arch = "x86_64"))]
                let (d, sum) = {
                    let _ = simd;
                    quantize_block_scalar(xb, &mut q)
                };
                a.qs.push(q);
                a.d.push(d);
                a.s.push(d * sum as f32);
                a.sum.push(sum);
            }
        }
        a
    }
}

/// Quantizes 32 values to Q8 (`d = max|x|/127`, `q = round_ties_even(x · 127/max|x|)`);
/// returns `(d, Σq)`. Bit-identical to the AVX2 version.
fn quantize_block_scalar(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, i32) {
    if x.iter().any(|v| !v.is_finite()) {
        return non_finite_block(q);
    }
    let amax = x.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let id = inverse_step(amax);
    let mut sum = 0i32;
    for (qi, &v) in q.iter_mut().zip(x) {
        let r = (v * id).round_ties_even() as i32;
        *qi = r as i8;
        sum += r;
    }
    (amax / 127.0, sum)
}

/// A block holding NaN or an infinity: scale NaN, so that every output it feeds is NaN
/// (as the f32 product would give), and zero quants.
fn non_finite_block(q: &mut [i8; BLOCK]) -> (f32, i32) {
    q.fill(0);
    (f32::NAN, 0)
}

/// `127 / max|x|`, or 0 where that is not finite (an all-zero block, or one so small that
/// the quotient overflows): such blocks quantize to zeros.
fn inverse_step(amax: f32) -> f32 {
    let id = 127.0 / amax;
    if id.is_finite() {
        id
    } else {
        0.0
    }
}

/// The portable kernel: the same integer block sums and the same float operations, in the
/// same order, as the SIMD kernels, one output at a time.
mod scalar {
    use super::{Out, QActs, QMatrix, QType, BLOCK};

    pub(super) fn chunk(w: &QMatrix, j0: usize, a: &QActs, outs: &mut [Out]) {
        let m = a.m;
        let (mut acc, mut macc) = (vec![0f32; m], vec![0f32; m]);
        for j in 0..outs[0].len() {
            acc.fill(0.0);
            macc.fill(0.0);
            for b in 0..a.nb {
                let (d, mn, q) = w.block(j0 + j, b);
                for r in 0..m {
                    let i = b * m + r;
                    let isum: i32 = (0..BLOCK).map(|t| q[t] * a.qs[i][t] as i32).sum();
                    acc[r] = (isum as f32).mul_add(d * a.d[i], acc[r]);
                    macc[r] = mn.mul_add(a.s[i], macc[r]);
                }
            }
            for r in 0..m {
                outs[r][j].write(match w.qtype {
                    QType::Q4_1 => acc[r] + macc[r],
                    QType::Q8_0 => acc[r],
                });
            }
        }
    }
}

/// AVX2 and VNNI kernels. Every function here requires its features at run time; the two
/// instruction sets share the tile code and differ only in the block's integer dot product
/// ([`IntDot`]).
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{Out, QActs, QType, BLOCK, GROUP};
    use std::arch::x86_64::*;

    /// Software prefetch distance in bytes along the weights, every cache line of a block.
    /// The hardware prefetcher alone left the 30 MB lm_head product (m=1) at ~7 GB/s;
    /// prefetching 1 KB ahead gave ~13 GB/s (512 B and 2–4 KB were worse). Prefetching one
    /// line per block instead of all of them left 16-row products of matrices that come
    /// from memory 30% slower than those of cached ones (the lm_head at m=16: 4.7 ms, now 3.4).
    const PF_DIST: usize = 1024;

    /// AVX2 twin of `quantize_block_scalar` (bit-identical results).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quantize_block(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, i32) {
        let p = x.as_ptr();
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        // x - x is 0 for finite x and NaN for NaN or an infinity.
        let bad = v
            .iter()
            .map(|&x| _mm256_cmp_ps::<_CMP_UNORD_Q>(_mm256_sub_ps(x, x), _mm256_sub_ps(x, x)))
            .fold(_mm256_setzero_ps(), |a, b| _mm256_or_ps(a, b));
        if _mm256_movemask_ps(bad) != 0 {
            return super::non_finite_block(q);
        }
        let sign = _mm256_set1_ps(-0.0);
        let mx = _mm256_max_ps(
            _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
            _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])),
        );
        let h = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        let amax = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
        let id = _mm256_set1_ps(super::inverse_step(amax));
        const RND: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let i0 = _mm256_cvtps_epi32(_mm256_round_ps::<RND>(_mm256_mul_ps(v[0], id)));
        let i1 = _mm256_cvtps_epi32(_mm256_round_ps::<RND>(_mm256_mul_ps(v[1], id)));
        let i2 = _mm256_cvtps_epi32(_mm256_round_ps::<RND>(_mm256_mul_ps(v[2], id)));
        let i3 = _mm256_cvtps_epi32(_mm256_round_ps::<RND>(_mm256_mul_ps(v[3], id)));
        let s = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        // packs work per 128-bit lane; the final permute restores element order.
        let w = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        let w = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, w);
        (amax / 127.0, _mm_cvtsi128_si32(s))
    }

    /// A block's integer dot products for the 8 rows of a group: `w` holds the 8 quant
    /// vectors (vector `v`, lane `j`: row `j`'s quants `4v .. 4v + 4`), `a` points at the
    /// activation block's 32 quants. Returns the 8 exact sums.
    trait IntDot {
        /// Q4_1 nibbles (0..15) times signed activations.
        unsafe fn q4(w: &[__m256i; 8], a: *const i8) -> __m256i;
        /// Prepares signed Q8_0 weight quants once per block for [`IntDot::q8`].
        unsafe fn q8_prepare(w: __m256i) -> __m256i;
        /// Prepared Q8_0 quants times activations; `sum` is the activation block's `Σq`.
        unsafe fn q8(w: &[__m256i; 8], a: *const i8, sum: i32) -> __m256i;
    }

    /// Four activation quants (`4v .. 4v + 4`) in every lane.
    #[inline(always)]
    unsafe fn quad(a: *const i8, v: usize) -> __m256i {
        _mm256_set1_epi32((a.add(4 * v) as *const i32).read_unaligned())
    }

    /// `maddubs` multiplies unsigned by signed bytes and adds pairs into i16, `madd` adds
    /// those pairs into i32.
    struct Avx2;

    impl IntDot for Avx2 {
        #[inline(always)]
        unsafe fn q4(w: &[__m256i; 8], a: *const i8) -> __m256i {
            // Each i16 pair sum is at most 2·15·127 = 3810, so all eight fit in i16 (30480)
            // and one `madd` finishes the block.
            let p = |v: usize| _mm256_maddubs_epi16(w[v], quad(a, v));
            let s0 = _mm256_add_epi16(_mm256_add_epi16(p(0), p(1)), _mm256_add_epi16(p(2), p(3)));
            let s1 = _mm256_add_epi16(_mm256_add_epi16(p(4), p(5)), _mm256_add_epi16(p(6), p(7)));
            _mm256_madd_epi16(_mm256_add_epi16(s0, s1), _mm256_set1_epi16(1))
        }

        #[inline(always)]
        unsafe fn q8_prepare(w: __m256i) -> __m256i {
            w
        }

        #[inline(always)]
        unsafe fn q8(w: &[__m256i; 8], a: *const i8, _sum: i32) -> __m256i {
            // `maddubs` wants one unsigned operand: |w|, and the activations carrying w's sign.
            // A pair sum reaches 2·128·127, so each vector goes to i32 on its own.
            let ones = _mm256_set1_epi16(1);
            let p = |v: usize| {
                let s = _mm256_maddubs_epi16(
                    _mm256_sign_epi8(w[v], w[v]),
                    _mm256_sign_epi8(quad(a, v), w[v]),
                );
                _mm256_madd_epi16(s, ones)
            };
            let s0 = _mm256_add_epi32(_mm256_add_epi32(p(0), p(1)), _mm256_add_epi32(p(2), p(3)));
            let s1 = _mm256_add_epi32(_mm256_add_epi32(p(4), p(5)), _mm256_add_epi32(p(6), p(7)));
            _mm256_add_epi32(s0, s1)
        }
    }

    /// `dpbusd` multiplies unsigned by signed bytes and adds runs of four into i32 lanes.
    struct Vnni;

    impl IntDot for Vnni {
        #[inline(always)]
        unsafe fn q4(w: &[__m256i; 8], a: *const i8) -> __m256i {
            // Two chains of four, so consecutive `dpbusd`s need not wait on each other.
            let mut s0 = _mm256_setzero_si256();
            let mut s1 = _mm256_setzero_si256();
            for v in (0..8).step_by(2) {
                s0 = _mm256_dpbusd_epi32(s0, w[v], quad(a, v));
                s1 = _mm256_dpbusd_epi32(s1, w[v + 1], quad(a, v + 1));
            }
            _mm256_add_epi32(s0, s1)
        }

        #[inline(always)]
        unsafe fn q8_prepare(w: __m256i) -> __m256i {
            // w + 128 as unsigned bytes; `q8` subtracts 128·Σa again.
            _mm256_xor_si256(w, _mm256_set1_epi8(-128))
        }

        #[inline(always)]
        unsafe fn q8(w: &[__m256i; 8], a: *const i8, sum: i32) -> __m256i {
            let mut s0 = _mm256_setzero_si256();
            let mut s1 = _mm256_setzero_si256();
            for v in (0..8).step_by(2) {
                s0 = _mm256_dpbusd_epi32(s0, w[v], quad(a, v));
                s1 = _mm256_dpbusd_epi32(s1, w[v + 1], quad(a, v + 1));
            }
            _mm256_sub_epi32(_mm256_add_epi32(s0, s1), _mm256_set1_epi32(128 * sum))
        }
    }

    /// One group (8 weight rows) × `R` activation rows from `r0`: returns the 8 outputs of
    /// each activation row.
    #[inline(always)]
    unsafe fn tile<I: IntDot, const R: usize>(
        qtype: QType,
        group: &[u8],
        a: &QActs,
        r0: usize,
    ) -> [__m256; R] {
        let gbb = qtype.group_block_bytes();
        debug_assert_eq!(group.len(), a.nb * gbb);
        debug_assert!(r0 + R <= a.m);
        let mask = _mm256_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut macc = [_mm256_setzero_ps(); R];
        for b in 0..a.nb {
            let blk = group.as_ptr().add(b * gbb);
            for line in (0..gbb).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PF_DIST + line) as *const i8);
            }
            let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
            let load = |v: usize| {
                _mm256_loadu_si256(blk.add(qtype.quants_at() + 32 * v) as *const __m256i)
            };
            let mut w = [_mm256_setzero_si256(); 8];
            let mut mn = _mm256_setzero_ps();
            match qtype {
                QType::Q4_1 => {
                    mn = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16) as *const __m128i));
                    // Vector v's low nibbles are elements 4v.., its high nibbles 16 + 4v...
                    for v in 0..4 {
                        let raw = load(v);
                        w[v] = _mm256_and_si256(raw, mask);
                        w[v + 4] = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), mask);
                    }
                }
                QType::Q8_0 => {
                    for (v, wv) in w.iter_mut().enumerate() {
                        *wv = I::q8_prepare(load(v));
                    }
                }
            }
            let i0 = b * a.m + r0;
            for r in 0..R {
                let i = i0 + r;
                let ap = a.qs.get_unchecked(i).as_ptr();
                let isum = match qtype {
                    QType::Q4_1 => I::q4(&w, ap),
                    QType::Q8_0 => I::q8(&w, ap, *a.sum.get_unchecked(i)),
                };
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(*a.d.get_unchecked(i)));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[r]);
                if qtype == QType::Q4_1 {
                    macc[r] = _mm256_fmadd_ps(mn, _mm256_set1_ps(*a.s.get_unchecked(i)), macc[r]);
                }
            }
        }
        if qtype == QType::Q4_1 {
            for r in 0..R {
                acc[r] = _mm256_add_ps(acc[r], macc[r]);
            }
        }
        acc
    }

    /// Writes a tile's outputs: rows `r0..`, columns `j .. j + lanes` (`lanes` < 8 only for
    /// the padded last group).
    #[inline(always)]
    unsafe fn store<const R: usize>(
        outs: &mut [Out],
        r0: usize,
        j: usize,
        lanes: usize,
        t: [__m256; R],
    ) {
        for (r, v) in t.into_iter().enumerate() {
            let out = &mut outs[r0 + r][j..j + lanes];
            if lanes == GROUP {
                _mm256_storeu_ps(out.as_mut_ptr() as *mut f32, v);
            } else {
                let mut tmp = [0f32; GROUP];
                _mm256_storeu_ps(tmp.as_mut_ptr(), v);
                for (o, &t) in out.iter_mut().zip(&tmp) {
                    o.write(t);
                }
            }
        }
    }

    /// All groups of a chunk × all activation rows, in tiles of up to four rows.
    #[inline(always)]
    unsafe fn chunk<I: IntDot>(qtype: QType, groups: &[u8], a: &QActs, outs: &mut [Out]) {
        let n = outs[0].len();
        let gb = a.nb * qtype.group_block_bytes();
        for (g, group) in groups.chunks_exact(gb).enumerate() {
            let j = g * GROUP;
            let lanes = (n - j).min(GROUP);
            let mut r0 = 0;
            while a.m - r0 >= 8 {
                store(outs, r0, j, lanes, tile::<I, 8>(qtype, group, a, r0));
                r0 += 8;
            }
            while a.m - r0 >= 4 {
                store(outs, r0, j, lanes, tile::<I, 4>(qtype, group, a, r0));
                r0 += 4;
            }
            match a.m - r0 {
                3 => store(outs, r0, j, lanes, tile::<I, 3>(qtype, group, a, r0)),
                2 => store(outs, r0, j, lanes, tile::<I, 2>(qtype, group, a, r0)),
                1 => store(outs, r0, j, lanes, tile::<I, 1>(qtype, group, a, r0)),
                _ => {}
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_1_avx2(groups: &[u8], a: &QActs, outs: &mut [Out]) {
        chunk::<Avx2>(QType::Q4_1, groups, a, outs)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q8_0_avx2(groups: &[u8], a: &QActs, outs: &mut [Out]) {
        chunk::<Avx2>(QType::Q8_0, groups, a, outs)
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    pub(super) unsafe fn q4_1_vnni(groups: &[u8], a: &QActs, outs: &mut [Out]) {
        chunk::<Vnni>(QType::Q4_1, groups, a, outs)
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    pub(super) unsafe fn q8_0_vnni(groups: &[u8], a: &QActs, outs: &mut [Out]) {
        chunk::<Vnni>(QType::Q8_0, groups, a, outs)
    }
}

#[cfg(test)]
mod tests;
