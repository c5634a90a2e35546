//! Property tests over everything that reads untrusted bytes: the JSONL and Parquet
//! dialogue readers (ShareGPT records included), the chat-template compiler and
//! renderer, and the GGUF header reader. Whatever the input, each gives `Ok` or an
//! input error: never a panic, an abort, or an endless loop. The budget is fixed (a few
//! hundred cases, seconds in all), so it runs with every `cargo test`.

use crate::dataset::{read_dialogues, DialogueWriter, Format};
use crate::dialogue::{Dialogue, Message};
use crate::error::Result;
use crate::template::ChatTemplate;
use proptest::prelude::*;
use std::path::Path;

/// Every record of `path`, read to the end (a bounded number of items).
fn read_to_end(path: &Path) -> Vec<Result<Dialogue>> {
    match read_dialogues(path) {
        Ok(records) => records.take(10_000).map(|r| r.map(|(_, d)| d)).collect(),
        Err(e) => vec![Err(e)],
    }
}

/// Asserts that every error is the input's fault.
fn only_input_errors(items: &[Result<impl std::fmt::Debug>], what: &str) {
    for item in items {
        if let Err(e) = item {
            assert!(e.is_input(), "{what}: a runtime error for bad input: {e}");
        }
    }
}

/// A valid file of `format` holding two dialogues, as bytes.
fn valid_file(format: Format) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("d.{}", format.extension()));
    let mut w = DialogueWriter::create(&path, format).unwrap();
    for id in ["a", "b"] {
        let d = Dialogue::new(
            id,
            vec![
                Message::system("Answer in French."),
                Message::user("Bonjour"),
                Message::assistant("Bonjour !"),
            ],
        );
        w.write(&d).unwrap();
    }
    w.finish().unwrap();
    std::fs::read(&path).unwrap()
}

/// `bytes` with `edits` applied: (position, new byte) pairs, then cut to `keep` of its
/// length (in thousandths).
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)], keep: u16) -> Vec<u8> {
    let n = bytes.len();
    for &(at, b) in edits {
        bytes[at % n] = b;
    }
    bytes.truncate(n * usize::from(keep.min(1000)) / 1000);
    bytes
}

/// JSONL lines built from pieces of real records (ShareGPT and messages layouts,
/// wrong types, nesting, unicode), joined at random.
fn jsonl_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#.to_string()),
        Just(r#"{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}], "system": "s"}"#.to_string()),
        Just(r#"{"messages": [{"role": 5, "content": null}]}"#.to_string()),
        Just(r#"{"messages": {"role": "user"}}"#.to_string()),
        Just(r#"{"id": [], "meta": "x", "messages": []}"#.to_string()),
        Just("[[[[[[[[[[[[[[[[[[[[".to_string()),
        Just("\u{feff}{}".to_string()),
        Just("\"\\ud800\"".to_string()),
        "[ -~]{0,40}",
        "\\PC{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn jsonl_readers_never_panic(lines in proptest::collection::vec(jsonl_piece(), 0..8),
                                 raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let mut bytes = lines.join("\n").into_bytes();
        bytes.extend(raw);
        std::fs::write(&path, &bytes).unwrap();
        only_input_errors(&read_to_end(&path), "jsonl");
    }

    #[test]
    fn parquet_reader_never_panics(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
                                   keep in 900u16..=1000) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.parquet");
        std::fs::write(&path, mutate(valid_file(Format::Parquet), &edits, keep)).unwrap();
        only_input_errors(&read_to_end(&path), "parquet");
    }

    #[test]
    fn templates_never_panic(pieces in proptest::collection::vec(template_piece(), 0..10)) {
        let source = pieces.concat();
        if let Ok(t) = ChatTemplate::new("fuzz.jinja", source.clone(), "<s>", "</s>", vec![]) {
            let msgs = [Message::system("s"), Message::user("u"), Message::assistant("a")];
            if let Err(e) = t.render(&msgs, true) {
                prop_assert!(e.is_input(), "{source}: {e}");
            }
        }
    }

    #[test]
    fn gguf_reader_never_panics(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
                                keep in 0u16..=1000) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, mutate(small_gguf(), &edits, keep)).unwrap();
        if let Err(e) = crate::model::read_gguf(&path) {
            prop_assert!(e.is_input(), "{e}");
        }
    }
}

/// Pieces of Jinja, valid and broken, that real and hostile chat templates use.
fn template_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}".to_string()),
        Just("{% if add_generation_prompt %}assistant:{% endif %}".to_string()),
        Just("{{ bos_token }}{{ eos_token }}".to_string()),
        Just("{{ raise_exception('no') }}".to_string()),
        Just("{{ messages[99].content }}".to_string()),
        Just("{{ messages | tojson(indent=2) }}".to_string()),
        Just("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s[:3] %}{% endfor %}".to_string()),
        Just("{{ 'x' * 1000000000 }}".to_string()),
        Just("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}".to_string()),
        Just("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}".to_string()),
        Just("{{ 1 / 0 }}{{ none.x.y }}{{ (messages|first).content.strip().split()|join }}".to_string()),
        Just("{% endfor %}{% if %}{{".to_string()),
        "[{}%# a-z|().']{0,12}",
    ]
}

/// A small valid GGUF file (llama metadata, one f32 tensor), as bytes.
fn small_gguf() -> Vec<u8> {
    use candle_core::quantized::{gguf_file, gguf_file::Value, GgmlDType, QTensor};
    let t = candle_core::Tensor::zeros((4, 8), candle_core::DType::F32, &candle_core::Device::Cpu)
        .unwrap();
    let q = QTensor::quantize(&t, GgmlDType::F32).unwrap();
    let arch = Value::String("llama".into());
    let tokens = Value::Array(vec![Value::String("a".into()), Value::String("b".into())]);
    let mut buf = std::io::Cursor::new(Vec::new());
    gguf_file::write(
        &mut buf,
        &[
            ("general.architecture", &arch),
            ("tokenizer.ggml.tokens", &tokens),
        ],
        &[("w", &q)],
    )
    .unwrap();
    buf.into_inner()
}
