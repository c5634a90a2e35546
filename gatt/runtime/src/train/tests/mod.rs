//! Training on a tiny random llama/qwen2 made in memory.

use super::loss::{token_nll, weighted_loss, MicroBatch, StepTotals};
use super::*;
use crate::kernels::rows::randn;
use crate::llama::tests::{full_logits, tiny_gguf};
use crate::llama::Weights;
use candle_core::quantized::gguf_file;
use gatt::mask::IGNORE;
use std::io::Cursor;

mod layers;

fn tiny(arch: &str) -> Model {
    let mut r = Cursor::new(tiny_gguf(arch));
    let ct = gguf_file::Content::read(&mut r).unwrap();
    Model::from_gguf(&ct, &mut r, &Device::Cpu, Weights::Dense).unwrap()
}

/// Loss on the last `k` tokens.
fn example(ids: &[u32], k: usize) -> Example {
    let n = ids.len();
    Example {
        ids: ids.to_vec(),
        labels: ids
            .iter()
            .enumerate()
            .map(|(j, &t)| if j >= n - k { t as i64 } else { IGNORE })
            .collect(),
    }
}

fn examples() -> Vec<Example> {
    vec![
        example(&[1, 5, 9, 13, 17, 21, 25, 2], 3),
        example(&[3, 6, 2], 1),
        example(&[7, 8, 9, 10, 11, 12, 13, 14, 15, 2], 5),
        example(&[40, 41, 42, 43, 2], 2),
        // Longer than 32 keys, next to short ones: padding well past a SIMD block.
        example(&(0..45u32).map(|i| (i * 7 + 3) % 60).collect::<Vec<_>>(), 6),
    ]
}

/// The weighted loss of `batch` as one step.
fn batch_loss(m: &Model, batch: &[&Example], mean: LossMean) -> f64 {
    let totals = StepTotals::of(batch.iter().copied());
    let mb = MicroBatch::new(batch, mean, totals, &Device::Cpu).unwrap();
    weighted_loss(m, &mb).unwrap().to_scalar::<f32>().unwrap() as f64
}

/// Gradients equal up to float rounding.
fn assert_same_grads(a: &[Vec<f32>], b: &[Vec<f32>]) {
    assert_grads_close(b, a, 1e-6, "");
}

/// Every element of `got` within `tol * (1 + |want|)` of `want`, tensor by tensor (each
/// one present, of the same length); `what` names the case in a failure.
fn assert_grads_close(got: &[Vec<f32>], want: &[Vec<f32>], tol: f32, what: &str) {
    for (i, (x, y)) in got.iter().zip(want).enumerate() {
        assert_eq!(x.len(), y.len(), "{what} gradient {i} is missing");
        for (p, q) in x.iter().zip(y) {
            assert!(
                (p - q).abs() <= tol * (1.0 + q.abs()),
                "{what} gradient {i}: {p} vs {q}"
            );
        }
    }
}

fn grads_of(
    model: &Model,
    batch: &[&Example],
    totals: StepTotals,
    params: &[Var],
) -> Vec<Vec<f32>> {
    let mb = MicroBatch::new(batch, LossMean::Token, totals, &Device::Cpu).unwrap();
    grads_in(model, &mb, params)
}

/// Each parameter's gradient of the micro-batch's weighted loss (empty where none).
fn grads_in(model: &Model, mb: &MicroBatch, params: &[Var]) -> Vec<Vec<f32>> {
    let g = model.backward(&weighted_loss(model, mb).unwrap()).unwrap();
    params
        .iter()
        .map(|v| {
            g.get(v.as_tensor())
                .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .unwrap_or_default()
        })
        .collect()
}

fn trainable(model: &mut Model) -> Vec<Var> {
    let mut vars = Vec::new();
    for (_, _, t) in model.weights_mut() {
        let v = Var::from_tensor(t).unwrap();
        *t = v.as_tensor().clone();
        vars.push(v);
    }
    model.retie().unwrap();
    model.set_training(true, 0);
    vars
}

#[test]
fn loss_equals_cross_entropy_computed_by_hand_from_the_inference_model() {
    for arch in ["llama", "qwen2"] {
        let exs = examples();
        let refs: Vec<&Example> = exs.iter().collect();
        // Reference: for every target, run the inference model (fused kernels, KV cache)
        // on the prefix alone and take -log softmax of the label, in f64.
        let m = tiny(arch);
        let mut sum = 0f64;
        let mut n = 0;
        for e in &exs {
            for (j, label) in e.targets() {
                let row = full_logits(&m, &e.ids[..=j]);
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = max
                    + row
                        .iter()
                        .map(|&x| (x as f64 - max).exp())
                        .sum::<f64>()
                        .ln();
                sum += lse - row[label as usize] as f64;
                n += 1;
            }
        }
        let expected = sum / n as f64;
        // Ours: one padded batch of all four, differentiable kernels.
        let mut m = tiny(arch);
        m.set_training(true, 0);
        let mb = MicroBatch::new(
            &refs,
            LossMean::Token,
            StepTotals::of(refs.iter().copied()),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(mb.n_loss, n);
        let got = batch_loss(&m, &refs, LossMean::Token);
        assert!((got - expected).abs() < 1e-4, "{arch}: {got} vs {expected}");
        // Sample mean: the mean of per-sample means.
        let nll = token_nll(&m, &mb).unwrap().to_vec1::<f32>().unwrap();
        let mut at = 0;
        let mut per_sample = Vec::new();
        for e in &exs {
            let k = e.n_targets();
            per_sample.push(nll[at..at + k].iter().map(|&x| x as f64).sum::<f64>() / k as f64);
            at += k;
        }
        let got = batch_loss(&m, &refs, LossMean::Sample);
        let want = per_sample.iter().sum::<f64>() / per_sample.len() as f64;
        assert!(
            (got - want).abs() < 1e-5,
            "{arch}: sample mean {got} vs {want}"
        );
    }
}

#[test]
fn ignored_tokens_and_padding_contribute_exactly_zero_gradient() {
    let mut m = tiny("llama");
    let vars = trainable(&mut m);
    let a = example(&[1, 5, 9, 13, 17, 21, 25, 2], 3);
    // Longer than `a` (so `a` gets padded) and with every label ignored.
    let mut silent = example(&[7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 2], 1);
    silent.labels = vec![IGNORE; silent.ids.len()];
    let totals = StepTotals::of([&a]);
    let alone = grads_of(&m, &[&a], totals, &vars);
    let with_silent = grads_of(&m, &[&a, &silent], totals, &vars);
    assert!(alone.iter().any(|g| g.iter().any(|x| *x != 0.0)));
    assert_same_grads(&alone, &with_silent);
    // Changing a token after the last loss position changes nothing either.
    let mut b = a.clone();
    b.ids.push(33);
    b.labels.push(IGNORE);
    assert_same_grads(&alone, &grads_of(&m, &[&b], totals, &vars));
}

#[test]
fn packed_sequences_give_the_loss_and_gradients_of_each_sequence_alone() {
    for arch in ["llama", "qwen2"] {
        let mut m = tiny(arch);
        let vars = trainable(&mut m);
        let exs = examples();
        let refs: Vec<&Example> = exs.iter().collect();
        let totals = StepTotals::of(refs.iter().copied());
        // Reference: one padded single-sequence batch at a time, summed.
        let (mut loss, mut grads) = (0f32, Vec::<Vec<f32>>::new());
        for e in &refs {
            let mb = MicroBatch::new(&[*e], LossMean::Token, totals, &Device::Cpu).unwrap();
            loss += weighted_loss(&m, &mb).unwrap().to_scalar::<f32>().unwrap();
            let one = grads_in(&m, &mb, &vars);
            if grads.is_empty() {
                grads = one;
            } else {
                for (a, b) in grads.iter_mut().zip(&one) {
                    a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                }
            }
        }
        assert!(
            grads.iter().all(|g| !g.is_empty()),
            "{arch}: every weight has a gradient"
        );
        let mb = MicroBatch::packed(&refs, LossMean::Token, totals, &Device::Cpu).unwrap();
        let l = weighted_loss(&m, &mb).unwrap();
        assert!(
            (l.to_scalar::<f32>().unwrap() - loss).abs() < 1e-5,
            "{arch}"
        );
        assert_grads_close(&grads_in(&m, &mb, &vars), &grads, 1e-5, arch);
    }
}

#[test]
fn gradients_match_finite_differences() {
    // One weight of the first query projection, nudged both ways.
    let exs = examples();
    let refs: Vec<&Example> = exs.iter().collect();
    let totals = StepTotals::of(refs.iter().copied());
    let mut m = tiny("qwen2");
    let vars = trainable(&mut m);
    let idx = vars
        .iter()
        .position(|v| v.dims().len() == 2 && v.dim(1).unwrap() == 32 && v.dim(0).unwrap() == 32)
        .unwrap();
    let analytic = grads_of(&m, &refs, totals, &vars)[idx][5] as f64;
    let base = vars[idx]
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let loss_at = |delta: f32| {
        let mut w = base.clone();
        w[5] += delta;
        vars[idx]
            .set(&Tensor::from_vec(w, vars[idx].shape(), &Device::Cpu).unwrap())
            .unwrap();
        batch_loss(&m, &refs, LossMean::Token)
    };
    let h = 1e-2;
    let numeric = (loss_at(h) - loss_at(-h)) / (2.0 * h as f64);
    assert!(
        (analytic - numeric).abs() < 2e-3 + 0.05 * numeric.abs(),
        "analytic {analytic} vs numeric {numeric}"
    );
}

fn opts(method: Method) -> TrainOptions {
    TrainOptions {
        method,
        lr: 1e-2,
        epochs: 6,
        batch_tokens: 24,
        warmup_ratio: 0.1,
        ..TrainOptions::default()
    }
}

fn lora() -> Method {
    Method::Lora(LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.1,
        targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
    })
}

/// Token-mean loss over all examples, inference kernels.
fn data_loss(m: &Model) -> f64 {
    let exs = examples();
    let refs: Vec<&Example> = exs.iter().collect();
    batch_loss(m, &refs, LossMean::Token)
}

#[test]
fn full_and_lora_training_lower_the_loss() {
    for method in [Method::Full, lora()] {
        let before = data_loss(&tiny("llama"));
        let mut t = Trainer::new(
            tiny("llama"),
            examples(),
            opts(method.clone()),
            &Device::Cpu,
        )
        .unwrap();
        for _ in 0..t.total_steps() {
            t.train_step().unwrap();
        }
        let after = data_loss(&t.into_model());
        assert!(after < before * 0.8, "{method:?}: {before} -> {after}");
    }
}

/// A micro-batch run in chunks (here about one sample each) has the loss and gradients
/// of the whole micro-batch run at once, full and LoRA (both adapter matrices non-zero,
/// so that every gradient is checked), and the chunks are whole samples.
#[test]
fn chunked_micro_batches_give_the_loss_and_gradients_of_the_whole() {
    let adapters = Method::Lora(LoraConfig {
        dropout: 0.0,
        ..match lora() {
            Method::Lora(c) => c,
            Method::Full => unreachable!(),
        }
    });
    for method in [Method::Full, adapters] {
        let o = TrainOptions {
            batch_tokens: 1000,
            ..opts(method.clone())
        };
        let mut t = Trainer::new(tiny("llama"), examples(), o, &Device::Cpu).unwrap();
        for p in t.params.iter().filter(|p| p.name.ends_with("lora_B")) {
            let b = randn(0f32, 0.5, p.var.shape(), &Device::Cpu).unwrap();
            p.var.set(&b).unwrap();
        }
        t.model_mut().set_training(true, 0);
        let micro = t.plan[..1].to_vec();
        assert_eq!(micro[0].len(), examples().len(), "one micro-batch of all");
        let totals = StepTotals::of(micro[0].iter().map(|&i| &t.examples[i]));
        let (whole, loss, tokens, _) = t.gradients(&micro, totals).unwrap();
        t.set_chunk_tokens(12);
        let cut = chunks(&micro[0], &t.examples, 12);
        assert!(cut.len() >= 4, "{cut:?}");
        assert_eq!(cut.concat(), micro[0]);
        let (chunked, loss2, tokens2, _) = t.gradients(&micro, totals).unwrap();
        assert_eq!(tokens, tokens2);
        assert!((loss - loss2).abs() < 1e-6, "{method:?}: {loss} vs {loss2}");
        let flat = |g: &[Tensor]| -> Vec<Vec<f32>> {
            g.iter()
                .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .collect()
        };
        let (a, b) = (flat(&whole), flat(&chunked));
        for (g, p) in a.iter().zip(&t.params) {
            assert!(g.iter().any(|x| *x != 0.0), "{method:?}: {}", p.name);
        }
        assert_grads_close(&b, &a, 1e-5, &format!("{method:?}"));
    }
}

#[test]
fn resuming_from_saved_state_is_bit_identical() {
    for method in [Method::Full, lora()] {
        let mut straight = Trainer::new(
            tiny("llama"),
            examples(),
            opts(method.clone()),
            &Device::Cpu,
        )
        .unwrap();
        for _ in 0..4 {
            straight.train_step().unwrap();
        }
        let mut first = Trainer::new(
            tiny("llama"),
            examples(),
            opts(method.clone()),
            &Device::Cpu,
        )
        .unwrap();
        first.train_step().unwrap();
        first.train_step().unwrap();
        let saved = first.state_tensors();
        drop(first);
        let mut resumed = Trainer::new(
            tiny("llama"),
            examples(),
            opts(method.clone()),
            &Device::Cpu,
        )
        .unwrap();
        resumed.restore(&saved, 2).unwrap();
        resumed.train_step().unwrap();
        resumed.train_step().unwrap();
        let (a, b) = (straight.param_tensors(), resumed.param_tensors());
        assert_eq!(a.len(), b.len());
        for (k, x) in &a {
            let x = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let y = b[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(x == y, "{method:?}: {k} differs after resume");
        }
    }
}

#[test]
fn merged_lora_gives_the_logits_of_base_plus_adapter_and_survives_the_peft_round_trip() {
    for arch in ["llama", "qwen2"] {
        let mut t = Trainer::new(tiny(arch), examples(), opts(lora()), &Device::Cpu).unwrap();
        for _ in 0..3 {
            t.train_step().unwrap();
        }
        let mut adapted = t.into_model();
        let ids = [1u32, 5, 9, 13, 17];
        let with_adapter = full_logits(&adapted, &ids);
        let base = full_logits(&tiny(arch), &ids);
        assert!(
            with_adapter
                .iter()
                .zip(&base)
                .any(|(a, b)| (a - b).abs() > 1e-3),
            "adapter did nothing"
        );
        // peft layout out and back in, on a fresh base.
        let dir = tempfile::tempdir().unwrap();
        let Method::Lora(cfg) = lora() else {
            unreachable!()
        };
        lora::save_peft(&mut adapted, &cfg, "base", &dir.path().join("adapter")).unwrap();
        let mut reloaded = tiny(arch);
        lora::load_peft(&mut reloaded, &dir.path().join("adapter"), &Device::Cpu).unwrap();
        let round = full_logits(&reloaded, &ids);
        reloaded.merge_lora().unwrap();
        let merged = full_logits(&reloaded, &ids);
        for ((a, b), c) in with_adapter.iter().zip(&round).zip(&merged) {
            assert!(
                (a - b).abs() < 1e-4 && (a - c).abs() < 1e-4,
                "{arch}: {a} {b} {c}"
            );
        }
    }
}

#[test]
fn hugging_face_export_loads_back_to_the_same_logits() {
    for arch in ["llama", "qwen2"] {
        let mut m = tiny(arch);
        let dir = tempfile::tempdir().unwrap();
        let tensors = crate::llama::hf::export_tensors(&mut m).unwrap();
        candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
        let cfg = crate::llama::hf::config_to_json(&m.cfg, None, Some(2));
        std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
        let back = crate::llama::hf::load_dir(dir.path(), &Device::Cpu).unwrap();
        let ids = [3u32, 17, 5, 42, 9];
        let (a, b) = (full_logits(&m, &ids), full_logits(&back, &ids));
        assert!(
            a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5),
            "{arch}"
        );
        assert_eq!(back.cfg, m.cfg);
    }
}

#[test]
fn a_diverging_run_stops_with_a_clear_error_instead_of_writing_nan_weights() {
    let o = TrainOptions {
        lr: 1e30,
        max_grad_norm: 0.0,
        ..opts(Method::Full)
    };
    let mut t = Trainer::new(tiny("llama"), examples(), o, &Device::Cpu).unwrap();
    let mut err = None;
    for _ in 0..t.total_steps() {
        if let Err(e) = t.train_step() {
            err = Some(e.to_string());
            break;
        }
    }
    let e = err.expect("a 1e30 learning rate must blow up");
    assert!(
        e.contains("nothing was updated") && e.contains("learning rate"),
        "{e}"
    );
}

#[test]
fn data_checks_count_empty_samples_and_refuse_another_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.jsonl");
    let line = |id: &str, ids: &[u32], labels: &[i64]| {
        serde_json::json!({"id": id, "input_ids": ids, "labels": labels}).to_string() + "\n"
    };
    std::fs::write(
        &p,
        line("a", &[1, 2, 3], &[IGNORE, 2, 3])
            + &line("empty", &[1, 2], &[IGNORE, IGNORE])
            + &line("long", &[3; 9], &[3; 9]),
    )
    .unwrap();
    let (ex, skipped) = data::load(&p, 64, &[3], 8).unwrap();
    assert_eq!(ex.len(), 1);
    assert_eq!((skipped.no_loss_tokens, skipped.too_long), (1, 1));
    // Last loss token is not the model's end of turn: masked for another model. The
    // first sample is row 0, as the inspect command counts.
    let e = data::load(&p, 64, &[7], 8).unwrap_err().to_string();
    assert!(e.contains("row 0") && e.contains("end-of-turn"), "{e}");
    // A final reply trained without its end-of-turn token (`--cut-replies drop-eot`),
    // in a sample that holds the end-of-turn token earlier: accepted.
    std::fs::write(&p, line("cut", &[5, 3, 6, 8], &[IGNORE, IGNORE, 6, 8])).unwrap();
    assert_eq!(data::load(&p, 64, &[3], 8).unwrap().0.len(), 1);
    // A label that is not the input id at its position: refused, naming the field.
    std::fs::write(
        &p,
        line("a", &[1, 2, 3], &[IGNORE, 2, 3]) + &line("x", &[1, 2, 3], &[IGNORE, 5, 3]),
    )
    .unwrap();
    let e = data::load(&p, 64, &[3], 8).unwrap_err().to_string();
    assert!(e.contains("row 1") && e.contains("labels[1]"), "{e}");
}

/// peft settings that change the math: rank-stabilized scaling (alpha / sqrt(r)) is
/// applied; settings gatt does not implement are refused, never ignored.
#[test]
fn peft_settings_are_applied_or_refused() {
    let mut t = Trainer::new(tiny("llama"), examples(), opts(lora()), &Device::Cpu).unwrap();
    t.train_step().unwrap();
    let mut adapted = t.into_model();
    let ids = [1u32, 5, 9, 13, 17];
    let expected = full_logits(&adapted, &ids);
    let Method::Lora(cfg) = lora() else {
        unreachable!()
    };
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("adapter");
    lora::save_peft(&mut adapted, &cfg, "base", &adapter).unwrap();
    let config_path = adapter.join("adapter_config.json");
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = original.clone();
        edit(&mut v);
        std::fs::write(&config_path, v.to_string()).unwrap();
        let mut m = tiny("llama");
        lora::load_peft(&mut m, &adapter, &Device::Cpu).map(|_| full_logits(&m, &ids))
    };
    // rsLoRA with alpha' = alpha * sqrt(r) / r scales by alpha' / sqrt(r) = alpha / r.
    let r = cfg.rank as f64;
    let logits = with(&|v| {
        v["use_rslora"] = true.into();
        v["lora_alpha"] = (cfg.alpha * r.sqrt() / r).into();
    })
    .unwrap();
    for (a, b) in logits.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-4, "{a} {b}");
    }
    for (key, value) in [
        ("use_dora", serde_json::json!(true)),
        ("rank_pattern", serde_json::json!({"q_proj": 4})),
        ("layers_to_transform", serde_json::json!([0])),
        ("bias", serde_json::json!("lora_only")),
        ("modules_to_save", serde_json::json!(["lm_head"])),
    ] {
        let e = with(&|v| v[key] = value.clone()).unwrap_err();
        assert!(e.is_input() && e.to_string().contains(key), "{key}: {e}");
    }
}
