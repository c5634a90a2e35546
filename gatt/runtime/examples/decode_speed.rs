//! Times prefill and decode steps of the embedded model at several batch sizes.
//! Usage: cargo run -p gatt-runtime --example decode_speed [--release] -- [quantized] [only=B]
//! [steps=N] [rounds=R] [prompt=P]
//!
//! With `rounds=R` the cases run R times, interleaved, and a summary gives each case's
//! median and best decode rate: on a shared machine the best of several rounds is the
//! steadiest figure. The last line compares aggregate decoding at batch 16 with batch 1
//! (both after a 32-token prompt, or `prompt=P` tokens) measured in this run. `only=B` runs
//! batch B alone (any size), from the same prompts.
use candle_core::Device;
use gatt_runtime::llama::*;
use std::time::Instant;
fn main() {
    gatt_runtime::allocator::tune();
    let path = gatt::model::ensure_default_model().unwrap();
    let ct = gatt::model::read_gguf(&path).unwrap();
    let mut f = std::fs::File::open(&path).unwrap();
    let w = if std::env::args().any(|a| a == "quantized") {
        Weights::Quantized
    } else {
        Weights::Dense
    };
    let m = Model::from_gguf(&ct, &mut f, &Device::Cpu, w).unwrap();
    // `only=B` runs the batch-B case alone, `steps=N` decodes N steps (for profiling),
    // `prompt=P` starts the decoding cases from P-token prompts instead of 32.
    let arg = |key: &str| -> Option<usize> {
        std::env::args().find_map(|a| a.strip_prefix(key).and_then(|v| v.parse().ok()))
    };
    let (only, steps, rounds) = (
        arg("only="),
        arg("steps=").unwrap_or(64),
        arg("rounds=").unwrap_or(1).max(1),
    );
    let short = arg("prompt=").unwrap_or(32);
    let mut cases = vec![(1usize, 512usize), (1, short), (4, short), (16, short)];
    if let Some(b) = only.filter(|b| ![1, 4, 16].contains(b)) {
        cases.push((b, short));
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (c, &(b, plen)) in cases.iter().enumerate() {
            if only.is_some_and(|o| o != b || c == 0) {
                continue;
            }
            let prompts: Vec<Vec<u32>> = (0..b)
                .map(|s| {
                    (0..plen)
                        .map(|i| ((i * 31 + s * 7) % 5000 + 100) as u32)
                        .collect()
                })
                .collect();
            let mut cache = m.sampling_cache(plen + steps + 1);
            let bt = pad_prompts(&prompts, 2, &Device::Cpu).unwrap();
            let t0 = Instant::now();
            m.forward(&bt.tokens, &bt.positions, &bt.pad, &mut cache)
                .unwrap();
            let prefill = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            for _ in 0..steps {
                let (t, p) =
                    step_inputs(&vec![500; b], &bt.pad, cache.len(), &Device::Cpu).unwrap();
                let l = m.forward(&t, &p, &bt.pad, &mut cache).unwrap();
                let _ = logits_rows(&l).unwrap();
            }
            let dec = t1.elapsed().as_secs_f64();
            let rate = (b * steps) as f64 / dec;
            rates[c].push(rate);
            println!("batch {b:>2} prompt {plen:>3}: prefill {:.0} tok/s, decode {rate:.1} tok/s aggregate ({:.1} ms/step)",
                (b * plen) as f64 / prefill, 1000.0 * dec / steps as f64);
        }
    }
    // Batch 16 over batch 1 within each round (measured seconds apart, so a slow spell
    // of the machine moves both).
    let mut ratios: Vec<f64> = rates[3].iter().zip(&rates[1]).map(|(a, b)| a / b).collect();
    ratios.sort_by(f64::total_cmp);
    let mut summary = Vec::new();
    for (c, &(b, plen)) in cases.iter().enumerate() {
        let r = &mut rates[c];
        if r.is_empty() {
            continue;
        }
        r.sort_by(f64::total_cmp);
        let (median, best) = (r[r.len() / 2], r[r.len() - 1]);
        if rounds > 1 {
            println!("batch {b:>2} prompt {plen:>3}: decode median {median:.1}, best {best:.1} tok/s over {rounds} rounds");
        }
        if c > 0 {
            summary.push((b, median, best));
        }
    }
    let at = |b| summary.iter().find(|&&(x, _, _)| x == b).copied();
    if let (Some((_, m1, b1)), Some((_, m16, b16))) = (at(1), at(16)) {
        println!(
            "batch 16 / batch 1 aggregate decode: {:.2}x (medians), {:.2}x (best), {:.2}x (median of the rounds' ratios)",
            m16 / m1,
            b16 / b1,
            ratios[ratios.len() / 2]
        );
    }
}
