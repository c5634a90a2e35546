//! The chat templates shipped in `templates/chat/`, compiled into the binary so that
//! a template named by its built-in name works from any directory. `manifest.json` there is the one list of
//! them, with the special tokens of each model family.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

const MANIFEST: &str = include_str!("../../../templates/chat/manifest.json");

macro_rules! sources {
    ($($file:literal),* $(,)?) => {
        &[$(($file, include_str!(concat!("../../../templates/chat/", $file)))),*]
    };
}

const SOURCES: &[(&str, &str)] = sources!(
    "chatml.jinja",
    "llama2.jinja",
    "llama3.jinja",
    "mistral.jinja",
    "gemma.jinja",
    "phi3.jinja",
    "qwen2.5.jinja",
);

/// A built-in template and the special tokens of the model family it belongs to.
#[derive(Debug, Deserialize)]
pub struct Builtin {
    /// The name users give it (`chatml`, `llama3`, ...), the manifest's key.
    #[serde(skip)]
    pub name: String,
    file: String,
    /// The Jinja source.
    #[serde(skip)]
    pub source: &'static str,
    /// The family's BOS token, as the template's `bos_token` (may be empty).
    pub bos_token: String,
    /// The family's EOS token, as the template's `eos_token`.
    pub eos_token: String,
    /// The marker that closes an assistant turn (`<|im_end|>`, `<|eot_id|>`, ...).
    pub end_of_turn: String,
    /// One line on the format and the model it comes from, as `gatt templates` lists it.
    pub description: String,
}

/// All built-in templates, sorted by name (the compiled-in manifest, parsed on first use).
pub fn builtins() -> &'static [Builtin] {
    static ALL: OnceLock<Vec<Builtin>> = OnceLock::new();
    ALL.get_or_init(|| {
        let map: BTreeMap<String, Builtin> =
            serde_json::from_str(MANIFEST).expect("templates/chat/manifest.json is valid");
        map.into_iter()
            .map(|(name, mut b)| {
                b.source = SOURCES
                    .iter()
                    .find(|(f, _)| *f == b.file)
                    .unwrap_or_else(|| {
                        panic!("manifest names {} but it is not compiled in", b.file)
                    })
                    .1;
                b.name = name;
                b
            })
            .collect()
    })
}

/// The names of the built-in templates, sorted.
pub fn builtin_names() -> Vec<&'static str> {
    builtins().iter().map(|b| b.name.as_str()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn manifest_and_sources_agree() {
        let all = super::builtins();
        assert_eq!(all.len(), super::SOURCES.len());
        assert!(all.iter().all(|b| !b.source.is_empty()));
    }
}
