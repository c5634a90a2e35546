//! Training throughput of `gatt train`'s step on the default model, phase by phase.
//!
//! cargo run -p gatt-runtime --example train_speed -- [MASKED.parquet] [BATCH_TOKENS] [STEPS]
//!
//! Prints: the inference-kernel forward of one batch; forward and backward of one
//! sequence with LoRA adapters; then STEPS optimizer steps of LoRA and of full training.

use candle_core::Device;
use gatt::model::ModelSource;
use gatt_runtime::load_model;
use gatt_runtime::train::{data, loss, LoraConfig, Method, TrainOptions, Trainer};
use std::time::Instant;

fn main() -> gatt::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let data_path = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "masked.parquet".into());
    let budget: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2048);
    let steps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let source = ModelSource::resolve("default")?;
    let format = source.chat_format()?;
    let dev = Device::Cpu;
    let model = load_model(&source, &dev)?;
    let (examples, _) = data::load(data_path.as_ref(), model.cfg.vocab, &format.stop_ids, 2048)?;
    let batch: Vec<&data::Example> = {
        let mut b = Vec::new();
        let mut longest = 0;
        for e in &examples {
            longest = longest.max(e.ids.len());
            if longest * (b.len() + 1) > budget {
                break;
            }
            b.push(e);
        }
        b
    };
    let totals = loss::StepTotals::of(batch.iter().copied());
    let mb = loss::MicroBatch::new(&batch, loss::LossMean::Token, totals, &dev).unwrap();
    println!(
        "batch: {} samples, {} tokens, {} with loss, padded {:?}",
        batch.len(),
        mb.n_tokens,
        mb.n_loss,
        mb.tokens.dims()
    );
    let t = Instant::now();
    let l = loss::weighted_loss(&model, &mb).unwrap();
    println!(
        "inference-kernel forward + loss: {:.2}s (loss {})",
        t.elapsed().as_secs_f64(),
        l.to_scalar::<f32>().unwrap()
    );
    // Phases of one sequence in training mode, frozen base (as LoRA sees it).
    {
        let mut m = load_model(&source, &dev)?;
        m.set_training(true, 0);
        let e = batch[0];
        let mb1 =
            loss::MicroBatch::new(&[e], loss::LossMean::Token, loss::StepTotals::of([e]), &dev)
                .unwrap();
        let t = Instant::now();
        let loss::Sequences::Padded(pad) = &mb1.sequences else {
            unreachable!("MicroBatch::new pads")
        };
        let h = m.hidden_states(&mb1.tokens, &mb1.positions, pad).unwrap();
        let h_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        loss::weighted_loss(&m, &mb1).unwrap();
        let f_s = t.elapsed().as_secs_f64();
        drop(h);
        println!(
            "one sequence of {} tokens: hidden states {h_s:.2}s, forward+loss {f_s:.2}s",
            e.ids.len()
        );
        let mut m2 = load_model(&source, &dev)?;
        let cfg = LoraConfig {
            rank: 16,
            alpha: 32.0,
            dropout: 0.0,
            targets: gatt_runtime::llama::LINEAR_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        gatt_runtime::train::lora::attach(&mut m2, &cfg, 0, &dev)?;
        let mut vars = Vec::new();
        for (_, l) in m2.loras_mut() {
            let v = candle_core::Var::from_tensor(&l.b).unwrap();
            l.b = v.as_tensor().clone();
            vars.push(v);
        }
        m2.set_training(true, 0);
        let t = Instant::now();
        let l = loss::weighted_loss(&m2, &mb1).unwrap();
        let f2 = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _g = m2.backward(&l).unwrap();
        println!(
            "with LoRA: forward+loss {f2:.2}s, backward {:.2}s",
            t.elapsed().as_secs_f64()
        );
        let _ = l;
    }
    for method in ["lora", "full"] {
        let m = load_model(&source, &dev)?;
        let opts = TrainOptions {
            method: if method == "full" {
                Method::Full
            } else {
                Method::Lora(LoraConfig {
                    rank: 16,
                    alpha: 32.0,
                    dropout: 0.05,
                    targets: gatt_runtime::llama::LINEAR_NAMES
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                })
            },
            batch_tokens: budget,
            ..TrainOptions::default()
        };
        let mut tr = Trainer::new(m, examples.clone(), opts, &dev)?;
        for _ in 0..steps {
            let log = tr.train_step()?;
            println!(
                "{method}: step {} {} tokens in {:.2}s = {:.1} tok/s",
                log.step,
                log.tokens,
                log.seconds,
                log.tokens as f64 / log.seconds
            );
        }
    }
    Ok(())
}
