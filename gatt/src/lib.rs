//! Ghost Attention (GAtt) core.
//!
//! The modules follow the data flow of the toolkit:
//!
//! ```text
//! dialogue -> transform (attach / keep-first) -> template (render) -> tokenizer (ids)
//!          -> mask (labels) -> dataset (files)
//! model -> backend (sample replies)
//! ```
//!
//! Everything that reads user input returns [`Error`], whose `Input` variant names the
//! file, line and field at fault so that the command-line tool can tell the user what to fix.

pub mod allocator;
pub mod backend;
pub mod catalog;
pub mod dataset;
pub mod dialogue;
pub mod error;
pub mod mask;
pub mod model;
pub mod template;
pub mod tokenizer;
pub mod train;
pub mod transform;

pub use dialogue::{Constraint, ConstraintKind, Dialogue, Message, Role};
pub use error::{Error, Result};
