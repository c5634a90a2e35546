//! The GAtt evaluator: does a chat model keep respecting its instruction, turn after turn?
//!
//! ```text
//! protocol (dialogues from a backend) -> checks (one verdict per reply and constraint)
//!   -> stats (adherence per turn, Wilson intervals, survival) -> report (json, md, html)
//! ```
//!
//! [`evaluate`] runs the whole of it for several models (or a file of dialogues).
//!
//! Checks are code: every verdict can be reproduced and explained, and a reply the code
//! cannot decide is counted as undetermined, never as a pass. An optional judge model
//! ([`judge`]) adds its own rows for persona, hobby and figure on every turn.
//!
//! Dependencies: the core crate `gatt` only (dialogues, catalogs, the `ChatBackend`
//! trait, datasets); never the generator, the runtime or the CLI.

#![deny(missing_docs)]

pub mod attention;
pub mod checks;
pub mod evaluate;
pub mod judge;
pub mod protocol;
pub mod report;
pub mod stats;

pub use checks::{check, Check, Verdict};
pub use evaluate::{evaluate_file, evaluate_models};
pub use protocol::{run_protocol, score_dialogue, ProtocolOptions, ScoredTurn};
pub use report::{compare, read_report, write_report, Report};
