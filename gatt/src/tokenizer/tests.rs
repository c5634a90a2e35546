use super::*;
use gguf_file::Value;

/// A tiny byte-level BPE vocabulary: `abc` is a token, but the merges never reach it
/// (`b c` ranks first, and nothing merges `a` with `bc`). `<|end|>` is a control token,
/// `<u>` a user-defined one.
fn metadata(pre: Option<&str>) -> Metadata {
    let strings =
        |v: &[&str]| Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect());
    let mut md = Metadata::new();
    md.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
    if let Some(pre) = pre {
        md.insert("tokenizer.ggml.pre".into(), Value::String(pre.into()));
    }
    md.insert(
        "tokenizer.ggml.tokens".into(),
        strings(&["a", "b", "c", "ab", "bc", "abc", "<|end|>", "<u>", "Ġ"]),
    );
    md.insert("tokenizer.ggml.merges".into(), strings(&["b c", "a b"]));
    md.insert(
        "tokenizer.ggml.token_type".into(),
        Value::Array([1, 1, 1, 1, 1, 1, 3, 4, 1].map(Value::I32).to_vec()),
    );
    md
}

fn ids(pre: &str, text: &str) -> Vec<u32> {
    let tok = from_gguf_metadata(&metadata(Some(pre))).unwrap();
    tok.encode(text, false).unwrap().get_ids().to_vec()
}

#[test]
fn llama3_takes_a_whole_word_from_the_vocabulary_without_merging() {
    // Llama 3's tokenizer.json sets ignore_merges: `abc` is one token.
    assert_eq!(ids("llama-bpe", "abc"), [5]);
    assert_eq!(ids("llama3", "abc"), [5]);
    // Qwen2 splits the same way but merges: `b c` first, then nothing joins `a` + `bc`.
    assert_eq!(ids("qwen2", "abc"), [0, 4]);
}

#[test]
fn gpt_2_is_llama_cpps_name_for_gpt2s_rules() {
    assert_eq!(ids("gpt-2", "abc ab"), [0, 4, 8, 3]);
}

#[test]
fn a_missing_pre_tokenizer_is_refused_naming_the_key() {
    let e = from_gguf_metadata(&metadata(None)).unwrap_err();
    assert!(e.is_input());
    assert!(e.to_string().contains("`tokenizer.ggml.pre`"), "{e}");
}

#[test]
fn unknown_or_unverified_pre_tokenizers_are_refused() {
    // `default` is llama.cpp's fallback, `gpt2` no name llama.cpp writes.
    for pre in ["default", "gpt2", "falcon3", "no-such-family"] {
        let e = from_gguf_metadata(&metadata(Some(pre))).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("tokenizer.ggml.pre = {pre} is not supported")),
            "{msg}"
        );
        assert!(msg.contains("llama-bpe"), "lists the supported ones: {msg}");
    }
}

#[test]
fn every_supported_family_builds() {
    for pre in SUPPORTED_PRE_TOKENIZERS {
        from_gguf_metadata(&metadata(Some(pre))).unwrap_or_else(|e| panic!("{pre}: {e}"));
    }
}

#[test]
fn control_and_user_defined_tokens_are_special_as_llamacpp_matches_them() {
    // llama.cpp matches both kinds whole when it parses special tokens; content holding
    // either text must be refused or encoded as text, so both are special.
    let tok = from_gguf_metadata(&metadata(Some("gpt-2"))).unwrap();
    assert_eq!(special_ids(&tok), [6, 7]);
    let enc = tok.encode("a<|end|>b<u>", false).unwrap();
    assert_eq!(enc.get_ids(), [0, 6, 1, 7]);
}

#[test]
fn other_tokenizer_models_are_refused_naming_the_key() {
    for model in ["bert", "t5", "ugm", "rwkv"] {
        let mut md = metadata(Some("gpt-2"));
        md.insert("tokenizer.ggml.model".into(), Value::String(model.into()));
        let e = from_gguf_metadata(&md).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "`tokenizer.ggml.model = {model}` is not supported"
            )),
            "{e}"
        );
    }
}

#[test]
fn a_sentencepiece_vocabulary_with_split_rules_is_refused() {
    // llama.cpp ignores `tokenizer.ggml.pre` for SentencePiece; a value other than
    // `default` means a converter gatt does not know wrote the file.
    let mut md = metadata(Some("gpt-2"));
    md.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
    let e = from_gguf_metadata(&md).unwrap_err().to_string();
    assert!(e.contains("tokenizer.ggml.pre = gpt-2"), "{e}");
    assert!(e.contains("SentencePiece"), "{e}");
}

#[test]
fn the_vocabulary_hash_changes_with_any_token() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/golden/smollm2_tokenizer.json");
    let tok = from_json_file(&path).unwrap();
    let h = vocabulary_sha256(&tok);
    assert_eq!(h.len(), 64);
    assert_eq!(h, vocabulary_sha256(&tok.clone()));
    let mut more = tok.clone();
    more.add_tokens([tokenizers::AddedToken::from("<extra>", false)])
        .unwrap();
    assert_ne!(h, vocabulary_sha256(&more));
}

#[test]
fn a_gguf_given_as_tokenizer_json_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vocab.gguf");
    std::fs::write(&path, b"GGUF\x03\x00\x00\x00\xff\xfe").unwrap();
    let e = from_json_file(&path).unwrap_err();
    assert!(e.is_input(), "{e}");
    assert!(
        e.to_string().contains("a GGUF file") && e.to_string().contains("--model"),
        "{e}"
    );
    // Not a GGUF: the JSON error as before.
    std::fs::write(&path, b"{").unwrap();
    let e = from_json_file(&path).unwrap_err();
    assert!(e.to_string().contains("not a valid tokenizer.json"), "{e}");
}
