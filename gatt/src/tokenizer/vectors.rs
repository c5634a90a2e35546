//! The tokenizers rebuilt from GGUF metadata against reference ids made by others.
//!
//! llama.cpp ships vocabulary-only GGUFs (`models/ggml-vocab-<name>.gguf`) with test
//! strings (`.gguf.inp`, separated by `\n__ggml_vocab_test__\n`) and the ids the model's
//! own `tokenizer.json` gives them (`.gguf.out`, one line of space-separated ids per
//! string, made with `transformers`' `encode(text, add_special_tokens=False)`). They are
//! taken from the source distribution of `llama-cpp-python`, which vendors llama.cpp:
//! fetched with pip at a pinned version, checked by sha256 and cached under
//! `$GATT_HOME/reference/` (see [`crate::model::fetch`] for the same path of the default
//! model). Every vocabulary there is either rebuilt and gives every expected id, or
//! refused with a reason; never tokenized differently.

use crate::model::fetch::{gatt_home, pip_download, sha256_file, tempdir_in};
use crate::model::read_gguf;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The source distribution that carries llama.cpp's reference vocabularies.
const SDIST: &str = "llama-cpp-python==0.3.36";
/// Its sha256 (`llama_cpp_python-0.3.36.tar.gz`, 76,589,250 bytes).
const SDIST_SHA256: &str = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e";
/// The vocabularies' folder inside the archive.
const MODELS: &str = "llama_cpp_python-0.3.36/vendor/llama.cpp/models";
/// Separates the test strings of a `.gguf.inp` file (each string is followed by it).
const SEPARATOR: &str = "\n__ggml_vocab_test__\n";
/// Written last into the cache folder: the sdist's sha256 and [`LAYOUT`].
const COMPLETE: &str = ".complete";
/// What was extracted from the sdist (a folder extracted by an older layout is fetched
/// again).
const LAYOUT: &str = "vocab+templates";

/// `$GATT_HOME/reference/llama-cpp-python-0.3.36`: the vocabularies (`ggml-vocab-*`) and
/// llama.cpp's collection of real chat templates (`templates/*.jinja`), fetched on first use.
pub(crate) fn vocab_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = gatt_home()
            .join("reference")
            .join("llama-cpp-python-0.3.36");
        let done = std::fs::read_to_string(dir.join(COMPLETE)).unwrap_or_default();
        if done.trim() != format!("{SDIST_SHA256} {LAYOUT}") {
            fetch(&dir).unwrap_or_else(|e| panic!("{e}"));
        }
        dir
    })
}

/// Downloads the sdist, checks its sha256 and extracts the vocabularies into `dir`.
fn fetch(dir: &Path) -> Result<(), String> {
    let parent = dir.parent().expect("the cache folder has a parent");
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let tmp = tempdir_in(parent).map_err(|e| e.to_string())?;
    let result = fetch_into(&tmp, dir);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn fetch_into(tmp: &Path, dir: &Path) -> Result<(), String> {
    eprintln!("fetching {SDIST} (about 77 MB) with pip for llama.cpp's reference vocabularies");
    // Only this package from source: pip prepares its metadata with the build backend,
    // whose own dependencies (cmake) may come as wheels.
    if !pip_download(SDIST, &["--no-binary", "llama-cpp-python"], tmp) {
        return Err(format!(
            "`python3 -m pip download --no-deps --no-binary llama-cpp-python {SDIST}` failed"
        ));
    }
    let archive = tmp.join("llama_cpp_python-0.3.36.tar.gz");
    let got = sha256_file(&archive).map_err(|e| e.to_string())?;
    if got != SDIST_SHA256 {
        return Err(format!(
            "{}: sha256 {got}, expected {SDIST_SHA256}; refusing to use it",
            archive.display()
        ));
    }
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(tmp)
        .arg("--wildcards")
        .arg(format!("{MODELS}/ggml-vocab-*"))
        .arg(format!("{MODELS}/templates/*.jinja"))
        .status()
        .map_err(|e| format!("tar: {e}"))?;
    if !status.success() {
        return Err(format!("tar could not extract {}", archive.display()));
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(tmp.join(MODELS), dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(dir.join(COMPLETE), format!("{SDIST_SHA256} {LAYOUT}"))
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// The test strings of `name` and the ids each must give.
fn cases(name: &str) -> Vec<(String, Vec<u32>)> {
    let dir = vocab_dir();
    let read = |ext: &str| {
        let p = dir.join(format!("ggml-vocab-{name}.gguf.{ext}"));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let inp = read("inp");
    // Each string is followed by the separator, but in some files the last one.
    let texts: Vec<&str> = inp
        .strip_suffix(SEPARATOR)
        .unwrap_or(&inp)
        .split(SEPARATOR)
        .collect();
    let out = read("out");
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(texts.len(), ids.len(), "{name}: strings and id lines");
    texts.into_iter().map(str::to_string).zip(ids).collect()
}

/// What rebuilding `ggml-vocab-<name>.gguf` gives: the tokenizer, or the refusal.
fn rebuild(name: &str) -> crate::Result<tokenizers::Tokenizer> {
    let content = read_gguf(&vocab_dir().join(format!("ggml-vocab-{name}.gguf")))?;
    super::from_gguf(&content)
}

/// Checks every vector of `name`; returns how many there are.
fn check_family(name: &str) -> usize {
    let tok = rebuild(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let cases = cases(name);
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|(text, want)| {
            let got = tok.encode(text.as_str(), false).unwrap();
            (got.get_ids() != want.as_slice())
                .then(|| format!("{text:?}: got {:?}, want {want:?}", got.get_ids()))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{name}: {} of {} vectors differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    cases.len()
}

macro_rules! families {
    ($($test:ident => $name:literal,)+) => {
        $(
            #[test]
            #[cfg_attr(
                not(feature = "model-tests"),
                ignore = "fetches llama.cpp's reference vocabularies (about 77 MB with pip): cargo test --workspace --features model-tests"
            )]
            fn $test() {
                let n = check_family($name);
                eprintln!("{}: {n} vectors", $name);
            }
        )+

        /// Every vocabulary that ships vectors is tested above or refused.
        const TESTED: &[&str] = &[$($name),+];
    };
}

families! {
    gpt_2_gives_every_reference_id => "gpt-2",
    llama_bpe_gives_every_reference_id => "llama-bpe",
    qwen2_gives_every_reference_id => "qwen2",
    qwen35_gives_every_reference_id => "qwen35",
    starcoder_gives_every_reference_id => "starcoder",
    refact_gives_every_reference_id => "refact",
    command_r_gives_every_reference_id => "command-r",
    mpt_gives_every_reference_id => "mpt",
    falcon_gives_every_reference_id => "falcon",
    deepseek_llm_gives_every_reference_id => "deepseek-llm",
    deepseek_coder_gives_every_reference_id => "deepseek-coder",
    llama_spm_gives_every_reference_id => "llama-spm",
    phi_3_gives_every_reference_id => "phi-3",
    gemma_4_gives_every_reference_id => "gemma-4",
}

/// The other reference vocabularies are refused with a reason, never rebuilt.
#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "fetches llama.cpp's reference vocabularies (about 77 MB with pip): cargo test --workspace --features model-tests"
)]
fn every_other_reference_vocabulary_is_refused() {
    let mut names: Vec<String> = std::fs::read_dir(vocab_dir())
        .unwrap()
        .filter_map(|e| {
            let f = e.unwrap().file_name().into_string().unwrap();
            Some(
                f.strip_prefix("ggml-vocab-")?
                    .strip_suffix(".gguf")?
                    .to_string(),
            )
        })
        .collect();
    names.sort();
    let mut refused = Vec::new();
    for name in names.iter().filter(|n| !TESTED.contains(&n.as_str())) {
        match rebuild(name) {
            Ok(_) => panic!("{name}: rebuilt, but no test checks its ids"),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("not supported") || msg.contains("tokenizer.ggml.pre"),
                    "{name}: {msg}"
                );
                refused.push(format!("{name}: {msg}"));
            }
        }
    }
    eprintln!("refused:\n{}", refused.join("\n"));
    // The families listed as supported all have a vocabulary here, but for SmolLM2's
    // (checked against the default model in tests/golden.rs) and aliases.
    for pre in super::SUPPORTED_PRE_TOKENIZERS {
        let covered = TESTED.contains(pre) || ["smollm", "llama3"].contains(pre);
        assert!(
            covered,
            "{pre}: supported but checked by no reference vectors"
        );
    }
}
