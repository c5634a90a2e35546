//! The in-process backend: a GGUF model on candle, decoding many conversations at once.

mod continuous;

use crate::llama::{self, Model, SeqKv};
use crate::sampling::Sampler;
use crate::sessions::{Branch, Sessions};
use candle_core::{Device, Tensor};
use gatt::backend::SamplingParams;
use gatt::backend::{candidate_seed, generate_in_batches, ChatBackend, Feed, Reply, Request};
use gatt::model::{read_gguf, ChatFormat, ModelSource};
use gatt::{Error, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A chat model run in this process, as a [`ChatBackend`]: each request's `n` candidates
/// are sequences of one batch (at most `max_batch` sequences decode together), sampled
/// by a [`Sampler`] seeded with [`candidate_seed`]. Replies are decoded without special
/// tokens and trimmed.
///
/// **Sessions.** On the CPU, the KV cache of a request with a
/// [`Request::conversation`] key is kept after its reply (its prompt and every
/// candidate's reply tokens), within a memory budget
/// ([`EmbeddedBackend::set_session_budget`]). The dialogue's next request prefills only
/// the tokens after the longest prefix of its prompt's token ids that a kept cache holds
/// (its own, or another conversation's where that holds more: a new dialogue's system
/// prompt and template text): the reply's tokens as sampled are usually that prefix's
/// end, and where the template re-renders the history otherwise (or the reply text
/// tokenizes differently), the prefix simply stops there, down to a full prefill. The CPU's inference kernels
/// compute every position from the tokens up to it alone (`decode_attention.rs`,
/// `qmatvec.rs`), so the replies are bit for bit those of a full prefill: the cache saves
/// work and changes nothing, whatever was evicted. Where that does not hold
/// ([`Model::positions_independent`]: other devices, adapters), prompts are prefilled in
/// full.
///
/// **Continuous batching.** [`ChatBackend::generate_each`] keeps one running batch of at
/// most `max_batch` sequences: a candidate leaves it as soon as it stops, and the requests
/// its feed makes ready (a dialogue's next turn) join at the next decoding step, prefilled
/// from their kept caches. For the same reason as above a sequence samples the same
/// tokens whatever else is in the batch; where that does not hold, requests go in batches
/// instead ([`generate_in_batches`]).
pub struct EmbeddedBackend {
    model: Model,
    /// Chat template, tokenizer and end-of-turn ids (`stop_ids`, never empty) of the
    /// model source.
    pub format: ChatFormat,
    path: PathBuf,
    max_batch: usize,
    sessions: Mutex<Sessions>,
    /// How rows joined running batches ([`EmbeddedBackend::join_counts`]).
    joins: JoinCounts,
}

/// How rows joined the running batch under continuous batching.
#[derive(Default)]
struct JoinCounts {
    /// Rows put in the place of a finished row (one row's keys and values written).
    placed: AtomicUsize,
    /// Rebuilds of the batch's cache (every running row's keys and values copied).
    rebuilt: AtomicUsize,
}

/// A prompt ready to decode: its tokens, the logits after its last token, and its keys
/// and values (on the CPU).
struct Prefilled {
    tokens: Vec<u32>,
    logits: Vec<f32>,
    kv: Arc<SeqKv>,
    /// Positions taken from a kept cache instead of computed.
    reused: usize,
}

/// The device of a name: `cpu`, or `cuda` (the first GPU; needs the `cuda` feature).
///
/// # Errors
///
/// An input error for another name, or when CUDA is not available.
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(|e| {
            Error::input(format!(
                "cuda: {e} (build with the `cuda` feature, on a machine with CUDA)"
            ))
        }),
        other => Err(Error::input(format!(
            "unknown device `{other}` (expected cpu or cuda)"
        ))),
    }
}

/// The weights of a model, dense f32 (see [`llama::Weights`]).
///
/// # Errors
///
/// An input error naming the file or folder when it cannot be read or is not a
/// supported (llama, qwen2) model.
pub fn load_model(source: &ModelSource, device: &Device) -> Result<Model> {
    let path = source.path();
    let cannot = |e: candle_core::Error| {
        Error::input(format!("{}: cannot load the model: {e}", path.display()))
    };
    match source {
        ModelSource::Gguf(p) => {
            let ct = read_gguf(p)?;
            let mut f = std::fs::File::open(p).map_err(|e| Error::io(p, "open", e))?;
            Model::from_gguf(&ct, &mut f, device, llama::Weights::Dense).map_err(cannot)
        }
        ModelSource::HfDir(d) => llama::hf::load_dir(d, device).map_err(cannot),
    }
}

impl EmbeddedBackend {
    /// Loads a GGUF model (llama or qwen2 architecture, any quantization candle reads)
    /// or a Hugging Face folder (config.json, *.safetensors, tokenizer files).
    /// `max_batch` (at least 1) bounds the sequences decoded together.
    ///
    /// # Errors
    ///
    /// An input error when the model or its chat format cannot be read, or when no
    /// end-of-turn token is known (generation could not stop).
    pub fn load(source: &ModelSource, device: &Device, max_batch: usize) -> Result<Self> {
        let format = source.chat_format()?;
        let path = source.path().to_path_buf();
        let model = load_model(source, device)?;
        if format.stop_ids.is_empty() {
            return Err(Error::input(format!(
                "{}: no end-of-turn token found; generation could not stop",
                path.display()
            )));
        }
        Ok(EmbeddedBackend {
            model,
            format,
            path,
            max_batch: max_batch.max(1),
            sessions: Mutex::new(Sessions::new(Self::DEFAULT_SESSION_BUDGET)),
            joins: Default::default(),
        })
    }

    /// Bytes of kept conversation caches by default: 1 GiB (about 45 000 positions of
    /// the default model, whose f16 keys and values take 23 KB a position).
    pub const DEFAULT_SESSION_BUDGET: usize = 1 << 30;

    /// Keeps at most `bytes` of conversations' KV caches between calls (least recently
    /// used dropped first; a dropped conversation is prefilled in full at its next turn).
    /// 0 keeps none: every prompt is prefilled in full, with the same replies.
    pub fn set_session_budget(&mut self, bytes: usize) {
        self.sessions
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .set_budget(bytes);
    }

    /// Positions prefilled and positions taken from kept caches since the backend was
    /// loaded: what the sessions saved.
    pub fn prefill_counts(&self) -> (usize, usize) {
        let s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        (s.computed, s.reused)
    }

    /// Under continuous batching ([`gatt::backend::ChatBackend::generate_each`]) since the
    /// backend was loaded: rows that joined the running batch in the place of a row that
    /// was done (one row's keys and values written), and rebuilds of the batch's cache
    /// (every running row's copied).
    pub fn join_counts(&self) -> (usize, usize) {
        (
            self.joins.placed.load(Ordering::Relaxed),
            self.joins.rebuilt.load(Ordering::Relaxed),
        )
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &llama::Config {
        &self.model.cfg
    }

    /// Tokens of the prompt the model sees for `messages` (with the generation prompt).
    pub fn prompt_tokens(&self, messages: &[gatt::Message]) -> Result<Vec<u32>> {
        let text = self.format.template.render(messages, true)?;
        let enc = self
            .format
            .tokenizer
            .encode(text.as_str(), false)
            .map_err(|e| Error::runtime(format!("tokenizer: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// [`EmbeddedBackend::prompt_tokens`], refused when empty or not shorter than the
    /// model's context.
    fn checked_prompt(&self, messages: &[gatt::Message]) -> Result<Vec<u32>> {
        let ctx = self.model.cfg.context_length;
        let prompt = self.prompt_tokens(messages)?;
        if prompt.len() >= ctx {
            return Err(Error::input(format!(
                "a prompt of {} tokens does not fit the model's context of {ctx} tokens",
                prompt.len()
            )));
        }
        if prompt.is_empty() {
            return Err(Error::input("the chat template rendered an empty prompt"));
        }
        Ok(prompt)
    }

    /// Decodes one batch of prompts together, left-padded, `samplers[s]` choosing the
    /// tokens of `prompts[s]` (one sampler per prompt). Each sequence gets at most
    /// `max_new` tokens, fewer when the longest prompt leaves less room in the context.
    /// Returns each sequence's generated ids (without the end-of-turn token) and whether
    /// it stopped at an end-of-turn token (false: cut at the limit).
    pub fn decode_batch(
        &self,
        prompts: &[Vec<u32>],
        samplers: &mut [Sampler],
        max_new: usize,
    ) -> Result<Vec<(Vec<u32>, bool)>> {
        let dev = self.model.device();
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let ctx = self.model.cfg.context_length;
        let max_new = max_new.min(ctx.saturating_sub(longest));
        let mut cache = self.model.sampling_cache(longest + max_new);
        let batch = llama::pad_prompts(prompts, self.format.stop_ids[0], dev)?;
        let logits = self
            .model
            .forward(&batch.tokens, &batch.positions, &batch.pad, &mut cache)?;
        let mut rows = llama::logits_rows(&logits)?;
        let mut out: Vec<(Vec<u32>, bool)> = vec![(Vec::new(), false); prompts.len()];
        let mut context: Vec<Vec<u32>> = prompts.to_vec();
        for _ in 0..max_new {
            let Some(next) = self.sample_step(&mut rows, samplers, &mut context, &mut out, max_new)
            else {
                break;
            };
            let (tokens, positions) = llama::step_inputs(&next, &batch.pad, cache.len(), dev)?;
            let logits = self
                .model
                .forward(&tokens, &positions, &batch.pad, &mut cache)?;
            rows = llama::logits_rows(&logits)?;
        }
        Ok(out)
    }

    /// One decoding step's choice for every sequence: `samplers[s]` picks from `rows[s]`
    /// given `context[s]`; a token that ends the turn marks `out[s]` stopped, any other is
    /// added to `out[s]` and `context[s]`. A sequence already stopped or at `max_new`
    /// tokens gets the end-of-turn token (its row is computed but not used). `None` once
    /// every sequence is done.
    fn sample_step(
        &self,
        rows: &mut [Vec<f32>],
        samplers: &mut [Sampler],
        context: &mut [Vec<u32>],
        out: &mut [(Vec<u32>, bool)],
        max_new: usize,
    ) -> Option<Vec<u32>> {
        let stop = &self.format.stop_ids;
        let mut next = Vec::with_capacity(rows.len());
        for (s, row) in rows.iter_mut().enumerate() {
            let done = out[s].1 || out[s].0.len() >= max_new;
            let tok = if done {
                stop[0]
            } else {
                let t = samplers[s].sample(row, &context[s]);
                if stop.contains(&t) {
                    out[s].1 = true;
                } else {
                    out[s].0.push(t);
                    context[s].push(t);
                }
                t
            };
            next.push(tok);
        }
        let all_done = out
            .iter()
            .all(|(ids, stopped)| *stopped || ids.len() >= max_new);
        (!all_done).then_some(next)
    }

    /// Prefills `tokens` from the first `reuse.len()` positions' kept keys and values:
    /// one sequence, on the CPU.
    fn prefill(&self, tokens: Vec<u32>, reuse: Option<SeqKv>) -> Result<Prefilled> {
        let dev = self.model.device();
        let dtype = self.model.sampling_cache(0).dtype();
        let start = reuse.as_ref().map_or(0, SeqKv::len);
        let new = tokens.len() - start;
        let mut cache = match &reuse {
            Some(kv) => llama::Cache::from_sequences(&self.model.cfg, &[kv], new, dtype)?.0,
            None => llama::Cache::with_dtype(&self.model.cfg, tokens.len(), dtype),
        };
        let ids = Tensor::from_vec(tokens[start..].to_vec(), (1, new), dev)?;
        let positions: Vec<u32> = (start..tokens.len()).map(|p| p as u32).collect();
        let positions = Tensor::from_vec(positions, (1, new), dev)?;
        let logits = self.model.forward(&ids, &positions, &[0], &mut cache)?;
        let logits = llama::logits_rows(&logits)?.remove(0);
        let kv = Arc::new(cache.sequence(0, 0, tokens.len())?);
        Ok(Prefilled {
            tokens,
            logits,
            kv,
            reused: start,
        })
    }

    /// Decodes the prompts of `jobs` (prefilled, each with its sampler) together on the
    /// CPU; like [`EmbeddedBackend::decode_batch`], plus each sequence's tokens fed to the
    /// cache after its prompt and (when `keep`) their keys and values.
    fn decode_prefilled(
        &self,
        jobs: &[&Prefilled],
        samplers: &mut [Sampler],
        max_new: usize,
        keep: bool,
    ) -> Result<Vec<(Vec<u32>, bool, Branch)>> {
        let dev = self.model.device();
        let longest = jobs.iter().map(|j| j.tokens.len()).max().unwrap_or(0);
        let ctx = self.model.cfg.context_length;
        let max_new = max_new.min(ctx.saturating_sub(longest));
        let dtype = self.model.sampling_cache(0).dtype();
        let kvs: Vec<&SeqKv> = jobs.iter().map(|j| j.kv.as_ref()).collect();
        let (mut cache, pad) = llama::Cache::from_sequences(&self.model.cfg, &kvs, max_new, dtype)?;
        let mut rows: Vec<Vec<f32>> = jobs.iter().map(|j| j.logits.clone()).collect();
        let mut out: Vec<(Vec<u32>, bool)> = vec![(Vec::new(), false); jobs.len()];
        let mut context: Vec<Vec<u32>> = jobs.iter().map(|j| j.tokens.clone()).collect();
        // Tokens fed to the cache after each prompt, in order.
        let mut fed: Vec<Vec<u32>> = vec![Vec::new(); jobs.len()];
        for _ in 0..max_new {
            let Some(next) = self.sample_step(&mut rows, samplers, &mut context, &mut out, max_new)
            else {
                break;
            };
            for (f, &t) in fed.iter_mut().zip(&next) {
                f.push(t);
            }
            let (tokens, positions) = llama::step_inputs(&next, &pad, cache.len(), dev)?;
            let logits = self.model.forward(&tokens, &positions, &pad, &mut cache)?;
            rows = llama::logits_rows(&logits)?;
        }
        let mut result = Vec::with_capacity(jobs.len());
        for (s, ((ids, stopped), fed)) in out.into_iter().zip(fed).enumerate() {
            let prompt = jobs[s].tokens.len();
            let reply = if fed.is_empty() || !keep {
                None
            } else {
                Some(cache.sequence(s, pad[s] + prompt, fed.len())?)
            };
            let branch = Branch::new(&jobs[s].tokens, &jobs[s].kv, fed, reply);
            result.push((ids, stopped, branch));
        }
        Ok(result)
    }

    /// Replies to `requests` on the CPU, reusing and keeping conversations' caches.
    fn generate_cpu(
        &self,
        requests: &[Request],
        prompts: Vec<Vec<u32>>,
        params: &SamplingParams,
    ) -> Result<Vec<Vec<Reply>>> {
        let n = params.n.max(1);
        // Kept caches change nothing only where positions are computed independently.
        let exact = self.model.positions_independent();
        let keep = exact
            && self.lock_sessions().budget() > 0
            && requests.iter().any(|r| r.conversation.is_some());
        let mut prefilled = Vec::with_capacity(requests.len());
        for (req, prompt) in requests.iter().zip(prompts) {
            let reuse = match &req.conversation {
                Some(_) if exact => self.lock_sessions().reusable(&prompt)?,
                _ => None,
            };
            let p = self.prefill(prompt, reuse)?;
            self.lock_sessions()
                .count(p.tokens.len() - p.reused, p.reused);
            prefilled.push(p);
        }
        let jobs: Vec<(usize, u64)> = requests
            .iter()
            .enumerate()
            .flat_map(|(r, req)| (0..n).map(move |c| (r, candidate_seed(req.seed, c))))
            .collect();
        let mut replies: Vec<Vec<Reply>> = vec![Vec::with_capacity(n); requests.len()];
        let mut branches: Vec<Vec<Branch>> = (0..requests.len()).map(|_| Vec::new()).collect();
        for chunk in jobs.chunks(self.max_batch) {
            let batch: Vec<&Prefilled> = chunk.iter().map(|j| &prefilled[j.0]).collect();
            let mut samplers: Vec<Sampler> =
                chunk.iter().map(|j| Sampler::new(params, j.1)).collect();
            let outs = self.decode_prefilled(&batch, &mut samplers, params.max_new_tokens, keep)?;
            for ((r, _), (ids, stopped, branch)) in chunk.iter().zip(outs) {
                replies[*r].push(self.reply(&ids, stopped, prefilled[*r].tokens.len())?);
                branches[*r].push(branch);
            }
        }
        let mut sessions = self.lock_sessions();
        for (req, kept) in requests.iter().zip(branches) {
            match &req.conversation {
                Some(key) if exact => sessions.keep(key, kept),
                _ => {}
            }
        }
        Ok(replies)
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The reply of generated `ids`.
    fn reply(&self, ids: &[u32], stopped: bool, prompt_tokens: usize) -> Result<Reply> {
        let text = self
            .format
            .tokenizer
            .decode(ids, true)
            .map_err(|e| Error::runtime(format!("tokenizer: {e}")))?;
        Ok(Reply {
            text: text.trim().to_string(),
            prompt_tokens,
            completion_tokens: ids.len(),
            finished: stopped,
        })
    }
}

impl ChatBackend for EmbeddedBackend {
    fn describe(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    fn preferred_batch(&self) -> usize {
        self.max_batch
    }

    fn end_conversation(&self, key: &str) {
        self.lock_sessions().forget(key);
    }

    /// On the CPU, with positions computed independently
    /// ([`Model::positions_independent`]), one running batch that candidates join and
    /// leave step by step (`continuous.rs`); elsewhere batches of
    /// [`ChatBackend::preferred_batch`] requests ([`generate_in_batches`]).
    fn generate_each(&self, feed: &mut dyn Feed) -> Result<()> {
        if self.model.positions_independent() {
            self.decode_continuously(feed)
        } else {
            generate_in_batches(self, feed)
        }
    }

    fn generate(&self, requests: &[Request], params: &SamplingParams) -> Result<Vec<Vec<Reply>>> {
        let n = params.n.max(1);
        let prompts = requests
            .iter()
            .map(|req| self.checked_prompt(&req.messages))
            .collect::<Result<Vec<_>>>()?;
        if self.model.device().is_cpu() {
            return self
                .generate_cpu(requests, prompts, params)
                .map_err(|e| Error::runtime(format!("generation failed: {e}")));
        }
        // Every (request, candidate) pair is one sequence of the batch.
        let mut jobs = Vec::with_capacity(requests.len() * n);
        for (r, (req, prompt)) in requests.iter().zip(&prompts).enumerate() {
            for c in 0..n {
                jobs.push((r, prompt, candidate_seed(req.seed, c)));
            }
        }
        let mut replies: Vec<Vec<Reply>> = vec![Vec::with_capacity(n); requests.len()];
        for chunk in jobs.chunks(self.max_batch) {
            let prompts: Vec<Vec<u32>> = chunk.iter().map(|j| j.1.clone()).collect();
            let mut samplers: Vec<Sampler> =
                chunk.iter().map(|j| Sampler::new(params, j.2)).collect();
            let outs = self
                .decode_batch(&prompts, &mut samplers, params.max_new_tokens)
                .map_err(|e| Error::runtime(format!("generation failed: {e}")))?;
            for ((r, prompt, _), (ids, stopped)) in chunk.iter().zip(outs) {
                replies[*r].push(self.reply(&ids, stopped, prompt.len())?);
            }
        }
        Ok(replies)
    }
}
