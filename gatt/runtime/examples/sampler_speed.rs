//! Microseconds per sampled token at the default settings over a 49,152-entry vocabulary.
use gatt::backend::SamplingParams;
use gatt_runtime::sampling::Sampler;
use std::time::Instant;

fn main() {
    gatt_runtime::allocator::tune();
    let vocab = 49_152;
    // About the shape of a language model's logits: a broad bulk (a sum of uniforms,
    // spread about 2) and a few dozen tokens 6-12 above it.
    let logits: Vec<f32> = (0..vocab)
        .map(|i| {
            let u = |k: usize| ((i * (7919 + 104_729 * k)) % 10_007) as f32 / 10_007.0;
            let bulk = (u(0) + u(1) + u(2) + u(3) - 2.0) * 3.5;
            bulk + if i % 1499 == 0 { 6.0 + 6.0 * u(4) } else { 0.0 }
        })
        .collect();
    let context: Vec<u32> = (0..400).map(|i| (i * 37 % vocab) as u32).collect();
    let mut s = Sampler::new(&SamplingParams::default(), 1);
    let n = 2000;
    let t = Instant::now();
    let mut acc = 0u64;
    for _ in 0..n {
        acc += s.sample(&mut logits.clone(), &context) as u64;
    }
    println!(
        "{:.1} us per token ({acc})",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
