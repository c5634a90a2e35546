//! Times a prompt's prefill through the two attention paths of inference on the CPU: the
//! row-wise kernel that prompts and decoding steps share (`Model::forward` with a cache,
//! what sampling runs) and the matrix-product path (`Model::hidden_states`, no cache),
//! interleaved, on the default model.
//! Usage: cargo run -p gatt-runtime --example prefill_paths -- [len=512] [rounds=5]
use candle_core::{Device, Tensor};
use gatt_runtime::llama::*;
use std::time::Instant;

fn main() {
    gatt_runtime::allocator::tune();
    let arg = |key: &str, default: usize| -> usize {
        std::env::args()
            .find_map(|a| a.strip_prefix(key).and_then(|v| v.parse().ok()))
            .unwrap_or(default)
    };
    let (len, rounds) = (arg("len=", 512), arg("rounds=", 5));
    let path = gatt::model::ensure_default_model().unwrap();
    let ct = gatt::model::read_gguf(&path).unwrap();
    let mut f = std::fs::File::open(&path).unwrap();
    let m = Model::from_gguf(&ct, &mut f, &Device::Cpu, Weights::Dense).unwrap();
    let ids: Vec<u32> = (0..len as u32).map(|i| 100 + (i * 37) % 5000).collect();
    let tokens = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let pos: Vec<u32> = (0..len as u32).collect();
    let pos = Tensor::new(pos.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let (mut rows, mut products) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        let mut cache = m.sampling_cache(len);
        m.forward(&tokens, &pos, &[0], &mut cache).unwrap();
        rows.push(len as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        m.hidden_states(&tokens, &pos, &[0]).unwrap();
        products.push(len as f64 / t.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "prefill {len} tokens, tokens/s (median of {rounds}): row-wise attention (sampling) {:.0}, \
         matrix-product attention {:.0}",
        median(&mut rows),
        median(&mut products)
    );
}
