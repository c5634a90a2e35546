//! Seeds: one place for every seed the toolkit derives, so that the same seed gives the
//! same bytes.
//!
//! A run has one seed (the user's). Everything random in it (dialogue plans, sampled
//! replies, shuffles, dropout, adapter initialization) draws from a child seed derived
//! with [`derive`] from a parent seed, a [`Stream`] naming the purpose, and an index
//! (dialogue, turn, candidate, epoch, step...). Children can be parents in turn: a
//! synthesized dialogue's reply seeds derive from its plan seed, which derives from the
//! run seed.
//!
//! The mixing function is [splitmix64] (Steele, Lea and Flood, "Fast splittable
//! pseudorandom number generators", OOPSLA 2014; the constants of Vigna's reference
//! `splitmix64.c`): [`splitmix64`] is one step, [`SplitMix64`] a stream of them.
//!
//! The one random choice not drawn through [`derive`] is the evaluation protocol's plan
//! of dialogue `i`, which reads ChaCha8 stream `i` of the run seed (the generator's own
//! independent streams).
//!
//! [splitmix64]: https://prng.di.unimi.it/splitmix64.c
//! [`derive`]: fn@derive

/// The golden-ratio increment of splitmix64 (2^64 / phi, odd).
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// How many low bits of an index [`derive`] keeps apart from the stream: indices below
/// `2^INDEX_BITS` never give two (stream, index) pairs the same child of a parent.
///
/// [`derive`]: fn@derive
pub const INDEX_BITS: u32 = 48;

/// One splitmix64 step from state `x`: the generator's first output when seeded with `x`
/// (`x + GOLDEN_GAMMA`, then the finalizer). A bijection of `u64`.
pub const fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A splitmix64 generator: a cheap stream of well-mixed 64-bit values (LoRA dropout
/// masks draw from one). Its `n`-th output (from 0) is `splitmix64(seed + n * GOLDEN_GAMMA)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        let out = splitmix64(self.state);
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        out
    }
}

/// What a derived seed is for. Each purpose has its own stream, so that seeds drawn for
/// one purpose never repeat those of another. The tags are fixed: changing one changes
/// every output drawn from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Stream {
    /// A synthesized dialogue's plan (constraints, instruction, user turns). Parent: the
    /// run seed; index: the dialogue's index. The child is the dialogue's plan seed, the
    /// parent of its [`Stream::SynthReply`] and [`Stream::SynthUserSim`] seeds.
    SynthPlan = 0,
    /// The request for a synthesized dialogue's assistant reply. Parent: the plan seed;
    /// index: the turn (from 0).
    SynthReply = 1,
    /// The request for a synthesized dialogue's simulated user message. Parent: the plan
    /// seed; index: the turn.
    SynthUserSim = 2,
    /// A request of `gatt constraints expand`. Parent: its seed; index: the request's
    /// number over all rounds.
    SynthExpand = 3,
    /// One of the `n` candidate replies to a request. Parent: the request's seed; index:
    /// the candidate's number. The child seeds that candidate's sampler.
    Candidate = 4,
    /// The backoff jitter of the HTTP backend's retries of one candidate. Parent: the
    /// candidate's seed; index: 0.
    HttpRetry = 5,
    /// An evaluated dialogue. Parent: the evaluation's seed; index: the dialogue's index.
    /// The child is the parent of its [`Stream::EvalReply`] seeds.
    EvalDialogue = 6,
    /// The request for an evaluated dialogue's reply. Parent: the dialogue's seed from
    /// [`Stream::EvalDialogue`]; index: the turn.
    EvalReply = 7,
    /// A question to the judge model. Parent: 0 (judging has no seed of its own); index:
    /// the question's number.
    JudgeRequest = 8,
    /// The order of one training epoch's batches. Parent: the training seed; index: the
    /// epoch.
    TrainShuffle = 9,
    /// The LoRA dropout masks of one optimizer step. Parent: the training seed; index:
    /// the step.
    TrainDropout = 10,
    /// A fresh LoRA adapter's initial weights. Parent: the training seed; index: the
    /// adapted layer's name through [`label`].
    LoraInit = 11,
    /// Another try at a synthesized dialogue's reply after the quality gate rejected
    /// every candidate of the previous one (cut, empty or degenerate). Parent: the
    /// turn's request seed from [`Stream::SynthReply`]; index: the try (from 1).
    SynthResample = 12,
    /// A question to the judge model about a synthesized candidate reply (`gatt synth
    /// --judge-model`). Parent: the seed of the request that sampled the candidate
    /// (from [`Stream::SynthReply`] or [`Stream::SynthResample`]); index: the candidate's
    /// number times the dialogue's constraints, plus the constraint's.
    SynthJudge = 13,
}

impl Stream {
    /// The stream's tag, placed above the index bits.
    const fn key(self) -> u64 {
        (self as u64) << INDEX_BITS
    }
}

/// The seed of child `index` of `parent` in `stream`:
/// `splitmix64(parent ^ splitmix64(index ^ tag << 48))`.
///
/// Same inputs, same child, on every platform. The two splitmix64 steps are bijections,
/// so for a given parent, distinct (stream, index) pairs with indices below
/// `2^`[`INDEX_BITS`] give distinct children, and for a given (stream, index), distinct
/// parents give distinct children; neighbouring parents or indices give unrelated
/// children. Larger indices are mixed as well, without the distinctness guarantee.
pub const fn derive(parent: u64, stream: Stream, index: u64) -> u64 {
    splitmix64(parent ^ splitmix64(index ^ stream.key()))
}

/// An index for [`derive`] made from a name (a layer's name, say), below
/// `2^`[`INDEX_BITS`]: the bytes absorbed eight at a time (little-endian, zero-padded)
/// through splitmix64, then the length.
///
/// [`derive`]: fn@derive
pub fn label(name: &str) -> u64 {
    let mut h = 0u64;
    for chunk in name.as_bytes().chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = splitmix64(h ^ u64::from_le_bytes(word));
    }
    splitmix64(h ^ name.len() as u64) >> (64 - INDEX_BITS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAMS: [Stream; 14] = [
        Stream::SynthPlan,
        Stream::SynthReply,
        Stream::SynthUserSim,
        Stream::SynthExpand,
        Stream::Candidate,
        Stream::HttpRetry,
        Stream::EvalDialogue,
        Stream::EvalReply,
        Stream::JudgeRequest,
        Stream::TrainShuffle,
        Stream::TrainDropout,
        Stream::LoraInit,
        Stream::SynthResample,
        Stream::SynthJudge,
    ];

    /// The reference outputs of splitmix64.c for seeds 0 and 1234567.
    #[test]
    fn splitmix64_gives_the_published_values() {
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        let mut g = SplitMix64::new(0);
        let first: Vec<u64> = (0..5).map(|_| g.next_u64()).collect();
        assert_eq!(
            first,
            [
                0xE220_A839_7B1D_CDAF,
                0x6E78_9E6A_A1B9_65F4,
                0x06C4_5D18_8009_454F,
                0xF88B_B8A8_724C_81EC,
                0x1B39_896A_51A8_749B,
            ]
        );
        let mut g = SplitMix64::new(1_234_567);
        let first: Vec<u64> = (0..5).map(|_| g.next_u64()).collect();
        assert_eq!(
            first,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821,
            ]
        );
    }

    #[test]
    fn the_stream_steps_splitmix64_by_the_golden_gamma() {
        let mut g = SplitMix64::new(99);
        for n in 0..10u64 {
            assert_eq!(
                g.next_u64(),
                splitmix64(99u64.wrapping_add(n.wrapping_mul(GOLDEN_GAMMA)))
            );
        }
    }

    #[test]
    fn same_inputs_same_child() {
        for s in STREAMS {
            assert_eq!(derive(42, s, 7), derive(42, s, 7));
        }
        assert_eq!(
            label("model.layers.0.self_attn.q_proj"),
            label("model.layers.0.self_attn.q_proj")
        );
    }

    /// The synthesizer's plan seeds predate this module: they must not move.
    #[test]
    fn synth_plan_seeds_are_the_historic_formula() {
        for (seed, index) in [(0u64, 0u64), (5, 3), (42, 9), (u64::MAX, 123_456)] {
            assert_eq!(
                derive(seed, Stream::SynthPlan, index),
                splitmix64(seed ^ splitmix64(index))
            );
        }
    }

    #[test]
    fn streams_indices_and_parents_give_distinct_children() {
        let mut seen = std::collections::HashSet::new();
        for parent in [0u64, 1, 2, 42, u64::MAX] {
            for s in STREAMS {
                for index in (0..64).chain([(1 << INDEX_BITS) - 1]) {
                    assert!(
                        seen.insert(derive(parent, s, index)),
                        "{parent} {s:?} {index}"
                    );
                }
            }
        }
    }

    #[test]
    fn neighbouring_inputs_give_unrelated_children() {
        // About half the bits flip between neighbours (a poor mix flips few).
        let flips = |a: u64, b: u64| (a ^ b).count_ones();
        for i in 0..32 {
            let c = derive(7, Stream::Candidate, i);
            assert!((12..=52).contains(&flips(c, derive(7, Stream::Candidate, i + 1))));
            assert!((12..=52).contains(&flips(c, derive(8, Stream::Candidate, i))));
            assert!((12..=52).contains(&flips(c, derive(7, Stream::HttpRetry, i))));
        }
    }

    #[test]
    fn labels_differ_and_fit_the_index_bits() {
        let names = [
            "",
            "a",
            "a\0",
            "model.layers.0.self_attn.q_proj",
            "model.layers.0.self_attn.k_proj",
            "model.layers.1.self_attn.q_proj",
            "model.layers.10.self_attn.q_proj",
        ];
        let labels: std::collections::HashSet<u64> = names.iter().map(|n| label(n)).collect();
        assert_eq!(labels.len(), names.len());
        assert!(labels.iter().all(|&l| l < 1 << INDEX_BITS));
    }
}
