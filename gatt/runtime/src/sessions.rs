//! Conversations' KV caches kept between turns, within a memory budget.
//!
//! A conversation ([`gatt::backend::Request::conversation`]) keeps the branches of its
//! last call: one per candidate, the prompt's keys and values (shared by the candidates)
//! and those of the tokens fed after it. Its next prompt reuses the longest prefix of
//! token ids that one branch shares with it: positions whose tokens are exactly the
//! prompt's first tokens, and so (see `decode_attention.rs`) exactly the keys and values a
//! full prefill would compute. The branch may be another conversation's (a new dialogue's
//! system prompt and template text, held by the dialogues already running). Whatever does
//! not match (a template that re-renders the history, a reply whose text tokenizes
//! otherwise than it was sampled) is prefilled.

use crate::llama::SeqKv;
use std::collections::HashMap;
use std::sync::Arc;

/// One sampled continuation of a prompt, as held in the cache.
pub(crate) struct Branch {
    /// Every token whose keys and values are held: the prompt, then those fed after it.
    tokens: Vec<u32>,
    /// Positions of the prompt.
    prompt_len: usize,
    /// The prompt's keys and values, shared by the candidates of one request.
    prompt: Arc<SeqKv>,
    /// The keys and values of the tokens fed after the prompt (none when none were).
    reply: Option<SeqKv>,
}

impl Branch {
    /// The branch of `prompt` (tokens and keys and values) continued by `fed`, whose keys
    /// and values are `reply`.
    pub(crate) fn new(
        prompt_tokens: &[u32],
        prompt: &Arc<SeqKv>,
        fed: Vec<u32>,
        reply: Option<SeqKv>,
    ) -> Self {
        let mut tokens = prompt_tokens.to_vec();
        tokens.extend(fed);
        Branch {
            tokens,
            prompt_len: prompt_tokens.len(),
            prompt: Arc::clone(prompt),
            reply,
        }
    }

    /// The keys and values of the first `len` positions.
    fn prefix(&self, len: usize) -> candle_core::Result<SeqKv> {
        match &self.reply {
            Some(reply) if len > self.prompt_len => {
                self.prompt.concat(&reply.prefix(len - self.prompt_len)?)
            }
            _ => self.prompt.prefix(len.min(self.prompt_len)),
        }
    }
}

/// Positions of `prompt` whose kept keys and values can be reused from a branch holding
/// `cached`: the length of their common prefix of token ids, but never the whole prompt
/// (the last prompt token must run through the model to give the next token's logits).
pub(crate) fn reusable_len(cached: &[u32], prompt: &[u32]) -> usize {
    let common = cached
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count();
    common.min(prompt.len().saturating_sub(1))
}

struct Entry {
    branches: Vec<Branch>,
    /// When it was last kept (a counter: the entry kept longest ago goes first).
    kept_at: u64,
}

impl Entry {
    /// Bytes of keys and values held (a prompt shared by branches counted once).
    fn bytes(&self) -> usize {
        let mut prompts: Vec<&Arc<SeqKv>> = Vec::new();
        let mut total = 0;
        for b in &self.branches {
            if !prompts.iter().any(|p| Arc::ptr_eq(p, &b.prompt)) {
                prompts.push(&b.prompt);
                total += b.prompt.bytes();
            }
            total += b.reply.as_ref().map_or(0, SeqKv::bytes);
        }
        total
    }
}

/// The kept conversations, at most `budget` bytes of keys and values.
pub(crate) struct Sessions {
    budget: usize,
    entries: HashMap<String, Entry>,
    clock: u64,
    /// Prompt positions computed since the start.
    pub(crate) computed: usize,
    /// Prompt positions taken from kept caches since the start.
    pub(crate) reused: usize,
}

impl Sessions {
    /// No conversation kept yet; at most `budget` bytes will be.
    pub(crate) fn new(budget: usize) -> Self {
        Sessions {
            budget,
            entries: HashMap::new(),
            clock: 0,
            computed: 0,
            reused: 0,
        }
    }

    /// Bytes that may be kept.
    pub(crate) fn budget(&self) -> usize {
        self.budget
    }

    /// A new budget, kept to at once.
    pub(crate) fn set_budget(&mut self, budget: usize) {
        self.budget = budget;
        self.evict();
    }

    /// Counts a prefill of `computed` positions after `reused` kept ones.
    pub(crate) fn count(&mut self, computed: usize, reused: usize) {
        self.computed += computed;
        self.reused += reused;
    }

    /// The keys and values `prompt` can start from: those of the longest
    /// [`reusable_len`] over every branch kept, its own conversation's or another's;
    /// `None` when no position can be reused. Another conversation's branch serves where
    /// it shares more of the prompt, typically a first turn's system prompt and template
    /// text: the same token ids from the start have the same keys and values in any
    /// conversation (see the module's docs), so which of equally long branches serves
    /// changes nothing.
    pub(crate) fn reusable(&self, prompt: &[u32]) -> candle_core::Result<Option<SeqKv>> {
        let best = self
            .entries
            .values()
            .flat_map(|e| &e.branches)
            .map(|b| (reusable_len(&b.tokens, prompt), b))
            .max_by_key(|(len, _)| *len);
        match best {
            Some((len, branch)) if len > 0 => branch.prefix(len).map(Some),
            _ => Ok(None),
        }
    }

    /// Keeps `branches` as conversation `key`'s (replacing what it held), then drops the
    /// conversations kept longest ago until the budget holds.
    pub(crate) fn keep(&mut self, key: &str, branches: Vec<Branch>) {
        self.clock += 1;
        let entry = Entry {
            branches,
            kept_at: self.clock,
        };
        self.entries.insert(key.to_string(), entry);
        self.evict();
    }

    /// Drops conversation `key`'s cache.
    pub(crate) fn forget(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.entries.values().map(Entry::bytes).sum()
    }

    fn evict(&mut self) {
        let mut total = self.bytes();
        while total > self.budget {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.kept_at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                total -= e.bytes();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reused positions are exactly a prefix of the new prompt's token ids.
    #[test]
    fn reuse_stops_at_the_first_token_that_differs() {
        // The next turn: the same history, the reply as sampled, then new text.
        assert_eq!(reusable_len(&[1, 2, 3, 4], &[1, 2, 3, 4, 5, 6]), 4);
        // The template renders the history differently from the third token on.
        assert_eq!(reusable_len(&[1, 2, 3, 4], &[1, 2, 9, 4, 5, 6]), 2);
        // Nothing in common: a full prefill.
        assert_eq!(reusable_len(&[7, 2, 3], &[1, 2, 3, 4]), 0);
        // Cached tokens beyond the prompt (the end-of-turn token fed after a reply that
        // the next prompt renders otherwise) are not used.
        assert_eq!(reusable_len(&[1, 2, 3, 4, 5, 6], &[1, 2, 3, 4, 8]), 4);
        // The same prompt again (a resampled turn): all but its last token, which must
        // run through the model to give the logits of the first reply token.
        assert_eq!(reusable_len(&[1, 2, 3], &[1, 2, 3]), 2);
        assert_eq!(reusable_len(&[1, 2, 3, 4], &[1, 2, 3]), 2);
        assert_eq!(reusable_len(&[1], &[1]), 0);
        assert_eq!(reusable_len(&[], &[1, 2]), 0);
    }

    fn kv(len: usize) -> SeqKv {
        use crate::llama::{Cache, Config};
        let cfg = Config {
            arch: "llama".into(),
            n_layer: 2,
            n_head: 2,
            n_kv_head: 1,
            hidden: 8,
            head_dim: 4,
            rope_base: 10_000.0,
            rms_eps: 1e-5,
            context_length: 64,
            rope_interleaved: true,
            vocab: 16,
            intermediate: 16,
            tie_embeddings: true,
        };
        let dev = candle_core::Device::Cpu;
        let t = candle_core::Tensor::arange(0f32, len as f32 * 4.0, &dev)
            .unwrap()
            .reshape((1, 1, len, 4))
            .unwrap();
        let one = SeqKv::from_layers(vec![(t.clone(), t.clone()), (t.clone(), t)], len);
        let (cache, _) = Cache::from_sequences(&cfg, &[&one], 0, candle_core::DType::F16).unwrap();
        cache.sequence(0, 0, len).unwrap()
    }

    /// The longest matching branch is reused, cut where the prompt departs from it; the
    /// conversations kept longest ago are dropped first when the budget is exceeded.
    #[test]
    fn the_best_branch_is_reused_and_the_oldest_conversation_evicted() {
        let prompt = Arc::new(kv(3));
        let branch = |fed: Vec<u32>| {
            let n = fed.len();
            Branch::new(&[1, 2, 3], &prompt, fed, Some(kv(n)))
        };
        let per = kv(1).bytes();
        let mut s = Sessions::new(100 * per);
        s.keep("a", vec![branch(vec![4, 5]), branch(vec![6, 7, 8])]);
        // Prompt shared by the two branches: 3 + 2 + 3 positions.
        assert_eq!(s.bytes(), 8 * per);
        let got = s.reusable(&[1, 2, 3, 6, 7, 9, 9]).unwrap().unwrap();
        assert_eq!(got.len(), 5);
        assert!(s.reusable(&[5, 5]).unwrap().is_none());
        // Any prompt starts from what it shares with a kept branch, whichever
        // conversation it comes from (a new dialogue's first turn included).
        assert_eq!(s.reusable(&[1, 2, 3, 4]).unwrap().unwrap().len(), 3);
        assert_eq!(s.reusable(&[1, 2, 3, 6, 9]).unwrap().unwrap().len(), 4);
        s.keep("b", vec![branch(vec![4])]);
        // The longest match serves: "b"'s branch here, "a"'s there.
        assert_eq!(s.reusable(&[1, 2, 3, 4, 5]).unwrap().unwrap().len(), 4);
        assert_eq!(s.reusable(&[1, 2, 3, 4, 5, 6]).unwrap().unwrap().len(), 5);
        s.set_budget(6 * per);
        // "a" was kept first and is gone: only "b"'s four positions are left.
        assert_eq!(s.bytes(), 4 * per);
        assert_eq!(s.reusable(&[1, 2, 3, 6, 7, 9]).unwrap().unwrap().len(), 3);
        assert_eq!(s.reusable(&[1, 2, 3, 4, 5]).unwrap().unwrap().len(), 4);
        s.forget("b");
        assert_eq!(s.bytes(), 0);
        s.set_budget(0);
        s.keep("c", vec![branch(vec![4])]);
        assert!(s.reusable(&[1, 2, 3, 4, 5]).unwrap().is_none());
    }
}
