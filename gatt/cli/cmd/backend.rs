//! Flags that choose the chat model: the embedded GGUF model or an HTTP server.

use gatt::backend::{ChatBackend, HttpBackend, HttpOptions, SamplingParams};
use gatt::model::{ModelSource, DEFAULT_MODEL};
use gatt::{Error, Result};
use gatt_runtime::EmbeddedBackend;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct BackendArgs {
    /// Chat model run in-process: `default` (SmolLM2-135M-Instruct, fetched on first use),
    /// a .gguf file or a Hugging Face folder (llama or qwen2 architecture, e.g. from
    /// `gatt train merge`). `gatt eval` takes several.
    #[arg(
        long = "model",
        value_name = "M",
        default_value = DEFAULT_MODEL,
        conflicts_with = "endpoint"
    )]
    pub models: Vec<String>,
    /// Use an OpenAI-compatible server instead (vLLM, SGLang, TGI, llama.cpp), e.g.
    /// http://127.0.0.1:8000.
    #[arg(long, value_name = "URL", requires = "api_model")]
    pub endpoint: Option<String>,
    /// Model name to send to --endpoint.
    #[arg(long, value_name = "NAME")]
    pub api_model: Option<String>,
    /// Name of the environment variable holding the API key (never printed).
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
    /// Requests in flight against --endpoint.
    #[arg(long, default_value_t = HttpOptions::DEFAULT_IN_FLIGHT)]
    pub in_flight: usize,
    /// Seconds before a request to --endpoint is abandoned (and retried).
    #[arg(long, default_value_t = HttpOptions::DEFAULT_TIMEOUT.as_secs())]
    pub timeout: u64,
    /// Conversations decoded together by the embedded model.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// MiB of dialogues' KV caches the embedded model keeps between turns, so that a
    /// turn prefills only its new tokens (replies are the same with any value; a dialogue
    /// dropped for room is prefilled in full). 0 keeps none.
    #[arg(long, value_name = "MIB", default_value_t = EmbeddedBackend::DEFAULT_SESSION_BUDGET >> 20)]
    pub session_cache: usize,
    /// Device of the embedded model: cpu, or cuda (build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Chat template arguments of the chat model (sent to --endpoint as
    /// `chat_template_kwargs`).
    #[command(flatten)]
    pub template_args: super::TemplateArgFlags,
}

impl BackendArgs {
    /// The one model of commands that take one.
    pub fn model(&self) -> Result<&str> {
        match self.models.as_slice() {
            [m] => Ok(m),
            [] => Ok(DEFAULT_MODEL),
            _ => Err(Error::input("this command takes one --model")),
        }
    }

    /// A copy that runs `model`.
    pub fn with_model(&self, model: &str) -> Self {
        BackendArgs {
            models: vec![model.to_string()],
            ..self.clone()
        }
    }

    /// The backend these flags name; errors about the model name `--model`.
    pub fn load(&self) -> Result<Box<dyn ChatBackend>> {
        self.load_as("--model", "--endpoint")
    }

    /// [`BackendArgs::load`], for a model given by the flag `model_flag` or a server by
    /// `endpoint_flag`.
    pub fn load_as(&self, model_flag: &str, endpoint_flag: &str) -> Result<Box<dyn ChatBackend>> {
        if let Some(url) = &self.endpoint {
            let scheme_ok = ["http://", "https://"]
                .iter()
                .any(|s| url.to_ascii_lowercase().starts_with(s) && url.len() > s.len());
            if !scheme_ok {
                let (shown, _) = gatt::backend::redact_url(url);
                return Err(Error::input(format!(
                    "{endpoint_flag} {shown}: not an http:// or https:// URL (e.g. \
                     http://127.0.0.1:8000/v1)"
                )));
            }
            let mut o = HttpOptions::new(url, self.api_model.clone().unwrap_or_default());
            if let Some(var) = &self.api_key_env {
                let key = std::env::var(var).map_err(|_| {
                    Error::input(format!(
                        "--api-key-env {var}: that environment variable is not set (or is \
                         not UTF-8)"
                    ))
                })?;
                if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(Error::input(format!(
                        "--api-key-env {var}: the key is empty or holds spaces, line breaks \
                         or non-ASCII characters, which an HTTP header cannot carry"
                    )));
                }
                o.api_key = Some(key);
            }
            o.in_flight = self.in_flight.max(1);
            o.timeout = Duration::from_secs(self.timeout.max(1));
            o.chat_template_kwargs = self.template_args.args();
            return Ok(Box::new(HttpBackend::new(o)));
        }
        let source = model_source(model_flag, self.model()?)?;
        let device = gatt_runtime::device(&self.device).map_err(|e| e.context("--device"))?;
        let mut backend = EmbeddedBackend::load(&source, &device, self.batch)
            .map_err(|e| e.context(model_flag))?;
        self.template_args.apply(&mut backend.format.template)?;
        backend.set_session_budget(self.session_cache.saturating_mul(1 << 20));
        Ok(Box::new(backend))
    }
}

/// The judge model's flags, shared by `gatt eval` and `gatt synth` (same names, same
/// backends).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct JudgeArgs {
    /// A judge model (`default`, .gguf, folder) asked yes or no, at every turn, whether a
    /// reply keeps the instruction's persona, hobby and figure. `gatt eval` reports its
    /// verdicts apart, as `MODEL (judge)`; `gatt synth` weighs them in the choice among
    /// --candidates and in --min-adherence.
    #[arg(long, value_name = "M", conflicts_with = "judge_endpoint")]
    pub judge_model: Option<String>,
    /// A judge behind an OpenAI-compatible server (uses --judge-api-model and
    /// --api-key-env).
    #[arg(long, value_name = "URL", requires = "judge_api_model")]
    pub judge_endpoint: Option<String>,
    /// Model name to send to --judge-endpoint.
    #[arg(long, value_name = "NAME", requires = "judge_endpoint")]
    pub judge_api_model: Option<String>,
}

impl JudgeArgs {
    /// The judge flag given (`--judge-model` or `--judge-endpoint`), if any.
    pub fn flag(&self) -> Option<&'static str> {
        match (&self.judge_model, &self.judge_endpoint) {
            (Some(_), _) => Some("--judge-model"),
            (None, Some(_)) => Some("--judge-endpoint"),
            (None, None) => None,
        }
    }

    /// The judge's backend, if one was asked for. It shares the chat model's server and
    /// runtime settings (--api-key-env, --in-flight, --timeout, --batch, --device), not
    /// its chat template arguments.
    pub fn load(&self, chat: &BackendArgs) -> Result<Option<Box<dyn ChatBackend>>> {
        let judge = match (&self.judge_model, &self.judge_endpoint) {
            (Some(m), _) => {
                let judge = BackendArgs {
                    endpoint: None,
                    template_args: Default::default(),
                    ..chat.with_model(m)
                };
                return judge.load_as("--judge-model", "--judge-endpoint").map(Some);
            }
            (None, Some(url)) => BackendArgs {
                endpoint: Some(url.clone()),
                api_model: self.judge_api_model.clone(),
                template_args: Default::default(),
                ..chat.clone()
            },
            (None, None) => return Ok(None),
        };
        let backend = judge.load_as("--judge-model", "--judge-endpoint")?;
        // A judge is asked only after replies were sampled: find an unreachable server
        // now, not after minutes of work.
        backend
            .check_ready()
            .map_err(|e| e.context("--judge-endpoint"))?;
        Ok(Some(backend))
    }
}

/// The model `spec` names; an error says which flag named it.
pub fn model_source(flag: &str, spec: &str) -> Result<ModelSource> {
    ModelSource::resolve(spec).map_err(|e| e.context(flag))
}

/// Sampling flags shared by every command that generates.
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Maximum tokens per reply [default: 192; gatt synth: 320, so that replies finish].
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = SamplingParams::DEFAULT_TEMPERATURE)]
    pub temperature: f64,
    #[arg(long, default_value_t = SamplingParams::DEFAULT_TOP_P)]
    pub top_p: f64,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long, default_value_t = SamplingParams::DEFAULT_REPETITION_PENALTY)]
    pub repetition_penalty: f32,
}

impl SamplingArgs {
    /// The sampling settings, `default_max_tokens` unless --max-tokens is given.
    pub fn params(&self, n: usize, default_max_tokens: usize) -> SamplingParams {
        SamplingParams {
            max_new_tokens: self.max_tokens.unwrap_or(default_max_tokens),
            temperature: self.temperature,
            top_p: Some(self.top_p),
            top_k: self.top_k,
            repetition_penalty: self.repetition_penalty,
            n,
        }
    }
}
