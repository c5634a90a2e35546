//! Choosing the next token from logits: greedy, or temperature / top-k / top-p sampling
//! with a repetition penalty, from a seeded generator so that runs repeat exactly.

use crate::kernels::exp::exp_shifted_in_place;
use gatt::backend::SamplingParams;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One sequence's sampler: its parameters and its own ChaCha8 generator.
pub struct Sampler {
    rng: ChaCha8Rng,
    params: SamplingParams,
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
        }
    }

    /// Picks a token; `context` is every token so far (for the repetition penalty).
    ///
    /// `logits` (one per vocabulary entry) are modified in place: each distinct token of
    /// `context` is penalized as in CTRL and `transformers`' repetition penalty (a
    /// positive logit divided by the penalty, a negative one multiplied). A temperature
    /// of 0 or less takes the argmax without drawing; otherwise the `top_k` highest
    /// logits are kept, then the top-p nucleus of their softmax at the temperature, and
    /// one token is drawn in proportion to its probability.
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32]) -> u32 {
        let penalty = self.params.repetition_penalty;
        if penalty != 1.0 {
            let mut seen = context.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for &t in &seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l >= 0.0 {
                        *l / penalty
                    } else {
                        *l * penalty
                    };
                }
            }
        }
        if self.params.temperature <= 0.0 {
            return argmax(logits);
        }
        let temp = self.params.temperature as f32;
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let k = self
            .params
            .top_k
            .unwrap_or(logits.len())
            .clamp(1, logits.len());
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
        if k < idx.len() {
            idx.select_nth_unstable_by(k - 1, by_logit);
            idx.truncate(k);
        }
        // Unnormalized probabilities of the candidates, in candidate order.
        let max = idx
            .iter()
            .fold(f32::NEG_INFINITY, |m, &i| m.max(logits[i as usize]));
        let mut weights: Vec<f32> = idx.iter().map(|&i| logits[i as usize] / temp).collect();
        exp_shifted_in_place(&mut weights, max / temp);
        let total: f32 = weights.iter().sum();
        let top_p = self.params.top_p.filter(|p| *p < 1.0);
        let Some(top_p) = top_p else {
            return pick(&idx, &weights, self.rng.random::<f32>() * total);
        };
        // The nucleus: the fewest most probable candidates whose mass reaches `top_p`. Only
        // the head of the order is sorted, grown until it holds that mass (the whole
        // vocabulary was sorted for every token before, a sixth of a synthesis run).
        let mass = top_p as f32 * total;
        let by_weight = |a: &usize, b: &usize| weights[*b].total_cmp(&weights[*a]);
        let mut order: Vec<usize> = (0..idx.len()).collect();
        let mut head = 64.min(order.len());
        loop {
            if head < order.len() {
                order.select_nth_unstable_by(head - 1, by_weight);
            }
            order[..head].sort_unstable_by(by_weight);
            let mut acc = 0.0;
            let cut = order[..head].iter().position(|&i| {
                acc += weights[i];
                acc >= mass
            });
            if let Some(cut) = cut.or((head == order.len()).then_some(head - 1)) {
                order.truncate(cut + 1);
                break;
            }
            head = (head * 4).min(order.len());
        }
        let kept: Vec<u32> = order.iter().map(|&i| idx[i]).collect();
        let kept_weights: Vec<f32> = order.iter().map(|&i| weights[i]).collect();
        let kept_total: f32 = kept_weights.iter().sum();
        pick(&kept, &kept_weights, self.rng.random::<f32>() * kept_total)
    }
}

/// The candidate at which the running sum of `weights` passes `r` (the last one if
/// rounding leaves `r` beyond the sum).
fn pick(candidates: &[u32], weights: &[f32], r: f32) -> u32 {
    let mut acc = 0.0;
    for (&c, &w) in candidates.iter().zip(weights) {
        acc += w;
        if r < acc {
            return c;
        }
    }
    candidates[candidates.len() - 1]
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
