//! The GAtt evaluator: does a chat model keep respecting its instruction, turn after turn?
//!
//! ```text
//! protocol (dialogues from a backend) -> checks (one verdict per reply and constraint)
//!   -> stats (adherence per turn, Wilson intervals, survival) -> report (json, md, html)
//! ```
//!
//! Checks are code, not a judge model: every verdict can be reproduced and explained,
//! and a reply the code cannot decide is counted as undetermined, never as a pass.

pub mod checks;
pub mod protocol;
pub mod report;
pub mod stats;

pub use checks::{check, Check, Verdict};
pub use protocol::{run_protocol, score_dialogue, ProtocolOptions, ScoredTurn};
pub use report::{compare, read_report, write_report, Report};
