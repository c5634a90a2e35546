//! Times prefill and decode steps of the embedded model at several batch sizes.
//! Usage: cargo run -p gatt --example decode_speed [--release]
use candle_core::Device;
use gatt::backend::llama::*;
use std::time::Instant;
fn main() {
    let path = gatt::model::ensure_default_model().unwrap();
    let ct = gatt::model::read_gguf(&path).unwrap();
    let mut f = std::fs::File::open(&path).unwrap();
    let w = if std::env::args().any(|a| a == "quantized") {
        Weights::Quantized
    } else {
        Weights::Dense
    };
    let m = Model::from_gguf(&ct, &mut f, &Device::Cpu, w).unwrap();
    // `only=B` runs the batch-B case alone, `steps=N` decodes N steps (for profiling).
    let arg = |key: &str| -> Option<usize> {
        std::env::args().find_map(|a| a.strip_prefix(key).and_then(|v| v.parse().ok()))
    };
    let (only, steps) = (arg("only="), arg("steps=").unwrap_or(32));
    for &(b, plen) in &[(1usize, 512usize), (1, 32), (4, 32), (16, 32)] {
        if only.is_some_and(|o| o != b || plen == 512) {
            continue;
        }
        let prompts: Vec<Vec<u32>> = (0..b)
            .map(|s| {
                (0..plen)
                    .map(|i| ((i * 31 + s * 7) % 5000 + 100) as u32)
                    .collect()
            })
            .collect();
        let mut cache = Cache::new(&m.cfg, plen + 64);
        let bt = pad_prompts(&prompts, 2, &Device::Cpu).unwrap();
        let t0 = Instant::now();
        m.forward(&bt.tokens, &bt.positions, &bt.pad, &mut cache)
            .unwrap();
        let prefill = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        for _ in 0..steps {
            let (t, p) = step_inputs(&vec![500; b], &bt.pad, cache.len(), &Device::Cpu).unwrap();
            let l = m.forward(&t, &p, &bt.pad, &mut cache).unwrap();
            let _ = logits_rows(&l).unwrap();
        }
        let dec = t1.elapsed().as_secs_f64();
        println!("batch {b:>2} prompt {plen:>3}: prefill {:.0} tok/s, decode {:.1} tok/s aggregate ({:.1} ms/step)",
            (b * plen) as f64 / prefill, (b * steps) as f64 / dec, 1000.0 * dec / steps as f64);
    }
}
