//! Microseconds per sampled token at the default settings over a 49,152-entry vocabulary,
//! on logits shaped like a language model's and on the default model's own.
//!
//! Usage: cargo run -p gatt-runtime --example sampler_speed -- [real=0] [steps=200]
//!
//! With `real=1` the default model first answers a few prompts (batch 1, the default
//! sampling settings), keeping each step's logits and context; the sampler is then timed
//! on copies of those. Real logits differ from the synthetic ones in where the top-p
//! nucleus ends, which sets how many threshold passes and how large a sort a draw takes.
use candle_core::{Device, Tensor};
use gatt::backend::SamplingParams;
use gatt::model::ModelSource;
use gatt_runtime::llama::{logits_rows, step_inputs};
use gatt_runtime::load_model;
use gatt_runtime::sampling::Sampler;
use std::time::Instant;

fn main() {
    gatt_runtime::allocator::tune();
    let arg = |key: &str, default: usize| -> usize {
        std::env::args()
            .find_map(|a| a.strip_prefix(key).and_then(|v| v.parse().ok()))
            .unwrap_or(default)
    };
    let cases = if arg("real=", 0) == 1 {
        real_logits(arg("steps=", 200))
    } else {
        synthetic_logits()
    };
    let mut s = Sampler::new(&SamplingParams::default(), 1);
    let n = 2000;
    let t = Instant::now();
    let mut acc = 0u64;
    for i in 0..n {
        let (logits, context) = &cases[i % cases.len()];
        acc += s.sample(&mut logits.clone(), context) as u64;
    }
    println!(
        "{:.1} us per token over {} distinct logits ({acc})",
        t.elapsed().as_secs_f64() * 1e6 / n as f64,
        cases.len()
    );
}

/// One set of logits about the shape of a language model's (a broad bulk, a sum of
/// uniforms spread about 2, and a few dozen tokens 6-12 above it), 400 tokens of context.
fn synthetic_logits() -> Vec<(Vec<f32>, Vec<u32>)> {
    let vocab = 49_152;
    let logits: Vec<f32> = (0..vocab)
        .map(|i| {
            let u = |k: usize| ((i * (7919 + 104_729 * k)) % 10_007) as f32 / 10_007.0;
            let bulk = (u(0) + u(1) + u(2) + u(3) - 2.0) * 3.5;
            bulk + if i % 1499 == 0 { 6.0 + 6.0 * u(4) } else { 0.0 }
        })
        .collect();
    let context: Vec<u32> = (0..400).map(|i| (i * 37 % vocab) as u32).collect();
    vec![(logits, context)]
}

/// The default model's logits over `steps` decoding steps of a few chat prompts, with the
/// tokens before each (the repetition penalty's context).
fn real_logits(steps: usize) -> Vec<(Vec<f32>, Vec<u32>)> {
    let source = ModelSource::resolve("default").unwrap();
    let backend = gatt_runtime::EmbeddedBackend::load(&source, &Device::Cpu, 1).unwrap();
    let model = load_model(&source, &Device::Cpu).unwrap();
    let prompts = [
        "Tell me about your morning. Always answer in French.",
        "Name a famous painter and say why people like them. You are a pirate.",
        "Give me three tips for learning a language.",
        "Why is the sky blue? Act as Napoleon.",
    ];
    let mut cases = Vec::new();
    let mut sampler = Sampler::new(&SamplingParams::default(), 7);
    for (p, text) in prompts.iter().enumerate() {
        let mut context = backend
            .prompt_tokens(&[gatt::Message::user(*text)])
            .unwrap();
        let mut cache = model.sampling_cache(context.len() + steps + 1);
        let ids = Tensor::new(context.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let pos: Vec<u32> = (0..context.len() as u32).collect();
        let pos = Tensor::new(pos.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mut logits = logits_rows(&model.forward(&ids, &pos, &[0], &mut cache).unwrap())
            .unwrap()
            .remove(0);
        for _ in 0..(steps / prompts.len()).max(1) {
            cases.push((logits.clone(), context.clone()));
            let t = sampler.sample(&mut logits, &context);
            context.push(t);
            let (ids, pos) = step_inputs(&[t], &[0], cache.len(), &Device::Cpu).unwrap();
            let l = model.forward(&ids, &pos, &[0], &mut cache).unwrap();
            logits = logits_rows(&l).unwrap().remove(0);
        }
        eprintln!("prompt {p}: {} cases", cases.len());
    }
    cases
}
