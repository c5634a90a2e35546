//! The model runtime of the Ghost Attention toolkit: the chat model that writes the
//! replies and the trainer that fine-tunes it, on candle.
//!
//! - [`llama`]: a llama-family decoder (llama, qwen2) in the layout of
//!   candle-transformers' model files (config, layers, forward), loaded from GGUF or a
//!   Hugging Face folder, with batched ragged decoding and LoRA adapters.
//! - `kernels`: the CPU kernels it runs on (quantized products, attention, norms,
//!   rotary, SiLU gate, softmax), kept apart from the model files.
//! - [`sampling`]: seeded next-token choice (greedy, temperature, top-k/top-p).
//! - [`EmbeddedBackend`]: the in-process [`gatt::backend::ChatBackend`], which keeps
//!   conversations' KV caches between turns (`sessions`).
//! - [`train`]: fine-tuning on `gatt` masks (LoRA or full), checkpoints, `peft` adapters.
//! - [`export`]: a model as a Hugging Face folder.
//!
//! Dependencies: this crate depends on the core crate `gatt` (dialogues, masks, datasets,
//! chat formats) and on candle; nothing in the data path depends on it.

#![deny(missing_docs)]

pub mod allocator;
mod embedded;
pub mod export;
pub(crate) mod kernels;
pub mod llama;
mod safetensors_file;
pub mod sampling;
mod sessions;
pub mod train;

pub use embedded::{device, load_model, EmbeddedBackend};
