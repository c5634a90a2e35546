//! Everything about a model but its weights.

use super::resolve::FormatError;
use crate::error::{Error, Result};
use crate::template::ChatTemplate;
use crate::tokenizer;
use candle_core::quantized::gguf_file;
use std::path::Path;
use tokenizers::Tokenizer;

/// Markers that close a turn in the common chat formats; those that are special tokens
/// of the model's tokenizer count as end-of-turn markers besides its EOS token.
const KNOWN_END_OF_TURN: [&str; 7] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<end_of_turn>",
    // Gemma 4.
    "<turn|>",
    "<|end|>",
    "<|endoftext|>",
    "</s>",
];

/// A model's tokenizer, chat template and stop tokens.
///
/// The end-of-turn markers (what closes an assistant reply, and what the loss mask
/// trains on after it) are the template's own, then the EOS token and the common markers
/// (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, `<turn|>`, `<|end|>`, `<|endoftext|>`, `</s>`) that
/// the template's source writes; EOS and those common markers count only when they are
/// special tokens of the tokenizer.
pub struct ChatFormat {
    /// The model's tokenizer, with its post-processor as loaded (the masker removes it:
    /// chat templates write their own special tokens).
    pub tokenizer: Tokenizer,
    /// The chat template; its `end_of_turn` holds the markers found for this model.
    pub template: ChatTemplate,
    /// Token ids that end generation (the end-of-turn markers and EOS).
    pub stop_ids: Vec<u32>,
}

impl ChatFormat {
    /// Reads the tokenizer and template from a GGUF file's metadata, under llama.cpp's
    /// keys: `tokenizer.ggml.*` (vocabulary, merges, token types, BOS/EOS ids) and
    /// `tokenizer.chat_template`.
    ///
    /// # Errors
    ///
    /// An input error when the file is not a readable GGUF, its tokenizer is of a kind
    /// this crate does not build, or it holds no chat template.
    pub fn from_gguf(path: &Path) -> Result<Self> {
        Ok(Self::try_from_gguf(path)?)
    }

    /// [`ChatFormat::from_gguf`], telling a missing template apart.
    pub(crate) fn try_from_gguf(path: &Path) -> Result<Self, FormatError> {
        let content = read_gguf(path)?;
        let ctx = |e: Error| e.context(path.display());
        let tok = tokenizer::from_gguf(&content).map_err(ctx)?;
        let source = content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok().cloned())
            .ok_or_else(|| {
                FormatError::NoTemplate(format!(
                    "{}: GGUF has no `tokenizer.chat_template`",
                    path.display()
                ))
            })?;
        let TokenizerSpecials { bos, eos } = TokenizerSpecials::of_gguf(&content);
        let template = ChatTemplate::new(
            format!("{} (tokenizer.chat_template)", path.display()),
            source,
            bos.clone().unwrap_or_default(),
            eos.clone().unwrap_or_default(),
            vec![],
        )?;
        Ok(Self::assemble(tok, template, eos.as_deref()))
    }

    /// Reads `tokenizer.json` and `tokenizer_config.json` (or `chat_template.jinja`), as
    /// `transformers` lays out a model folder: the template is `chat_template` (a string,
    /// or a list of named templates of which `default`, else the first, is used), BOS and
    /// EOS are `bos_token` and `eos_token` (a string or an object with `content`).
    ///
    /// # Errors
    ///
    /// An input error when a file is missing or malformed, or there is no chat template.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        Ok(Self::try_from_hf_dir(dir)?)
    }

    /// [`ChatFormat::from_hf_dir`], telling a missing template apart.
    pub(crate) fn try_from_hf_dir(dir: &Path) -> Result<Self, FormatError> {
        let tok = tokenizer::from_json_file(&dir.join("tokenizer.json"))?;
        let cfg = read_json_or_null(&dir.join("tokenizer_config.json"))?;
        // As transformers renders: the tokens of tokenizer_config.json only.
        let TokenizerSpecials { bos, eos } = TokenizerSpecials::of_tokenizer_config(&cfg);
        let source = match template_from_config(&cfg) {
            Some(s) => s,
            None => std::fs::read_to_string(dir.join("chat_template.jinja")).map_err(|_| {
                FormatError::NoTemplate(format!(
                    "{}: no chat_template in tokenizer_config.json and no chat_template.jinja",
                    dir.display()
                ))
            })?,
        };
        let template = ChatTemplate::new(
            format!("{} (chat_template)", dir.display()),
            source,
            bos.unwrap_or_default(),
            eos.clone().unwrap_or_default(),
            vec![],
        )?;
        Ok(Self::assemble(tok, template, eos.as_deref()))
    }

    /// Uses another template (built-in name, .jinja file, tokenizer_config.json) with
    /// this model's tokenizer; every template marker must be a token of the tokenizer.
    /// An empty BOS or EOS of `template` is taken from the current one (for a
    /// [`ChatFormat::bare`] format, the tokenizer's own); the end-of-turn markers and stop
    /// ids are worked out again.
    ///
    /// # Errors
    ///
    /// An input error when an end-of-turn marker or the EOS of `template` is not a token
    /// of this tokenizer (template and tokenizer of different models), or when no
    /// end-of-turn marker is known: the template names none, the tokenizer has no EOS
    /// token, and the template writes none of the common markers.
    pub fn with_template(self, mut template: ChatTemplate) -> Result<Self> {
        if template.bos_token.is_empty() {
            template.bos_token = self.template.bos_token.clone();
        }
        if template.eos_token.is_empty() {
            template.eos_token = self.template.eos_token.clone();
        }
        let eos = template.eos_token.clone();
        for marker in template.end_of_turn.iter().chain(std::iter::once(&eos)) {
            if !marker.is_empty() && self.tokenizer.token_to_id(marker).is_none() {
                return Err(Error::input(format!(
                    "chat template {} ends turns with `{marker}`, which is not a token of this \
                     tokenizer: template and tokenizer belong to different models",
                    template.origin
                )));
            }
        }
        let eos = (!eos.is_empty()).then_some(eos);
        let format = Self::assemble(self.tokenizer, template, eos.as_deref());
        if format.template.end_of_turn.is_empty() {
            return Err(Error::input(format!(
                "chat template {}: the end-of-turn token is not known: the tokenizer names no \
                 EOS token (GGUF `tokenizer.ggml.eos_token_id`; `eos_token` in the \
                 tokenizer_config.json next to tokenizer.json, or `eos_token_id` in \
                 config.json) and the template writes none of the common markers ({}); pass \
                 a tokenizer_config.json whose `eos_token` names it as --template, or add one \
                 next to the tokenizer",
                format.template.origin,
                KNOWN_END_OF_TURN.join(", ")
            )));
        }
        Ok(format)
    }

    fn assemble(tok: Tokenizer, mut template: ChatTemplate, eos: Option<&str>) -> Self {
        let specials: Vec<String> = tokenizer::special_ids(&tok)
            .iter()
            .filter_map(|id| tok.id_to_token(*id))
            .collect();
        let mut markers: Vec<String> = template.end_of_turn.clone();
        // EOS always ends a turn; other known markers only where the template writes them.
        let used = KNOWN_END_OF_TURN
            .into_iter()
            .filter(|m| template.source.contains(m));
        for m in eos.into_iter().chain(used) {
            if specials.iter().any(|s| s == m) && !markers.iter().any(|x| x == m) {
                markers.push(m.to_string());
            }
        }
        let stop_ids = markers.iter().filter_map(|m| tok.token_to_id(m)).collect();
        template.end_of_turn = markers;
        ChatFormat {
            tokenizer: tok,
            template,
            stop_ids,
        }
    }
}

/// `chat_template` may be a string or a list of named templates (use `default`).
fn template_from_config(cfg: &serde_json::Value) -> Option<String> {
    match cfg.get("chat_template")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .or_else(|| list.first())
            .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
        _ => None,
    }
}

/// Loads a chat template named by the user: a built-in name, a `.jinja` file or a
/// `tokenizer_config.json`. A path that exists is read as a file (JSON when it ends in
/// `.json`); anything else must be a built-in name. A `.jinja` file brings no BOS or EOS
/// (see [`ChatFormat::with_template`]).
///
/// # Errors
///
/// An input error for an unknown built-in name, malformed JSON, a config without
/// `chat_template`, or a template that does not compile.
pub fn load_template(spec: &str) -> Result<ChatTemplate> {
    let path = Path::new(spec);
    if !path.exists() {
        if path
            .extension()
            .is_some_and(|e| e == "jinja" || e == "json")
        {
            return Err(Error::input(format!(
                "{spec}: chat template file not found"
            )));
        }
        return ChatTemplate::builtin(spec);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
    if path.extension().is_some_and(|e| e == "json") {
        let cfg: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::input(format!("{}: invalid JSON: {e}", path.display())))?;
        let src = template_from_config(&cfg).ok_or_else(|| {
            Error::input(format!("{}: field `chat_template` missing", path.display()))
        })?;
        let tok = |k: &str| {
            cfg.get(k)
                .and_then(|v| v.as_str().or_else(|| v.get("content")?.as_str()))
                .unwrap_or("")
                .to_string()
        };
        return ChatTemplate::new(spec, src, tok("bos_token"), tok("eos_token"), vec![]);
    }
    ChatTemplate::new(spec, text, "", "", vec![])
}

/// Reads a GGUF header and metadata (not the tensors), with errors that say what is
/// wrong with the file.
///
/// # Errors
///
/// An input error when the file is missing or not a readable GGUF; a runtime error when
/// it exists but cannot be opened.
pub fn read_gguf(path: &Path) -> Result<gguf_file::Content> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
    if f.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(Error::io(
            path,
            "read",
            std::io::Error::from(std::io::ErrorKind::IsADirectory),
        ));
    }
    let unreadable = |why: String| {
        Error::input(format!(
            "{}: not a readable GGUF file ({why}); is it truncated or of another format?",
            path.display()
        ))
    };
    // The header parser trusts some of its numbers (an alignment of 0 divides by zero):
    // a panic there is the file's fault, reported as such.
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        gguf_file::Content::read(&mut f)
    }));
    let content = match read {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(unreadable(e.to_string())),
        Err(_) => return Err(unreadable("its header is inconsistent".into())),
    };
    let len = f.metadata().map_err(|e| Error::io(path, "read", e))?.len();
    check_tensor_extents(&content, len).map_err(unreadable)?;
    Ok(content)
}

/// Checks that every tensor the header lists lies inside the file (`file_len` bytes):
/// its element count and byte size computed without overflow, whole blocks of its type.
/// A truncated download, or a header claiming 2^62-element tensors, fails here, before
/// anything is allocated for it.
fn check_tensor_extents(
    content: &gguf_file::Content,
    file_len: u64,
) -> std::result::Result<(), String> {
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let t = &content.tensor_infos[name];
        let dims = t.shape.dims();
        let elems = dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .ok_or_else(|| format!("tensor `{name}` has {dims:?} elements, beyond any file"))?;
        let (block, size) = (
            t.ggml_dtype.block_size() as u64,
            t.ggml_dtype.type_size() as u64,
        );
        if elems % block != 0 {
            return Err(format!(
                "tensor `{name}` has {elems} elements, not whole blocks of {block} ({:?})",
                t.ggml_dtype
            ));
        }
        let end = (elems / block)
            .checked_mul(size)
            .and_then(|bytes| bytes.checked_add(content.tensor_data_offset))
            .and_then(|b| b.checked_add(t.offset));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(format!(
                    "tensor `{name}` ({dims:?}, {:?}) ends past the file's {file_len} bytes",
                    t.ggml_dtype
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
impl ChatFormat {
    /// Recomputes end-of-turn markers and stop ids after a test assembled a format by hand.
    pub(crate) fn with_template_markers(self) -> Self {
        let eos = self.template.eos_token.clone();
        Self::assemble(
            self.tokenizer,
            self.template,
            Some(eos.as_str()).filter(|e| !e.is_empty()),
        )
    }
}

impl ChatFormat {
    /// A tokenizer awaiting a template ([`ChatFormat::with_template`]), knowing no BOS or
    /// EOS token of its own (see [`ChatFormat::bare_with`]); until then it renders
    /// nothing.
    pub fn bare(tokenizer: Tokenizer) -> Result<Self> {
        Self::bare_with(tokenizer, TokenizerSpecials::default())
    }

    /// A tokenizer awaiting a template ([`ChatFormat::with_template`]), with its own BOS
    /// and EOS tokens, which a template without tokens of its own (a `.jinja` file) then
    /// uses as `bos_token` and `eos_token`; until then it renders nothing.
    pub fn bare_with(tokenizer: Tokenizer, specials: TokenizerSpecials) -> Result<Self> {
        let template = ChatTemplate::new(
            "none (a template is still to be named)",
            "",
            specials.bos.unwrap_or_default(),
            specials.eos.unwrap_or_default(),
            vec![],
        )?;
        Ok(ChatFormat {
            tokenizer,
            template,
            stop_ids: Vec::new(),
        })
    }
}

#[cfg(test)]
mod gguf_tests {
    use super::*;
    use candle_core::quantized::{gguf_file::Value, QTensor};
    use candle_core::{Device, Tensor};

    /// A small GGUF file with `metadata` and one 8 x 8 f32 tensor; returns its path.
    fn write(dir: &Path, metadata: &[(&str, &Value)]) -> std::path::PathBuf {
        let t = Tensor::zeros((8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, candle_core::quantized::GgmlDType::F32).unwrap();
        let path = dir.join("m.gguf");
        let mut f = std::fs::File::create(&path).unwrap();
        gguf_file::write(&mut f, metadata, &[("w", &q)]).unwrap();
        path
    }

    #[test]
    fn a_whole_file_reads_and_a_truncated_one_is_refused_naming_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let arch = Value::String("llama".into());
        let path = write(dir.path(), &[("general.architecture", &arch)]);
        assert_eq!(read_gguf(&path).unwrap().tensor_infos.len(), 1);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 100).unwrap();
        let e = read_gguf(&path).unwrap_err();
        assert!(e.is_input(), "{e}");
        assert!(e.to_string().contains("tensor `w`"), "{e}");
        assert!(e.to_string().contains("ends past"), "{e}");
    }

    #[test]
    fn an_alignment_of_zero_is_an_input_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let zero = Value::U32(0);
        let path = write(dir.path(), &[("general.alignment", &zero)]);
        let e = read_gguf(&path).unwrap_err();
        assert!(
            e.is_input() && e.to_string().contains("not a readable GGUF"),
            "{e}"
        );
    }

    #[test]
    fn a_folder_is_an_input_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_gguf(dir.path()).unwrap_err().is_input());
    }
}

/// A tokenizer's own BOS and EOS tokens (their text), where it names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenizerSpecials {
    /// The beginning-of-sequence token (`<s>`, `<|begin_of_text|>`, ...).
    pub bos: Option<String>,
    /// The end-of-sequence token (`</s>`, `<|eot_id|>`, ...).
    pub eos: Option<String>,
}

impl TokenizerSpecials {
    /// From a GGUF's `tokenizer.ggml.bos_token_id` and `tokenizer.ggml.eos_token_id`
    /// (ids into `tokenizer.ggml.tokens`).
    pub fn of_gguf(content: &gguf_file::Content) -> Self {
        TokenizerSpecials {
            bos: tokenizer::gguf_token_text(content, "tokenizer.ggml.bos_token_id"),
            eos: tokenizer::gguf_token_text(content, "tokenizer.ggml.eos_token_id"),
        }
    }

    /// From a Hugging Face folder: `bos_token` and `eos_token` of `tokenizer_config.json`
    /// (a string, or an object with `content`), else `bos_token_id` and `eos_token_id`
    /// (a number, or a list whose first entry is used) of `config.json`, as ids of `tok`.
    ///
    /// # Errors
    ///
    /// An input error when one of those files exists but is not valid JSON.
    pub fn of_hf_dir(dir: &Path, tok: &Tokenizer) -> Result<Self> {
        let cfg = read_json_or_null(&dir.join("tokenizer_config.json"))?;
        let model = read_json_or_null(&dir.join("config.json"))?;
        let own = Self::of_tokenizer_config(&cfg);
        let by_id = |key: &str| -> Option<String> {
            let v = model.get(key)?;
            let id = v.as_u64().or_else(|| v.as_array()?.first()?.as_u64())?;
            tok.id_to_token(u32::try_from(id).ok()?)
        };
        Ok(TokenizerSpecials {
            bos: own.bos.or_else(|| by_id("bos_token_id")),
            eos: own.eos.or_else(|| by_id("eos_token_id")),
        })
    }

    /// `bos_token` and `eos_token` of a `tokenizer_config.json` (null: none).
    fn of_tokenizer_config(cfg: &serde_json::Value) -> Self {
        let token = |key: &str| -> Option<String> {
            match cfg.get(key)? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
                _ => None,
            }
        };
        TokenizerSpecials {
            bos: token("bos_token"),
            eos: token("eos_token"),
        }
    }
}

/// The JSON of `path`, or null when there is no such file.
fn read_json_or_null(path: &Path) -> Result<serde_json::Value> {
    match std::fs::read_to_string(path) {
        Ok(s) => serde_json::from_str(&s)
            .map_err(|e| Error::input(format!("{}: invalid JSON: {e}", path.display()))),
        Err(_) => Ok(serde_json::Value::Null),
    }
}
