//! Choosing the next token from logits: greedy, or temperature / top-k / top-p sampling
//! with a repetition penalty, from a seeded generator so that runs repeat exactly.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    /// 1.0 means none; >1 discourages tokens already in the context.
    pub repetition_penalty: f32,
    /// Candidates per conversation.
    pub n: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_new_tokens: 256,
            temperature: 0.7,
            top_p: Some(0.9),
            top_k: None,
            repetition_penalty: 1.1,
            n: 1,
        }
    }
}

impl SamplingParams {
    pub fn greedy(max_new_tokens: usize) -> Self {
        SamplingParams {
            max_new_tokens,
            temperature: 0.0,
            top_p: None,
            top_k: None,
            repetition_penalty: 1.0,
            n: 1,
        }
    }
}

/// One sequence's sampler.
pub struct Sampler {
    rng: ChaCha8Rng,
    params: SamplingParams,
}

impl Sampler {
    pub fn new(params: &SamplingParams, seed: u64) -> Self {
        Sampler {
            rng: ChaCha8Rng::seed_from_u64(seed),
            params: params.clone(),
        }
    }

    /// Picks a token; `context` is every token so far (for the repetition penalty).
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
        idx.sort_unstable_by(by_logit);
        let max = logits[idx[0] as usize];
        let mut probs: Vec<f32> = idx
            .iter()
            .map(|&i| ((logits[i as usize] - max) / temp).exp())
            .collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if let Some(top_p) = self.params.top_p.filter(|p| *p < 1.0) {
            let mut acc = 0.0;
            let cut = probs
                .iter()
                .position(|p| {
                    acc += p;
                    acc as f64 >= top_p
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(cut);
            let total: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        let r: f32 = self.rng.random();
        let mut acc = 0.0;
        for (p, &i) in probs.iter().zip(&idx) {
            acc += p;
            if r < acc {
                return i;
            }
        }
        idx[probs.len() - 1]
    }
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
}
