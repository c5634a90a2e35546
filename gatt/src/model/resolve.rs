//! Which tokenizer and chat template to use, from what the user named: a model, or a
//! tokenizer file or folder, and a chat template ([`AUTO_TEMPLATE`]: the model's own).

use super::format::{load_template, ChatFormat};
use super::ModelSource;
use crate::error::Error;
use std::path::Path;

/// The template name that means "the model's own chat template".
pub const AUTO_TEMPLATE: &str = "auto";

/// Why no chat format could be resolved. The first three variants are about what the
/// caller named (a front end can tell its user which option to fix); the last wraps
/// every other failure (a file that cannot be read, a template that does not parse).
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Neither a model nor a tokenizer was named.
    #[error(
        "no tokenizer given: name a model (`default`, a .gguf file or a model folder) or a \
         tokenizer.json"
    )]
    NoSource,
    /// The model or tokenizer holds no chat template and none was named; the message says
    /// where none was found (e.g. "m.gguf: GGUF has no `tokenizer.chat_template`").
    #[error("{0}")]
    NoTemplate(String),
    /// The model named could not be resolved ([`ModelSource::resolve`]'s error).
    #[error(transparent)]
    Model(Error),
    /// Any other failure.
    #[error(transparent)]
    Other(#[from] Error),
}

impl From<FormatError> for Error {
    /// A missing source or template is the input's fault.
    fn from(e: FormatError) -> Self {
        match e {
            FormatError::NoSource | FormatError::NoTemplate(_) => Error::input(e.to_string()),
            FormatError::Model(e) | FormatError::Other(e) => e,
        }
    }
}

/// The tokenizer and chat template of `model` (`default`, a .gguf file or a model folder)
/// or of `tokenizer` (a tokenizer.json, whose folder's tokenizer_config.json gives the
/// template, or a model folder); `model` wins when both are given.
///
/// `template` is [`AUTO_TEMPLATE`] for the model's own, or a built-in name, a .jinja
/// file or a tokenizer_config.json that replaces it (then a model without a template of
/// its own is fine).
///
/// # Errors
///
/// [`FormatError::NoSource`] when neither is given, [`FormatError::NoTemplate`] when the
/// template is `auto` and there is none, [`FormatError::Model`] when the model cannot be
/// found or fetched, [`FormatError::Other`] for anything else.
pub fn resolve_format(
    model: Option<&str>,
    tokenizer: Option<&Path>,
    template: &str,
) -> Result<ChatFormat, FormatError> {
    let explicit = template != AUTO_TEMPLATE;
    let source = match (model, tokenizer) {
        (Some(m), _) => ModelSource::resolve(m).map_err(FormatError::Model)?,
        (None, Some(p)) if p.is_dir() => ModelSource::HfDir(p.to_path_buf()),
        (None, Some(p)) => return from_tokenizer_file(p, template),
        (None, None) => return Err(FormatError::NoSource),
    };
    let format = match source.try_chat_format() {
        Ok(f) => f,
        // A model without a template of its own is fine when the caller names one.
        Err(FormatError::NoTemplate(_)) if explicit => ChatFormat::bare(source.tokenizer()?)?,
        Err(e) => return Err(e),
    };
    if explicit {
        Ok(format.with_template(load_template(template)?)?)
    } else {
        Ok(format)
    }
}

/// A tokenizer.json file: the template comes from its folder unless one is named, and a
/// file under another name has only its tokenizer used.
fn from_tokenizer_file(path: &Path, template: &str) -> Result<ChatFormat, FormatError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let format = match ChatFormat::from_hf_dir(dir) {
        Ok(f) if path.file_name() == Some("tokenizer.json".as_ref()) => f,
        _ if template == AUTO_TEMPLATE => {
            return Err(FormatError::NoTemplate(format!(
                "{}: no chat template next to this tokenizer",
                path.display()
            )))
        }
        _ => ChatFormat::bare(crate::tokenizer::from_json_file(path)?)?,
    };
    if template == AUTO_TEMPLATE {
        Ok(format)
    } else {
        Ok(format.with_template(load_template(template)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/golden");

    /// A folder holding only the fixture tokenizer, under `name`.
    fn lone_tokenizer(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::copy(Path::new(FIXTURES).join("smollm2_tokenizer.json"), &path).unwrap();
        (dir, path)
    }

    /// The error of a resolution that must fail (`ChatFormat` is not `Debug`).
    fn err(r: Result<ChatFormat, FormatError>) -> FormatError {
        match r {
            Ok(_) => panic!("resolved"),
            Err(e) => e,
        }
    }

    #[test]
    fn nothing_named_is_no_source() {
        let e = err(resolve_format(None, None, AUTO_TEMPLATE));
        assert!(matches!(e, FormatError::NoSource), "{e}");
        assert!(Error::from(e).is_input());
    }

    #[test]
    fn a_tokenizer_without_a_template_needs_one_named() {
        let (_dir, path) = lone_tokenizer("tokenizer.json");
        let e = err(resolve_format(None, Some(&path), AUTO_TEMPLATE));
        let FormatError::NoTemplate(what) = &e else {
            panic!("{e}")
        };
        assert!(
            what.contains("no chat template next to this tokenizer"),
            "{what}"
        );
        let f = resolve_format(None, Some(&path), "chatml").unwrap();
        assert!(f.template.source.contains("<|im_start|>"));
        assert!(!f.stop_ids.is_empty());
    }

    #[test]
    fn a_missing_model_is_a_model_error() {
        let e = err(resolve_format(
            Some("/nonexistent/m.gguf"),
            None,
            AUTO_TEMPLATE,
        ));
        assert!(matches!(e, FormatError::Model(_)), "{e}");
        assert!(e.to_string().contains("no such file or folder"), "{e}");
    }

    #[test]
    fn an_unknown_template_is_another_error() {
        let (_dir, path) = lone_tokenizer("tok.json");
        let e = err(resolve_format(None, Some(&path), "nosuch"));
        assert!(matches!(e, FormatError::Other(_)), "{e}");
        assert!(
            e.to_string().contains("unknown chat template `nosuch`"),
            "{e}"
        );
    }
}
