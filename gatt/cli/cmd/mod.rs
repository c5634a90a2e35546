pub mod attention;
pub mod backend;
pub mod constraints;
pub mod eval;
pub mod generate;
pub mod inspect;
pub mod mask;
pub mod model;
pub mod report;
pub mod score;
pub mod synth;
pub mod templates;
pub mod train;

use gatt::model::{resolve_format, ChatFormat, FormatError, AUTO_TEMPLATE};
use gatt::template::{parse_template_arg, TemplateArgs};
use gatt::{Error, Result};
use std::path::PathBuf;

/// Where the tokenizer and chat template come from: `--model` or `--tokenizer`, with
/// `--template` overriding the template.
#[derive(clap::Args, Debug, Clone)]
pub struct FormatArgs {
    /// Model whose tokenizer and chat template to use: `default` (SmolLM2-135M-Instruct,
    /// fetched on first use), a .gguf file, or a Hugging Face model folder.
    #[arg(long, value_name = "M", conflicts_with = "tokenizer")]
    pub model: Option<String>,
    /// A tokenizer.json (its folder's tokenizer_config.json supplies the template), or a
    /// model folder.
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// Chat template: `auto` (the model's own), a built-in name (see `gatt templates`),
    /// a .jinja file, or a tokenizer_config.json. A .jinja file takes the tokenizer's own
    /// BOS and EOS (GGUF `tokenizer.ggml.bos/eos_token_id`, or the tokenizer_config.json
    /// or config.json next to tokenizer.json); where no end-of-turn token can be known,
    /// pass a tokenizer_config.json that names `eos_token`.
    #[arg(long, value_name = "NAME|PATH", default_value = AUTO_TEMPLATE)]
    pub template: String,
    #[command(flatten)]
    pub template_args: TemplateArgFlags,
}

impl FormatArgs {
    /// The files these flags read, each with its flag: what an output must not replace.
    pub fn input_files(&self) -> Vec<(&'static str, PathBuf)> {
        let mut files = Vec::new();
        match self.model.as_deref() {
            Some("default") => files.push(("--model", gatt::model::default_model_path())),
            Some(m) => files.push(("--model", PathBuf::from(m))),
            None => {}
        }
        if let Some(t) = &self.tokenizer {
            files.push(("--tokenizer", t.clone()));
        }
        files.push(("--template", PathBuf::from(&self.template)));
        files
    }
}

/// Refuses `out` when it is one of `inputs` (see [`gatt::dataset::refuse_overwriting_inputs`]),
/// naming `out_flag`.
pub fn refuse_overwriting(
    out_flag: &str,
    out: &std::path::Path,
    inputs: &[(&'static str, PathBuf)],
) -> Result<()> {
    let inputs: Vec<(&str, &std::path::Path)> =
        inputs.iter().map(|(f, p)| (*f, p.as_path())).collect();
    gatt::dataset::refuse_overwriting_inputs(out, &inputs).map_err(|e| e.context(out_flag))
}

/// Refuses samples (`--data`) stamped with another vocabulary than `tokenizer`'s, the
/// `--model`'s ([`gatt::dataset::TokenizerStamp`]); unstamped files (JSON lines, other
/// tools' Parquet) pass.
pub fn check_samples_tokenizer(
    data: &std::path::Path,
    tokenizer: &gatt::tokenizer::HfTokenizer,
) -> Result<()> {
    let Some(stamp) = gatt::dataset::read_stamp(data).map_err(|e| e.context("--data"))? else {
        return Ok(());
    };
    let model = gatt::dataset::TokenizerStamp::of(tokenizer);
    stamp
        .check_against(&model, data)
        .map_err(|e| e.context("--data and --model"))
}

/// `--template-arg KEY=VALUE`: keyword arguments of the chat template.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TemplateArgFlags {
    /// A variable of the chat template's context, as transformers'
    /// `apply_chat_template(**kwargs)` passes it (repeatable), e.g. `enable_thinking=false`
    /// for Qwen3. VALUE is read as JSON (false, 3, "text", [1, 2]), else as a plain string.
    /// The training samples and the prompts at inference must be rendered with the same
    /// arguments.
    #[arg(long = "template-arg", value_name = "KEY=VALUE", value_parser = parse_template_arg)]
    pub template_arg: Vec<(String, serde_json::Value)>,
}

impl TemplateArgFlags {
    /// The arguments by name (a later `KEY=` replaces an earlier one).
    pub fn args(&self) -> TemplateArgs {
        self.template_arg.iter().cloned().collect()
    }

    /// Sets these arguments on `template`.
    pub fn apply(&self, template: &mut gatt::template::ChatTemplate) -> Result<()> {
        template
            .set_args(self.args())
            .map_err(|e| e.context("--template-arg"))
    }
}

impl FormatArgs {
    /// The chat format these flags name; a missing tokenizer or template is reported
    /// with the flag that supplies it.
    pub fn load(&self) -> Result<ChatFormat> {
        let mut format = self.resolve()?;
        self.template_args.apply(&mut format.template)?;
        Ok(format)
    }

    fn resolve(&self) -> Result<ChatFormat> {
        resolve_format(
            self.model.as_deref(),
            self.tokenizer.as_deref(),
            &self.template,
        )
        .map_err(|e| match e {
            FormatError::NoSource => Error::input(
                "pass --model M (default, a .gguf file or a model folder) or --tokenizer PATH",
            ),
            FormatError::NoTemplate(what) => {
                Error::input(format!("{what}; pass --template NAME|PATH"))
            }
            FormatError::Model(e) => e.context("--model"),
            FormatError::Other(e) => e,
        })
    }
}
