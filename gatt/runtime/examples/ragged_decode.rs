//! Decoding steps of a batch whose sequences sit at different positions (as in the
//! running batch of `gatt synth`, where dialogues are at different turns) against a
//! batch of equal sequences with the same total context, in one run.
//!
//! Usage: cargo run -p gatt-runtime --example ragged_decode -- [steps=64] [rounds=5]
//!
//! Both batches hold 8 sequences and 4,200 prompt tokens in all: equal ones of 525 tokens
//! each, or ragged ones of 150 to 900 (the longer ones together). The attention reads
//! about the same number of cached keys per step in both; with the work split well over
//! the threads, the two step rates are the same. Rounds alternate the two cases; the
//! summary gives each one's median.
use candle_core::Device;
use gatt_runtime::llama::*;
use std::time::Instant;

const RAGGED: [usize; 8] = [150, 300, 400, 350, 900, 700, 800, 600];

fn main() {
    gatt_runtime::allocator::tune();
    let path = gatt::model::ensure_default_model().unwrap();
    let ct = gatt::model::read_gguf(&path).unwrap();
    let mut f = std::fs::File::open(&path).unwrap();
    let m = Model::from_gguf(&ct, &mut f, &Device::Cpu, Weights::Dense).unwrap();
    let arg = |key: &str, default: usize| -> usize {
        std::env::args()
            .find_map(|a| a.strip_prefix(key).and_then(|v| v.parse().ok()))
            .unwrap_or(default)
    };
    let (steps, rounds) = (arg("steps=", 64), arg("rounds=", 5).max(1));
    let mean = RAGGED.iter().sum::<usize>() / RAGGED.len();
    let cases = [("equal", [mean; 8]), ("ragged", RAGGED)];
    let mut rates = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (c, (name, lengths)) in cases.iter().enumerate() {
            let prompts: Vec<Vec<u32>> = lengths
                .iter()
                .enumerate()
                .map(|(s, &n)| {
                    (0..n)
                        .map(|i| ((i * 31 + s * 7) % 5000 + 100) as u32)
                        .collect()
                })
                .collect();
            // Each prompt prefilled alone, then the batch's cache built from their keys
            // and values, left-padded to the longest (as the running batch builds it).
            let seqs: Vec<SeqKv> = prompts
                .iter()
                .map(|p| {
                    let mut one = m.sampling_cache(p.len());
                    let bt = pad_prompts(std::slice::from_ref(p), 2, &Device::Cpu).unwrap();
                    m.forward(&bt.tokens, &bt.positions, &bt.pad, &mut one)
                        .unwrap();
                    one.sequence(0, 0, p.len()).unwrap()
                })
                .collect();
            let refs: Vec<&SeqKv> = seqs.iter().collect();
            let dtype = m.sampling_cache(0).dtype();
            let (mut cache, pad) = Cache::from_sequences(&m.cfg, &refs, steps + 1, dtype).unwrap();
            let t0 = Instant::now();
            for _ in 0..steps {
                let (t, p) = step_inputs(&[500; 8], &pad, cache.len(), &Device::Cpu).unwrap();
                let l = m.forward(&t, &p, &pad, &mut cache).unwrap();
                let _ = logits_rows(&l).unwrap();
            }
            let rate = (8 * steps) as f64 / t0.elapsed().as_secs_f64();
            println!("{name:>6}: {rate:.1} tokens/s");
            rates[c].push(rate);
        }
    }
    let median = |r: &mut Vec<f64>| {
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    let (equal, ragged) = (median(&mut rates[0]), median(&mut rates[1]));
    println!(
        "median over {rounds} rounds: equal {equal:.1}, ragged {ragged:.1} tokens/s; \
         ragged / equal {:.2}",
        ragged / equal
    );
}
