//! The in-process backend: a GGUF model on candle, decoding many conversations at once.

use crate::llama::{self, Model};
use crate::sampling::Sampler;
use candle_core::Device;
use gatt::backend::SamplingParams;
use gatt::backend::{candidate_seed, ChatBackend, Reply, Request};
use gatt::model::{read_gguf, ChatFormat, ModelSource};
use gatt::{Error, Result};
use std::path::PathBuf;

/// A chat model run in this process, as a [`ChatBackend`]: each request's `n` candidates
/// are sequences of one batch (at most `max_batch` sequences decode together), sampled
/// by a [`Sampler`] seeded with [`candidate_seed`]. Replies are decoded without special
/// tokens and trimmed.
pub struct EmbeddedBackend {
    model: Model,
    /// Chat template, tokenizer and end-of-turn ids (`stop_ids`, never empty) of the
    /// model source.
    pub format: ChatFormat,
    path: PathBuf,
    max_batch: usize,
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
        })
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
            let mut next = Vec::with_capacity(prompts.len());
            for (s, row) in rows.iter_mut().enumerate() {
                let done = out[s].1 || out[s].0.len() >= max_new;
                let tok = if done {
                    self.format.stop_ids[0]
                } else {
                    let t = samplers[s].sample(row, &context[s]);
                    if self.format.stop_ids.contains(&t) {
                        out[s].1 = true;
                    } else {
                        out[s].0.push(t);
                        context[s].push(t);
                    }
                    t
                };
                next.push(tok);
            }
            if out
                .iter()
                .all(|(ids, stopped)| *stopped || ids.len() >= max_new)
            {
                break;
            }
            let (tokens, positions) = llama::step_inputs(&next, &batch.pad, cache.len(), dev)?;
            let logits = self
                .model
                .forward(&tokens, &positions, &batch.pad, &mut cache)?;
            rows = llama::logits_rows(&logits)?;
        }
        Ok(out)
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

    fn generate(&self, requests: &[Request], params: &SamplingParams) -> Result<Vec<Vec<Reply>>> {
        let n = params.n.max(1);
        let ctx = self.model.cfg.context_length;
        // Every (request, candidate) pair is one sequence of the batch.
        let mut jobs = Vec::with_capacity(requests.len() * n);
        for (r, req) in requests.iter().enumerate() {
            let prompt = self.prompt_tokens(&req.messages)?;
            if prompt.len() >= ctx {
                return Err(Error::input(format!(
                    "a prompt of {} tokens does not fit the model's context of {ctx} tokens",
                    prompt.len()
                )));
            }
            for c in 0..n {
                jobs.push((r, prompt.clone(), candidate_seed(req.seed, c)));
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
                let text = self
                    .format
                    .tokenizer
                    .decode(&ids, true)
                    .map_err(|e| Error::runtime(format!("tokenizer: {e}")))?;
                replies[*r].push(Reply {
                    text: text.trim().to_string(),
                    prompt_tokens: prompt.len(),
                    completion_tokens: ids.len(),
                    finished: stopped,
                });
            }
        }
        Ok(replies)
    }
}
