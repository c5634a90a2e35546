//! Ghost Attention (GAtt) core.
//!
//! GAtt is the recipe of the Llama 2 paper (Touvron et al., 2023, §3.3 "System Message
//! for Multi-Turn Consistency"): sample a multi-turn dialogue with an instruction
//! attached to every user turn, keep the instruction only once, at the start of the
//! training record, and train only on the final reply, so that the earlier replies
//! (sampled with the instruction in view, now absent from their context) carry no loss.
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
//! tell the user what to fix (and exit with status 2; runtime errors exit with 1).
//!
//! # Example: mask one dialogue
//!
//! SmolLM2's tokenizer and chat template, from the fixtures the golden tests compare
//! against `transformers` (no network needed). Token ids are `u32`; labels are `i64`:
//! the token id where the trainer learns, [`mask::IGNORE`] (-100, the value PyTorch's
//! cross-entropy ignores) everywhere else.
//!
//! ```
//! use gatt::mask::{MaskOptions, Masker, Policy, IGNORE};
//! use gatt::model::ChatFormat;
//! use gatt::template::ChatTemplate;
//! use gatt::{Dialogue, Message};
//! use std::path::Path;
//!
//! const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/golden");
//!
//! // A training record: the instruction once (here as the system message), then the
//! // turns; it must end with an assistant reply.
//! let dialogue = Dialogue::new(
//!     "d1",
//!     vec![
//!         Message::system("Always answer in French."),
//!         Message::user("Hello!"),
//!         Message::assistant("Bonjour !"),
//!         Message::user("What is 2+2?"),
//!         Message::assistant("Deux plus deux font 4."),
//!     ],
//! );
//!
//! let fixture = |name: &str| Path::new(FIXTURES).join(name);
//! let tokenizer = gatt::tokenizer::from_json_file(&fixture("smollm2_tokenizer.json"))?;
//! let source = std::fs::read_to_string(fixture("smollm2_chat_template.jinja"))?;
//! let template = ChatTemplate::new("smollm2", source, "<|im_start|>", "<|im_end|>", vec![])?;
//! // Checks that the template's markers are tokens of this tokenizer, and finds the
//! // end-of-turn marker: `<|im_end|>`, id 2.
//! let format = ChatFormat::bare(tokenizer)?.with_template(template)?;
//! assert_eq!(format.stop_ids, [2]);
//!
//! let masker = Masker::new(
//!     format,
//!     MaskOptions {
//!         policy: Policy::Gatt,
//!         ..Default::default()
//!     },
//! );
//! // An error is a `MaskError`: the record is skipped, counted by its `reason`.
//! let samples = masker.mask(&dialogue).map_err(|e| e.to_string())?;
//! assert_eq!(samples.len(), 1, "GAtt makes one sample per record");
//! let s = &samples[0];
//! assert_eq!(s.labels.len(), s.input_ids.len());
//!
//! // The final reply's prompt (everything before it, as the model reads it at
//! // inference) carries no loss: the system message, the earlier turns, the earlier
//! // reply and the `<|im_start|>assistant\n` that opens the final one.
//! let prompt = masker.template().render(&dialogue.messages[..4], true)?;
//! let n_prompt = masker.tokenizer().encode(prompt.as_str(), false)?.len();
//! assert!(s.labels[..n_prompt].iter().all(|&l| l == IGNORE));
//! assert_ne!(s.labels[n_prompt], IGNORE, "the loss starts with the reply");
//!
//! // A label is the input token's id or -100, and the loss tokens decode to the final
//! // reply and its end-of-turn marker.
//! let pairs = s.labels.iter().zip(&s.input_ids);
//! assert!(pairs.clone().all(|(&l, &id)| l == IGNORE || l == i64::from(id)));
//! let loss: Vec<u32> = pairs.filter(|(&l, _)| l != IGNORE).map(|(_, &id)| id).collect();
//! assert_eq!(
//!     masker.tokenizer().decode(&loss, false)?,
//!     "Deux plus deux font 4.<|im_end|>"
//! );
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backend;
pub mod catalog;
pub mod dataset;
pub mod dialogue;
pub mod error;
pub mod judge;
pub mod mask;
pub mod model;
pub mod names;
pub mod seed;
pub mod template;
pub mod text;
pub mod tokenizer;
pub mod transform;

#[cfg(test)]
mod fuzz_tests;

pub use dialogue::{Constraint, ConstraintKind, Dialogue, DialogueMeta, Message, Role};
pub use error::{Error, Result};
