//! Ghost Attention (GAtt) core.
//!
//! The modules follow the data flow of the toolkit:
//!
//! ```text
//! dialogue -> transform (attach / keep-first) -> template (render) -> tokenizer (ids)
//!          -> mask (labels) -> dataset (files)
//! chat model -> backend (sample replies: the `ChatBackend` trait, the HTTP backend)
//! ```
//!
//! Every seed the toolkit derives (per dialogue, turn, candidate, epoch, step) comes from
//! [`seed`], so that the same seed gives the same bytes.
//!
//! The model runtime (the in-process model, kernels, sampling, training) is the crate
//! `gatt-runtime`; the generator, the evaluator and the command-line tool are crates of
//! their own. This crate depends on none of them.
//!
//! Everything that reads user input returns [`Error`]; an input error names the file,
//! line or row and field at fault ([`error::Location`]) so that the command-line tool can
//! tell the user what to fix.

#![forbid(unsafe_code)]

pub mod backend;
pub mod catalog;
pub mod dataset;
pub mod dialogue;
pub mod error;
pub mod mask;
pub mod model;
pub mod names;
pub mod seed;
pub mod template;
pub mod tokenizer;
pub mod transform;

pub use dialogue::{Constraint, ConstraintKind, Dialogue, DialogueMeta, Message, Role};
pub use error::{Error, Result};
