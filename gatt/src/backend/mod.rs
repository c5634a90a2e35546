//! Chat backends: "the current chat model" that writes the assistant replies, behind
//! one interface. [`EmbeddedBackend`] runs a GGUF model in-process on candle (batched);
//! [`HttpBackend`] talks to any OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp).

mod embedded;
mod http;
pub mod llama;
pub mod sampling;

pub use embedded::{device, load_model, EmbeddedBackend};
pub use http::{HttpBackend, HttpOptions};
pub use sampling::SamplingParams;

use crate::dialogue::Message;
use crate::error::Result;

/// One conversation awaiting a reply (ends with a user message).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub messages: Vec<Message>,
    /// Seeds this conversation's sampler: the same request and seed give the same reply
    /// on the embedded backend, whatever else is in the batch.
    pub seed: u64,
}

/// A generated reply.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Reply {
    /// Reply text, without the end-of-turn token and surrounding whitespace.
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// False when the reply was cut at `max_new_tokens`.
    pub finished: bool,
}

pub trait ChatBackend: Send + Sync {
    /// Model identity for provenance records (path, or endpoint and model name).
    fn describe(&self) -> String;

    /// `params.n` candidate replies for every request, in order.
    fn generate(&self, requests: &[Request], params: &SamplingParams) -> Result<Vec<Vec<Reply>>>;

    /// How many requests to hand over at once for good throughput.
    fn preferred_batch(&self) -> usize;
}

/// Derives the seed of candidate `i` of a request, so candidates differ but repeat.
pub fn candidate_seed(seed: u64, i: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i as u64)
        .rotate_left(17)
}
