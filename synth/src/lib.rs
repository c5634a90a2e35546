//! The GAtt generator: turns a chat model into a GAtt training set.
//!
//! ```text
//! constraints (sample) -> instruction (phrase) -> user turns (users)
//!   -> replies, turn by turn, instruction in every user turn (pipeline)
//!   -> training record, instruction in the first turn only (gatt::transform)
//! ```
//!
//! Every dialogue is a pure function of (seed, its index), so runs repeat byte for byte,
//! shards partition the work, and a resumed run ends exactly where a clean one would.
//!
//! Dependencies: the core crate `gatt` only (dialogues, catalogs, the `ChatBackend`
//! trait, the judge's questions of `gatt::judge`). The generator does not know which
//! backend writes the replies (or judges them), nor how they are scored beyond the
//! [`Scorer`] trait; it never depends on the evaluator or the CLI.

#![deny(missing_docs)]

pub mod expand;
pub mod gate;
pub mod phrase;
pub mod pipeline;
pub mod plan;
pub mod run;
pub mod sample;
pub mod scorer;
pub mod users;

pub use gate::{CutMode, GateCounts, GateOptions, JudgeCounts, Rejection};
pub use pipeline::{ChunkOutput, SynthOptions, Synthesizer};
pub use plan::{DialoguePlan, Shard};
pub use scorer::{DefaultScorer, Judged, Scorer};
