//! Chat backends: "the current chat model" that writes the assistant replies, behind
//! one interface, [`ChatBackend`]. `gatt-runtime`'s `EmbeddedBackend` runs a GGUF model
//! in-process on candle (batched); [`HttpBackend`] talks to any OpenAI-compatible server
//! (vLLM, SGLang, TGI, llama.cpp).

mod http;

pub use http::{redact_url, HttpBackend, HttpOptions};

use crate::dialogue::Message;
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// One conversation awaiting a reply (ends with a user message).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The conversation so far, ending with the user message to answer; the backend
    /// renders it with the model's chat template (or the server does).
    pub messages: Vec<Message>,
    /// Seeds this conversation's sampler: the same request and seed give the same reply
    /// on the embedded backend, whatever else is in the batch.
    pub seed: u64,
    /// Names the dialogue this request continues, so that a backend can keep what it
    /// computed for the earlier turns between calls: the embedded backend keeps the
    /// dialogue's KV cache and prefills only the tokens that follow what it holds. `None`
    /// for a one-off request. Replies never depend on it: it only saves work. A caller
    /// sends at most one request of a dialogue at a time, turns in order, and calls
    /// [`ChatBackend::end_conversation`] when the dialogue is done.
    pub conversation: Option<String>,
}

impl Request {
    /// A one-off request (no [`Request::conversation`]).
    pub fn new(messages: Vec<Message>, seed: u64) -> Self {
        Request {
            messages,
            seed,
            conversation: None,
        }
    }

    /// The same request as a turn of the dialogue named `key`.
    pub fn in_conversation(mut self, key: impl Into<String>) -> Self {
        self.conversation = Some(key.into());
        self
    }
}

/// A generated reply.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Reply {
    /// Reply text, without the end-of-turn token and surrounding whitespace.
    pub text: String,
    /// Tokens of the rendered prompt (an HTTP server's `usage.prompt_tokens`; 0 when it
    /// reports none).
    pub prompt_tokens: usize,
    /// Tokens generated, as the backend counts them (the embedded backend leaves out the
    /// stop token; an HTTP server's `usage.completion_tokens`, 0 when it reports none).
    pub completion_tokens: usize,
    /// False when the reply was cut at `max_new_tokens`.
    pub finished: bool,
}

/// A chat model that writes assistant replies: the generator, the evaluator and the
/// judge use nothing else of it.
///
/// Implemented by [`HttpBackend`] here and by the in-process GGUF backend of
/// `gatt-runtime`.
pub trait ChatBackend: Send + Sync {
    /// Model identity for provenance records (path, or endpoint and model name).
    fn describe(&self) -> String;

    /// `params.n` candidate replies for every request, in order: `out[r][c]` is
    /// candidate `c` of request `r`, sampled with [`candidate_seed`]`(requests[r].seed, c)`.
    ///
    /// # Errors
    ///
    /// The first failure of any request fails the batch: a runtime error for transport,
    /// server or model failures; an input error for what the caller must fix (a prompt
    /// longer than the model's context, a request the server refuses with a 4xx).
    fn generate(&self, requests: &[Request], params: &SamplingParams) -> Result<Vec<Vec<Reply>>>;

    /// How many requests to hand over at once for good throughput.
    fn preferred_batch(&self) -> usize;

    /// Continuous generation: takes requests from `feed` whenever it has room for more
    /// and hands each request's `params.n` candidates back to [`Feed::done`] as soon as
    /// they are all sampled, so that a caller can send a dialogue's next turn while other
    /// dialogues are still being answered. Returns once [`Feed::next`] has nothing to give
    /// and no request is in flight.
    ///
    /// Replies are those [`ChatBackend::generate`] gives for the same request and seed:
    /// only the order in which requests finish depends on what else is in flight. The
    /// default hands the backend up to [`ChatBackend::preferred_batch`] ready requests at
    /// a time ([`generate_in_batches`]); the embedded and HTTP backends keep their batch
    /// (in-flight window) full instead.
    ///
    /// # Errors
    ///
    /// The first error of a request (as [`ChatBackend::generate`]'s) or of [`Feed::done`];
    /// nothing more is handed to `feed` then.
    fn generate_each(&self, feed: &mut dyn Feed) -> Result<()> {
        generate_in_batches(self, feed)
    }

    /// The dialogue named `key` ([`Request::conversation`]) is done: what the backend
    /// kept for it can go. Backends that keep nothing ignore it (the default).
    fn end_conversation(&self, key: &str) {
        let _ = key;
    }

    /// Checks, before any work, that the backend can answer: an HTTP backend asks its
    /// server for its models (the check it otherwise makes at the first request). Local
    /// backends are ready once loaded (the default).
    ///
    /// # Errors
    ///
    /// A runtime error when the server cannot be reached or does not answer in time.
    fn check_ready(&self) -> Result<()> {
        Ok(())
    }
}

/// Where [`ChatBackend::generate_each`] takes its requests and delivers their replies.
///
/// Requests are numbered in the order [`Feed::next`] gives them (the first is 0); the
/// number comes back with the replies. A feed that sends one request of a dialogue at a
/// time, the next only once the previous one's replies are in, gets them out in order,
/// so that a kept cache (the embedded backend's, a server's prefix cache) is hit.
pub trait Feed {
    /// The next request to send and how to sample it, or `None` when no request is ready
    /// now. Called whenever the backend has room for more; a `None` with nothing in flight
    /// ends the generation (only [`Feed::done`] can make new requests ready).
    fn next(&mut self) -> Option<(Request, SamplingParams)>;

    /// The `params.n` candidates of request `ticket`, in candidate order (as
    /// [`ChatBackend::generate`] returns them for one request).
    ///
    /// # Errors
    ///
    /// Whatever the caller fails with; it ends the generation with that error.
    fn done(&mut self, ticket: usize, replies: Vec<Reply>) -> Result<()>;
}

/// [`ChatBackend::generate_each`] by plain [`ChatBackend::generate`] calls: up to
/// [`ChatBackend::preferred_batch`] ready requests at a time (requests of equal sampling
/// settings in one call), each batch waiting for its slowest reply.
///
/// # Errors
///
/// The backend's or the feed's first error; a runtime error when the backend returns
/// another number of replies than it was asked for.
pub fn generate_in_batches<B: ChatBackend + ?Sized>(
    backend: &B,
    feed: &mut dyn Feed,
) -> Result<()> {
    let size = backend.preferred_batch().max(1);
    let mut ticket = 0;
    loop {
        let mut batch: Vec<(Request, SamplingParams)> = Vec::new();
        while batch.len() < size {
            match feed.next() {
                Some(job) => batch.push(job),
                None => break,
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let mut rest = batch.as_slice();
        while let Some((_, params)) = rest.first() {
            let same = rest.iter().take_while(|(_, p)| p == params).count();
            let requests: Vec<Request> = rest[..same].iter().map(|(r, _)| r.clone()).collect();
            let replies = backend.generate(&requests, params)?;
            let n = params.n.max(1);
            if replies.len() != requests.len() || replies.iter().any(|r| r.len() != n) {
                return Err(crate::Error::runtime(format!(
                    "{}: {} replies for {} requests of {n} candidates each",
                    backend.describe(),
                    replies.iter().map(Vec::len).sum::<usize>(),
                    requests.len()
                )));
            }
            for candidates in replies {
                feed.done(ticket, candidates)?;
                ticket += 1;
            }
            rest = &rest[same..];
        }
    }
}

/// Derives the seed of candidate `i` of a request, so candidates differ but repeat.
pub fn candidate_seed(seed: u64, i: usize) -> u64 {
    // Stream: Candidate (parent: the request's seed, index: the candidate).
    crate::seed::derive(seed, crate::seed::Stream::Candidate, i as u64)
}

/// How replies are sampled: the same settings for every backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Longest reply, in tokens (OpenAI's `max_tokens`); a reply cut here is not
    /// [`Reply::finished`].
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 means greedy.
    pub temperature: f64,
    /// Nucleus sampling: draw from the most probable tokens whose probabilities sum to
    /// this share; `None` (or 1.0) keeps them all.
    pub top_p: Option<f64>,
    /// Draw only from the `k` most probable tokens; `None` keeps them all. Not in
    /// OpenAI's schema: left out for servers that refuse it.
    pub top_k: Option<usize>,
    /// 1.0 means none; >1 discourages tokens already in the context (the CTRL penalty,
    /// as `transformers`' `repetition_penalty`: positive logits divided by it, negative
    /// ones multiplied). Not in OpenAI's schema: left out for servers that refuse it.
    pub repetition_penalty: f32,
    /// Candidates per conversation.
    pub n: usize,
}

impl Default for SamplingParams {
    /// Up to [`SamplingParams::DEFAULT_MAX_NEW_TOKENS`] tokens at temperature 0.7, top-p
    /// 0.9, repetition penalty 1.1, one candidate.
    fn default() -> Self {
        SamplingParams {
            max_new_tokens: Self::DEFAULT_MAX_NEW_TOKENS,
            temperature: Self::DEFAULT_TEMPERATURE,
            top_p: Some(Self::DEFAULT_TOP_P),
            top_k: None,
            repetition_penalty: Self::DEFAULT_REPETITION_PENALTY,
            n: 1,
        }
    }
}

impl SamplingParams {
    /// Longest reply of the default settings, in tokens.
    pub const DEFAULT_MAX_NEW_TOKENS: usize = 192;
    /// Temperature of the default settings.
    pub const DEFAULT_TEMPERATURE: f64 = 0.7;
    /// Nucleus (top-p) share of the default settings.
    pub const DEFAULT_TOP_P: f64 = 0.9;
    /// Repetition penalty of the default settings.
    pub const DEFAULT_REPETITION_PENALTY: f32 = 1.1;

    /// Greedy decoding of up to `max_new_tokens` tokens, without penalty.
    pub fn greedy(max_new_tokens: usize) -> Self {
        SamplingParams {
            max_new_tokens,
            temperature: 0.0,
            top_p: None,
            top_k: None,
            repetition_penalty: 1.0,
            n: 1,
        }
    }
}
