//! Choosing the next token from logits: greedy, or temperature / top-k / top-p sampling
//! with a repetition penalty, from a seeded generator so that runs repeat exactly.

use crate::kernels::exp::exp_scaled_shifted_in_place;
use gatt::backend::SamplingParams;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One sequence's sampler: its parameters and its own ChaCha8 generator.
pub struct Sampler {
    rng: ChaCha8Rng,
    params: SamplingParams,
    /// One bit per vocabulary entry, all clear between draws: the tokens already
    /// penalized in a draw.
    seen: Vec<u64>,
}

impl Sampler {
    /// A sampler for `params` (their `n` and `max_new_tokens` are not its business)
    /// drawing from ChaCha8 seeded with `seed`.
    pub fn new(params: &SamplingParams, seed: u64) -> Self {
        Sampler {
            // Stream: Candidate; `seed` is already the candidate's seed (see
            // `gatt::backend::candidate_seed`).
            rng: ChaCha8Rng::seed_from_u64(seed),
            params: params.clone(),
            seen: Vec::new(),
        }
    }

    /// Picks a token; `context` is every token so far (for the repetition penalty).
    ///
    /// `logits` (one per vocabulary entry) are modified in place: each distinct token of
    /// `context` is penalized as in CTRL and `transformers`' repetition penalty (a
    /// positive logit divided by the penalty, a negative one multiplied); without top-k
    /// and above temperature 0 they are left holding the tokens' unnormalized
    /// probabilities (the draw's scratch, so that it allocates nothing). A temperature
    /// of 0 or less takes the argmax without drawing; otherwise the `top_k` highest
    /// logits are kept, then the top-p nucleus of their softmax at the temperature, and
    /// one token is drawn in proportion to its probability.
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32]) -> u32 {
        let penalty = self.params.repetition_penalty;
        if penalty != 1.0 {
            // Each distinct token once: marked in a bitset of the vocabulary, the marks
            // cleared after (no copy or sort of the context in every draw).
            let words = logits.len().div_ceil(64);
            if self.seen.len() < words {
                self.seen.resize(words, 0);
            }
            for &t in context {
                let (word, bit) = (t as usize / 64, 1u64 << (t % 64));
                if (t as usize) < logits.len() && self.seen[word] & bit == 0 {
                    self.seen[word] |= bit;
                    let l = &mut logits[t as usize];
                    *l = if *l >= 0.0 {
                        *l / penalty
                    } else {
                        *l * penalty
                    };
                }
            }
            for &t in context {
                if (t as usize) < logits.len() {
                    self.seen[t as usize / 64] = 0;
                }
            }
        }
        if self.params.temperature <= 0.0 {
            return argmax(logits);
        }
        let temp = self.params.temperature as f32;
        let k = self
            .params
            .top_k
            .unwrap_or(logits.len())
            .clamp(1, logits.len());
        // The candidates: every token, or the `top_k` highest logits.
        let top_k: Option<Vec<u32>> = (k < logits.len()).then(|| {
            let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
            let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
            idx.select_nth_unstable_by(k - 1, by_logit);
            idx.truncate(k);
            idx
        });
        // Unnormalized probabilities of the candidates, in candidate order: each logit
        // divided by the temperature, less the largest quotient, exponentiated. (The
        // largest quotient is the largest logit divided: division by a positive number
        // keeps the order.) Over the whole vocabulary they take the logits' place; the
        // top-k candidates' logits are gathered first.
        let mut gathered: Vec<f32>;
        let weights: &mut [f32] = match &top_k {
            Some(idx) => {
                gathered = idx.iter().map(|&i| logits[i as usize]).collect();
                &mut gathered
            }
            None => logits,
        };
        let shift = lanes_max(weights) / temp;
        exp_scaled_shifted_in_place(weights, temp, shift);
        let c = self.draw(weights);
        top_k.map_or(c as u32, |idx| idx[c])
    }

    /// A candidate drawn in proportion to `weights` (unnormalized probabilities), from
    /// the top-p nucleus where top-p is below 1.
    fn draw(&mut self, weights: &[f32]) -> usize {
        let (total, max) = lanes_sum_max(weights);
        let top_p = self.params.top_p.filter(|p| *p < 1.0);
        let Some(top_p) = top_p else {
            return pick(weights, self.rng.random::<f32>() * total);
        };
        let kept = nucleus(weights, max, top_p as f32 * total);
        let kept_weights: Vec<f32> = kept.iter().map(|&c| weights[c]).collect();
        let kept_total: f32 = kept_weights.iter().sum();
        kept[pick(&kept_weights, self.rng.random::<f32>() * kept_total)]
    }
}

/// The top-p nucleus of `weights` (unnormalized probabilities, the largest `max`): the
/// fewest largest ones whose running sum, largest first, reaches `mass`; all of them where
/// none does. Returns their indices, largest weight first, equal weights by index.
///
/// Only the weights at or above a threshold are sorted: those are the head of the
/// order, so where their sum reaches `mass` the nucleus lies among them; otherwise the
/// threshold is lowered (to zero at last). One pass over the vocabulary per threshold
/// (summing and collecting the head together) instead of sorting it: a sixth of a
/// synthesis run's time went to sorting the whole vocabulary for every token, then a
/// tenth to selecting its head.
fn nucleus(weights: &[f32], max: f32, mass: f32) -> Vec<usize> {
    // Weights that are all NaN or zero (logits of -inf or NaN) go straight to the last
    // pass over everything.
    let mut threshold = if max > 0.0 && max.is_finite() {
        max / 256.0
    } else {
        0.0
    };
    loop {
        let (sum, mut head) = at_or_above(weights, threshold);
        if threshold == 0.0 || sum >= mass {
            head.sort_unstable_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
            let mut acc = 0.0;
            let cut = head.iter().position(|&c| {
                acc += weights[c];
                acc >= mass
            });
            match cut {
                Some(cut) => {
                    head.truncate(cut + 1);
                    return head;
                }
                // Summed largest first the head falls short (rounding): lower the
                // threshold.
                None if threshold > 0.0 => {}
                // Never empty: with no weight usable, every candidate.
                None if head.is_empty() => return (0..weights.len()).collect(),
                None => return head,
            }
        }
        threshold = if threshold < max * 1e-30 {
            0.0
        } else {
            threshold / 256.0
        };
    }
}

/// The elements of `xs` at or above `threshold` (NaNs never are): their sum, in the
/// order of [`lanes_sum_max`], and their indices in order. Eight at a time are passed
/// over where none is.
fn at_or_above(xs: &[f32], threshold: f32) -> (f32, Vec<usize>) {
    let mut found = Vec::new();
    let mut lanes = [0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for (i, c) in (&mut chunks).enumerate() {
        let mut any = false;
        for (s, &x) in lanes.iter_mut().zip(c) {
            *s += if x >= threshold { x } else { 0.0 };
            any |= x >= threshold;
        }
        if any {
            found.extend((0..8).filter(|&j| c[j] >= threshold).map(|j| 8 * i + j));
        }
    }
    let whole = xs.len() - chunks.remainder().len();
    let rest = (whole..xs.len()).filter(|&i| xs[i] >= threshold);
    found.extend(rest.clone());
    let sum = rest.map(|i| xs[i]).sum::<f32>() + lanes.iter().sum::<f32>();
    (sum, found)
}

/// The largest of `xs` (minus infinity when empty), in eight lanes so that it
/// vectorizes; NaNs are passed over.
fn lanes_max(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    let rest = chunks.remainder().iter();
    rest.chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// The sum of `xs` (NaNs left out) and their largest ([`lanes_max`]), in one pass. The
/// sum is kept in eight interleaved partial sums so that it vectorizes (element `i` of
/// the whole chunks of eight into lane `i % 8`, the last 1-7 elements summed in order,
/// then the lanes added to that in order): its rounding differs from a sum in order by a
/// few units in the last place.
fn lanes_sum_max(xs: &[f32]) -> (f32, f32) {
    let mut sums = [0f32; 8];
    let mut maxes = [f32::NEG_INFINITY; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for ((s, m), &x) in sums.iter_mut().zip(maxes.iter_mut()).zip(c) {
            *s += if x >= f32::NEG_INFINITY { x } else { 0.0 };
            *m = if x > *m { x } else { *m };
        }
    }
    let rest = chunks.remainder();
    let sum = rest
        .iter()
        .filter(|x| **x >= f32::NEG_INFINITY)
        .sum::<f32>()
        + sums.iter().sum::<f32>();
    let max = rest
        .iter()
        .chain(&maxes)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    (sum, max)
}

/// The index at which the running sum of `weights` passes `r` (the last one if rounding
/// leaves `r` beyond the sum).
fn pick(weights: &[f32], r: f32) -> usize {
    let mut acc = 0.0;
    for (c, &w) in weights.iter().enumerate() {
        acc += w;
        if r < acc {
            return c;
        }
    }
    weights.len() - 1
}

fn argmax(logits: &[f32]) -> u32 {
    logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_maximum() {
        let mut s = Sampler::new(&SamplingParams::greedy(1), 0);
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0], &[]), 1);
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let mut p = SamplingParams::greedy(1);
        p.repetition_penalty = 2.0;
        let mut s = Sampler::new(&p, 0);
        assert_eq!(s.sample(&mut [0.0, 3.0, 2.0], &[1]), 2);
    }

    /// A token repeated in the context is penalized once, ids past the vocabulary are
    /// passed over, and the marks of one draw do not carry into the next.
    #[test]
    fn repetition_penalty_counts_each_token_once() {
        let mut p = SamplingParams::greedy(1);
        p.repetition_penalty = 1.1;
        let mut s = Sampler::new(&p, 0);
        // Once: 3.0 / 1.1 = 2.73 stays above 2.6; three times it would fall below.
        assert_eq!(s.sample(&mut [0.0, 3.0, 2.6], &[1, 1, 1, 70_000]), 1);
        // Penalized again in the next draw: 2.73 falls below 2.9.
        assert_eq!(s.sample(&mut [0.0, 3.0, 2.9], &[1]), 2);
    }

    #[test]
    fn same_seed_same_choices_and_top_k_bounds_them() {
        let p = SamplingParams {
            temperature: 1.0,
            top_k: Some(2),
            top_p: None,
            ..SamplingParams::default()
        };
        let draw = |seed| {
            let mut s = Sampler::new(&p, seed);
            (0..50)
                .map(|_| s.sample(&mut [1.0, 1.0, 0.9, -5.0], &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert!(draw(3).iter().all(|t| *t < 2));
        assert!(draw(3).contains(&0) && draw(3).contains(&1));
    }

    /// Top-p keeps the fewest most probable tokens whose mass reaches p, also when that
    /// takes more than the first sorted block of candidates (a flat distribution).
    #[test]
    fn top_p_keeps_the_nucleus() {
        let p = SamplingParams {
            temperature: 1.0,
            top_p: Some(0.5),
            top_k: None,
            repetition_penalty: 1.0,
            ..SamplingParams::default()
        };
        // Peaked: token 7 holds about 73% of the mass, so it is the whole nucleus.
        let mut peaked = vec![0f32; 1000];
        peaked[7] = 8.0;
        let mut s = Sampler::new(&p, 1);
        assert!((0..200).all(|_| s.sample(&mut peaked.clone(), &[]) == 7));
        // Flat over 1000 tokens with a slope: the nucleus is the top ~half (well over the
        // 64 sorted first), and every draw falls in it.
        let flat: Vec<f32> = (0..1000).map(|i| i as f32 * 1e-4).collect();
        let mut s = Sampler::new(&p, 2);
        let draws: Vec<u32> = (0..2000)
            .map(|_| s.sample(&mut flat.clone(), &[]))
            .collect();
        assert!(
            draws.iter().all(|&t| t >= 490),
            "a draw outside the nucleus"
        );
        let distinct: std::collections::HashSet<u32> = draws.iter().copied().collect();
        assert!(distinct.len() > 300, "only {} tokens drawn", distinct.len());
    }

    /// The top-p sampler against the plain definition (every candidate sorted by
    /// probability, the nucleus cut from the head of that order), same seeds, on
    /// logits without ties: the same tokens, draw after draw, with and without top-k,
    /// peaked and flat. (Without top-p the draw walks the candidates in their own order,
    /// not sorted; `without_top_p_draws_follow_the_probabilities` checks that case.)
    #[test]
    fn draws_match_sorting_every_candidate() {
        fn reference(logits: &[f32], p: &SamplingParams, rng: &mut ChaCha8Rng) -> u32 {
            let temp = p.temperature as f32;
            let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
            idx.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
            idx.truncate(p.top_k.unwrap_or(logits.len()));
            let max = logits[idx[0] as usize] / temp;
            let w: Vec<f32> = idx
                .iter()
                .map(|&i| crate::kernels::exp::exp(logits[i as usize] / temp - max))
                .collect();
            let total: f32 = w.iter().sum();
            let mut n = w.len();
            if let Some(top_p) = p.top_p.filter(|t| *t < 1.0) {
                let mut acc = 0.0;
                n = w
                    .iter()
                    .position(|&x| {
                        acc += x;
                        acc >= top_p as f32 * total
                    })
                    .map_or(w.len(), |c| c + 1);
            }
            let kept_total: f32 = w[..n].iter().sum();
            let r = rng.random::<f32>() * kept_total;
            idx[pick(&w[..n], r)]
        }
        let mut gen = ChaCha8Rng::seed_from_u64(9);
        for (top_k, top_p, spread) in [
            (None, Some(0.9), 0.05),
            (None, Some(0.5), 0.002),
            (Some(40), Some(0.9), 0.01),
            (Some(500), Some(0.99), 0.001),
        ] {
            let p = SamplingParams {
                temperature: 0.7,
                top_k,
                top_p,
                repetition_penalty: 1.0,
                ..SamplingParams::default()
            };
            for seed in 0..20 {
                // Distinct logits: a shuffled ramp.
                let mut logits: Vec<f32> = (0..3000).map(|i| i as f32 * spread - 20.0).collect();
                for i in (1..logits.len()).rev() {
                    logits.swap(i, gen.random_range(0..=i));
                }
                let mut sampler = Sampler::new(&p, seed);
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                for draw in 0..30 {
                    let want = reference(&logits, &p, &mut rng);
                    let got = sampler.sample(&mut logits.clone(), &[]);
                    assert_eq!(got, want, "{top_k:?} {top_p:?} seed {seed} draw {draw}");
                }
            }
        }
    }

    /// Logits a broken model could give (NaN, all minus infinity, one entry) still give
    /// a token of the vocabulary, without a panic or an endless search.
    #[test]
    fn degenerate_logits_still_give_a_token() {
        let p = SamplingParams::default();
        for logits in [
            vec![f32::NAN; 100],
            vec![f32::NEG_INFINITY; 100],
            vec![0.5],
            (0..100)
                .map(|i| if i % 2 == 0 { f32::NAN } else { 1.0 })
                .collect(),
        ] {
            let mut s = Sampler::new(&p, 4);
            let t = s.sample(&mut logits.clone(), &[1, 2, 3]);
            assert!((t as usize) < logits.len());
        }
    }

    /// Without top-p every token can be drawn, in proportion to its probability.
    #[test]
    fn without_top_p_draws_follow_the_probabilities() {
        let p = SamplingParams {
            temperature: 1.0,
            top_p: None,
            top_k: None,
            repetition_penalty: 1.0,
            ..SamplingParams::default()
        };
        // Probabilities 1/2, 1/4, 1/4.
        let logits = [2f32.ln(), 0.0, 0.0];
        let mut s = Sampler::new(&p, 3);
        let mut counts = [0usize; 3];
        for _ in 0..4000 {
            counts[s.sample(&mut logits.clone(), &[]) as usize] += 1;
        }
        assert!((1850..2150).contains(&counts[0]), "{counts:?}");
        assert!((850..1150).contains(&counts[1]) && (850..1150).contains(&counts[2]));
    }
}
