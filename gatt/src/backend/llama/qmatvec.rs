//! Fast CPU products of a few f32 activation rows with GGUF-quantized weight matrices.
//!
//! The weights are kept exactly as they are stored in a GGUF file: `n_out` rows of `k`
//! elements, each row a run of 32-element ggml blocks ([`QType::Q4_1`] or [`QType::Q8_0`]).
//! [`QMatrix::matmul`] computes `Y = X · Wᵀ` for `m` activation rows (`X`: `m × k`, `Y`: `m × n_out`).
//!
//! The method follows llama.cpp: every activation row is quantized once per call into Q8
//! blocks (`d = max|x| / 127`, `q = round(x / d)`, plus `s = d · Σq` for the Q4_1 offset term),
//! and each weight block is then combined with the activation blocks by integer dot products
//! (`maddubs` / `madd` on AVX2) scaled into float accumulators:
//!
//! * Q4_1 · Q8: `d4·d8·Σ q4ᵢ·q8ᵢ + m4·s8`
//! * Q8_0 · Q8: `d·d8·Σ qᵢ·q8ᵢ`
//!
//! Each weight block is loaded and unpacked once and used for up to four activation rows held
//! in registers (small `m` additionally pairs two weight rows), so the weights are streamed
//! from memory once per call for any `m`. Large products split the output rows into contiguous
//! chunks over candle's (spinning) barrier pool.
//!
//! The AVX2 + FMA + F16C kernels are chosen at run time (the detection is done once and
//! cached); other CPUs use a portable scalar kernel that computes the same integer sums.
//!
//! Why the model needs this: decoding multiplies one row (or a batch of a few) by every
//! weight matrix, so its speed is the speed of reading the weights. These blocks are
//! 4-6x smaller than the f32 weights the matrix product uses, and candle's own quantized
//! kernels pick SIMD only at compile time (a portable build runs them scalar).

use half::f16;
use std::sync::{Mutex, OnceLock};

/// Number of elements in one ggml block.
pub const BLOCK: usize = 32;

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
    /// Bytes in one 32-element block.
    pub const fn block_bytes(self) -> usize {
        match self {
            QType::Q4_1 => 20,
            QType::Q8_0 => 34,
        }
    }
}

/// How a call may use threads and which kernel it uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatmulOptions {
    /// `None`: split over candle's barrier pool (one chunk per participant) only when the
    /// product is large enough (see [`PAR_MIN_WORK`]). `Some(1)`: run on the calling
    /// thread. `Some(t)`: always split the output rows into `t` contiguous chunks, shared
    /// out among the pool's participants.
    pub threads: Option<usize>,
    /// Use the portable scalar kernel even where AVX2 is available (testing, benchmarking).
    pub force_scalar: bool,
}

/// Automatic mode splits a call over threads when `weight bytes × (m + 2)` reaches this value
/// (one-thread time is roughly proportional to it). candle's barrier pool spins between
/// jobs, so splitting costs a few microseconds, not the 10–25 µs of waking rayon's pool:
/// with this threshold every SmolLM2 matrix splits at m = 1, which took a whole decoding
/// step from 12.9 to 7.9 ms on 2 cores (`decode_speed` example; 2 MiB, the threshold
/// measured with rayon, kept the layers on one thread).
pub const PAR_MIN_WORK: usize = 64 << 10;

/// A weight matrix of `n_out` rows × `k` columns in raw GGUF block layout.
#[derive(Clone, Debug)]
pub struct QMatrix {
    /// Block format of `data`.
    pub qtype: QType,
    /// Number of rows (outputs).
    pub n_out: usize,
    /// Number of columns (inputs); a multiple of 32.
    pub k: usize,
    data: Vec<u8>,
}

impl QMatrix {
    /// Wraps raw GGUF block bytes (row after row, each row `k / 32` blocks).
    /// Fails if `k` is not a positive multiple of 32 or `data` has the wrong length.
    pub fn new(qtype: QType, n_out: usize, k: usize, data: Vec<u8>) -> Result<Self, String> {
        if k == 0 || !k.is_multiple_of(BLOCK) {
            return Err(format!("k = {k} is not a positive multiple of {BLOCK}"));
        }
        let want = n_out
            .checked_mul(k / BLOCK * qtype.block_bytes())
            .ok_or("matrix size overflows usize")?;
        if data.len() != want {
            return Err(format!(
                "{qtype:?} {n_out}x{k}: expected {want} bytes, got {}",
                data.len()
            ));
        }
        Ok(Self {
            qtype,
            n_out,
            k,
            data,
        })
    }

    /// The raw block bytes.
    #[cfg(test)]
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Bytes per weight row.
    pub fn row_bytes(&self) -> usize {
        self.k / BLOCK * self.qtype.block_bytes()
    }

    /// Quantizes an `n_out × k` row-major f32 matrix the way ggml's reference quantizers do
    /// (meant for tests and benchmarks).
    #[cfg(test)]
    pub fn quantize_from_f32(qtype: QType, n_out: usize, k: usize, w: &[f32]) -> Self {
        assert!(
            k > 0 && k.is_multiple_of(BLOCK),
            "k must be a positive multiple of 32"
        );
        assert_eq!(w.len(), n_out * k, "w must hold n_out * k values");
        let mut data = Vec::with_capacity(n_out * k / BLOCK * qtype.block_bytes());
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
        Self::new(qtype, n_out, k, data).expect("sizes are consistent")
    }

    /// Dequantizes to an `n_out × k` row-major f32 matrix (the reference values).
    #[cfg(test)]
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.n_out * self.k);
        for blk in self.data.chunks_exact(self.qtype.block_bytes()) {
            let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
            match self.qtype {
                QType::Q4_1 => {
                    let m = f16::from_le_bytes([blk[2], blk[3]]).to_f32();
                    let qs = &blk[4..20];
                    out.extend(qs.iter().map(|&q| d * (q & 15) as f32 + m));
                    out.extend(qs.iter().map(|&q| d * (q >> 4) as f32 + m));
                }
                QType::Q8_0 => out.extend(blk[2..34].iter().map(|&q| d * (q as i8) as f32)),
            }
        }
        out
    }

    /// `Y = X · Wᵀ` for `m` activation rows `x` (`m × k`, row-major); returns `m × n_out`.
    /// Uses the automatic threading policy and the fastest available kernel.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_with(x, m, MatmulOptions::default())
    }

    /// [`matmul`](Self::matmul) with explicit threading / kernel options.
    pub fn matmul_with(&self, x: &[f32], m: usize, opts: MatmulOptions) -> Vec<f32> {
        let mut y = vec![0f32; m * self.n_out];
        self.matmul_into(x, m, &mut y, opts);
        y
    }

    /// Writes `X · Wᵀ` into `y` (`m × n_out`, row-major), overwriting it.
    pub fn matmul_into(&self, x: &[f32], m: usize, y: &mut [f32], opts: MatmulOptions) {
        assert_eq!(x.len(), m * self.k, "x must be m x k");
        assert_eq!(y.len(), m * self.n_out, "y must be m x n_out");
        if m == 0 || self.n_out == 0 {
            return;
        }
        let simd = !opts.force_scalar && has_avx2();
        let acts = QActs::new(x, m, self.k, simd);
        let threads = match opts.threads {
            Some(t) => t.max(1),
            None if self.data.len() * (m + 2) >= PAR_MIN_WORK => {
                candle_core::utils::barrier_pool().n_workers() + 1
            }
            None => 1,
        };
        let n = self.n_out;
        if threads == 1 || n < 2 {
            let mut outs: Vec<&mut [f32]> = y.chunks_exact_mut(n).collect();
            self.run_chunk(0, &mut outs, &acts, simd);
            return;
        }
        // Contiguous chunks of output rows, each an even number of rows (pairs suit the
        // two-row tiles), one per thread.
        let chunk = n.div_ceil(threads).next_multiple_of(2).min(n);
        let n_chunks = n.div_ceil(chunk);
        let mut per_chunk: Vec<Vec<&mut [f32]>> =
            (0..n_chunks).map(|_| Vec::with_capacity(m)).collect();
        for row in y.chunks_exact_mut(n) {
            for (c, piece) in row.chunks_mut(chunk).enumerate() {
                per_chunk[c].push(piece);
            }
        }
        // The chunks run on candle's barrier pool, whose workers spin for a while after
        // each job before they sleep: decoding calls one product after another, and a
        // sleeping pool (rayon's) takes longer to wake than a small product takes. The
        // calling thread is one of the pool's participants.
        let acts = &acts;
        let chunks: Vec<Mutex<Vec<&mut [f32]>>> = per_chunk.into_iter().map(Mutex::new).collect();
        let pool = candle_core::utils::barrier_pool();
        let parts = pool.n_workers() + 1;
        pool.execute(|p| {
            for c in (p..n_chunks).step_by(parts) {
                let mut outs = chunks[c].lock().expect("chunk lock");
                self.run_chunk(c * chunk, &mut outs, acts, simd);
            }
        });
    }

    /// Computes output rows `j0 .. j0 + outs[0].len()` for all activation rows.
    fn run_chunk(&self, j0: usize, outs: &mut [&mut [f32]], acts: &QActs, simd: bool) {
        let rb = self.row_bytes();
        let n = outs[0].len();
        let rows = &self.data[j0 * rb..(j0 + n) * rb];
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `simd` is only true when AVX2, FMA and F16C were detected at run time.
            unsafe {
                match self.qtype {
                    QType::Q4_1 => avx2::chunk_q4_1(rows, acts, outs),
                    QType::Q8_0 => avx2::chunk_q8_0(rows, acts, outs),
                }
            }
            return;
        }
        let _ = simd;
        scalar::chunk(self.qtype, rows, acts, outs);
    }
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
}

impl QActs {
    fn new(x: &[f32], m: usize, k: usize, simd: bool) -> Self {
        let nb = k / BLOCK;
        let mut a = QActs {
            m,
            nb,
            qs: vec![[0; BLOCK]; nb * m],
            d: vec![0.0; nb * m],
            s: vec![0.0; nb * m],
        };
        for (r, row) in x.chunks_exact(k).enumerate() {
            for (b, xb) in row.chunks_exact(BLOCK).enumerate() {
                let xb: &[f32; BLOCK] = xb.try_into().unwrap();
                let i = b * m + r;
                #[cfg(target_arch = "x86_64")]
                let (d, sum) = if simd {
                    // SAFETY: AVX2 + FMA + F16C were detected.
                    unsafe { avx2::quantize_block(xb, &mut a.qs[i]) }
                } else {
                    quantize_block_scalar(xb, &mut a.qs[i])
                };
                #[cfg(not(target_arch = "x86_64"))]
                let (d, sum) = {
                    let _ = simd;
                    quantize_block_scalar(xb, &mut a.qs[i])
                };
                a.d[i] = d;
                a.s[i] = d * sum as f32;
            }
        }
        a
    }
}

/// Quantizes 32 values to Q8 (`d = max|x|/127`, `q = round_ties_even(x · 127/max|x|)`);
/// returns `(d, Σq)`. Bit-identical to the AVX2 version.
fn quantize_block_scalar(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, i32) {
    let amax = x.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (qi, &v) in q.iter_mut().zip(x) {
        let r = (v * id).round_ties_even() as i32;
        *qi = r as i8;
        sum += r;
    }
    (amax / 127.0, sum)
}

/// Portable kernels: the same integer block sums as the AVX2 path, one output at a time.
mod scalar {
    use super::{f16, QActs, QType};

    pub(super) fn chunk(qtype: QType, rows: &[u8], a: &QActs, outs: &mut [&mut [f32]]) {
        let rb = a.nb * qtype.block_bytes();
        for (j, row) in rows.chunks_exact(rb).enumerate() {
            for (r, out) in outs.iter_mut().enumerate() {
                out[j] = match qtype {
                    QType::Q4_1 => dot_q4_1(row, a, r),
                    QType::Q8_0 => dot_q8_0(row, a, r),
                };
            }
        }
    }

    fn dot_q4_1(row: &[u8], a: &QActs, r: usize) -> f32 {
        let (mut acc, mut macc) = (0f32, 0f32);
        for (b, blk) in row.chunks_exact(20).enumerate() {
            let i = b * a.m + r;
            let d4 = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
            let m4 = f16::from_le_bytes([blk[2], blk[3]]).to_f32();
            let y = &a.qs[i];
            let mut isum = 0i32;
            for (t, &q) in blk[4..20].iter().enumerate() {
                isum += (q & 15) as i32 * y[t] as i32 + (q >> 4) as i32 * y[t + 16] as i32;
            }
            acc += d4 * a.d[i] * isum as f32;
            macc += m4 * a.s[i];
        }
        acc + macc
    }

    fn dot_q8_0(row: &[u8], a: &QActs, r: usize) -> f32 {
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(34).enumerate() {
            let i = b * a.m + r;
            let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
            let isum: i32 = blk[2..34]
                .iter()
                .zip(&a.qs[i])
                .map(|(&w, &y)| w as i8 as i32 * y as i32)
                .sum();
            acc += d * a.d[i] * isum as f32;
        }
        acc
    }
}

/// AVX2 + FMA + F16C kernels. Every function here requires those features at run time.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{QActs, BLOCK};
    use std::arch::x86_64::*;

    /// Software prefetch distance in bytes along a weight row. The hardware prefetcher alone
    /// left the 30 MB lm_head product (m=1) at ~7 GB/s; prefetching 1 KB ahead gave ~13 GB/s
    /// (512 B and 2–4 KB were worse).
    const PF_DIST: usize = 1024;

    /// Horizontal sum of 8 floats.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn hsum(v: __m256) -> f32 {
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_movehdup_ps(h));
        _mm_cvtss_f32(h)
    }

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
        let sign = _mm256_set1_ps(-0.0);
        let mx = _mm256_max_ps(
            _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
            _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])),
        );
        let h = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        let amax = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
        let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
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

    /// Q4_1 tile: `NW` weight rows × `R` activation rows starting at `r0`.
    /// Returns `out[w][r]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn tile_q4_1<const NW: usize, const R: usize>(
        rows: [&[u8]; NW],
        a: &QActs,
        r0: usize,
    ) -> [[f32; R]; NW] {
        let (nb, m) = (a.nb, a.m);
        for w in rows {
            assert_eq!(w.len(), nb * 20);
        }
        assert!(r0 + R <= m);
        let shift = _mm256_set_epi64x(4, 4, 0, 0);
        let mask = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); R]; NW];
        let mut macc = [[0f32; R]; NW];
        for b in 0..nb {
            let i = b * m + r0;
            let d8: &[f32; R] = a.d[i..i + R].try_into().unwrap();
            let s8: &[f32; R] = a.s[i..i + R].try_into().unwrap();
            let ys: &[[i8; BLOCK]; R] = a.qs[i..i + R].try_into().unwrap();
            for w in 0..NW {
                let blk = rows[w].as_ptr().add(b * 20);
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PF_DIST) as *const i8);
                let dm = _mm_cvtph_ps(_mm_cvtsi32_si128((blk as *const i32).read_unaligned()));
                let d4 = _mm_cvtss_f32(dm);
                let m4 = _mm_cvtss_f32(_mm_movehdup_ps(dm));
                // Both 128-bit lanes get the 16 packed bytes; the low lane keeps the low
                // nibbles (elements 0..16), the high lane the high nibbles (16..32).
                let raw =
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(blk.add(4) as *const __m128i));
                let q = _mm256_and_si256(_mm256_srlv_epi64(raw, shift), mask);
                for r in 0..R {
                    let y = _mm256_loadu_si256(ys[r].as_ptr() as *const __m256i);
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), ones);
                    let sc = _mm256_set1_ps(d4 * d8[r]);
                    acc[w][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), sc, acc[w][r]);
                    macc[w][r] += m4 * s8[r];
                }
            }
        }
        let mut out = [[0f32; R]; NW];
        for w in 0..NW {
            for r in 0..R {
                out[w][r] = hsum(acc[w][r]) + macc[w][r];
            }
        }
        out
    }

    /// Q8_0 tile: `NW` weight rows × `R` activation rows starting at `r0`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn tile_q8_0<const NW: usize, const R: usize>(
        rows: [&[u8]; NW],
        a: &QActs,
        r0: usize,
    ) -> [[f32; R]; NW] {
        let (nb, m) = (a.nb, a.m);
        for w in rows {
            assert_eq!(w.len(), nb * 34);
        }
        assert!(r0 + R <= m);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); R]; NW];
        for b in 0..nb {
            let i = b * m + r0;
            let d8: &[f32; R] = a.d[i..i + R].try_into().unwrap();
            let ys: &[[i8; BLOCK]; R] = a.qs[i..i + R].try_into().unwrap();
            for w in 0..NW {
                let blk = rows[w].as_ptr().add(b * 34);
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PF_DIST) as *const i8);
                let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                    (blk as *const u16).read_unaligned() as i32,
                )));
                let q = _mm256_loadu_si256(blk.add(2) as *const __m256i);
                // maddubs needs an unsigned operand: |q| and y carrying q's sign.
                let aq = _mm256_sign_epi8(q, q);
                for r in 0..R {
                    let y = _mm256_loadu_si256(ys[r].as_ptr() as *const __m256i);
                    let p =
                        _mm256_madd_epi16(_mm256_maddubs_epi16(aq, _mm256_sign_epi8(y, q)), ones);
                    let sc = _mm256_set1_ps(d * d8[r]);
                    acc[w][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), sc, acc[w][r]);
                }
            }
        }
        let mut out = [[0f32; R]; NW];
        for w in 0..NW {
            for r in 0..R {
                out[w][r] = hsum(acc[w][r]);
            }
        }
        out
    }

    /// Loops a tile function over a chunk of weight rows and all activation rows. Groups of
    /// four activation rows use one weight row per tile (4 independent accumulators); the last
    /// 1–3 rows pair two weight rows so that small `m` still has independent FMA chains.
    macro_rules! chunk_loop {
        ($tile:ident, $bb:expr, $rows:expr, $a:expr, $outs:expr) => {{
            let (rows, a, outs): (&[u8], &QActs, &mut [&mut [f32]]) = ($rows, $a, $outs);
            let rb = a.nb * $bb;
            let n = outs[0].len();
            let m = a.m;
            let mut j = 0;
            while j < n {
                let w0 = &rows[j * rb..(j + 1) * rb];
                let mut r0 = 0;
                if j + 1 < n {
                    let w1 = &rows[(j + 1) * rb..(j + 2) * rb];
                    while m - r0 >= 4 {
                        store(outs, r0, j, $tile::<1, 4>([w0], a, r0));
                        store(outs, r0, j + 1, $tile::<1, 4>([w1], a, r0));
                        r0 += 4;
                    }
                    match m - r0 {
                        3 => {
                            store(outs, r0, j, $tile::<2, 2>([w0, w1], a, r0));
                            store(outs, r0 + 2, j, $tile::<2, 1>([w0, w1], a, r0 + 2));
                        }
                        2 => store(outs, r0, j, $tile::<2, 2>([w0, w1], a, r0)),
                        1 => store(outs, r0, j, $tile::<2, 1>([w0, w1], a, r0)),
                        _ => {}
                    }
                    j += 2;
                } else {
                    while m - r0 >= 4 {
                        store(outs, r0, j, $tile::<1, 4>([w0], a, r0));
                        r0 += 4;
                    }
                    match m - r0 {
                        3 => store(outs, r0, j, $tile::<1, 3>([w0], a, r0)),
                        2 => store(outs, r0, j, $tile::<1, 2>([w0], a, r0)),
                        1 => store(outs, r0, j, $tile::<1, 1>([w0], a, r0)),
                        _ => {}
                    }
                    j += 1;
                }
            }
        }};
    }

    #[inline(always)]
    fn store<const NW: usize, const R: usize>(
        outs: &mut [&mut [f32]],
        r0: usize,
        j: usize,
        v: [[f32; R]; NW],
    ) {
        for (w, vw) in v.iter().enumerate() {
            for (r, &x) in vw.iter().enumerate() {
                outs[r0 + r][j + w] = x;
            }
        }
    }

    /// Q4_1 weight rows (raw blocks) × all activation rows into `outs[r][j]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn chunk_q4_1(rows: &[u8], a: &QActs, outs: &mut [&mut [f32]]) {
        chunk_loop!(tile_q4_1, 20, rows, a, outs)
    }

    /// Q8_0 weight rows (raw blocks) × all activation rows into `outs[r][j]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn chunk_q8_0(rows: &[u8], a: &QActs, outs: &mut [&mut [f32]]) {
        chunk_loop!(tile_q8_0, 34, rows, a, outs)
    }
}

#[cfg(test)]
mod tests;
