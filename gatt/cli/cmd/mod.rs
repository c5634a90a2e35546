pub mod backend;
pub mod constraints;
pub mod eval;
pub mod generate;
pub mod inspect;
pub mod mask;
pub mod model;
pub mod report;
pub mod synth;
pub mod templates;
pub mod train;

use gatt::model::{load_template, ChatFormat, ModelSource};
use gatt::{Error, Result};
use std::path::{Path, PathBuf};

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
    /// a .jinja file, or a tokenizer_config.json.
    #[arg(long, value_name = "NAME|PATH", default_value = "auto")]
    pub template: String,
}

impl FormatArgs {
    pub fn load(&self) -> Result<ChatFormat> {
        let explicit = self.template != "auto";
        let source =
            match (&self.model, &self.tokenizer) {
                (Some(m), _) => ModelSource::resolve(m)?,
                (None, Some(p)) if p.is_dir() => ModelSource::HfDir(p.clone()),
                (None, Some(p)) => return from_tokenizer_file(p, &self.template),
                (None, None) => return Err(Error::input(
                    "pass --model M (default, a .gguf file or a model folder) or --tokenizer PATH",
                )),
            };
        let format = match source.chat_format() {
            Ok(f) => f,
            // A model without a template of its own is fine when --template names one.
            Err(_) if explicit => ChatFormat::bare(source.tokenizer()?)?,
            Err(e) => return Err(e),
        };
        if explicit {
            format.with_template(load_template(&self.template)?)
        } else {
            Ok(format)
        }
    }
}

fn from_tokenizer_file(path: &Path, template: &str) -> Result<ChatFormat> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let format = match ChatFormat::from_hf_dir(dir) {
        Ok(f) if path.file_name() == Some("tokenizer.json".as_ref()) => f,
        _ if template == "auto" => {
            return Err(Error::input(format!(
                "{}: no chat template next to this tokenizer; pass --template NAME|PATH",
                path.display()
            )))
        }
        _ => ChatFormat::bare(gatt::tokenizer::from_json_file(path)?)?,
    };
    if template == "auto" {
        Ok(format)
    } else {
        format.with_template(load_template(template)?)
    }
}
