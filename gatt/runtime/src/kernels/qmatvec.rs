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
//! weight matrix, so its speed is the speed of reading the weights, and with many rows (a
//! batch, a prompt) the speed of the integer products, about three times that of the f32
//! product per core.
//!
//! Files: this one holds the formats, the regrouped matrix and the split of a product over
//! threads; `acts.rs` quantizes the activations, `scalar.rs` and `simd.rs` are the kernels.

mod acts;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod simd;

use acts::QActs;
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

#[cfg(test)]
mod tests;
