//! The decoder layers run as one op (`kernels::decoder_layer`) against the composed
//! layers: full fine-tuning and LoRA, and what must not leak between steps.

use super::*;

#[test]
fn one_op_layers_give_the_loss_and_gradients_of_the_composed_layers() {
    let exs = examples();
    let refs: Vec<&Example> = exs.iter().collect();
    let totals = StepTotals::of(refs.iter().copied());
    let mb = MicroBatch::packed(&refs, LossMean::Token, totals, &Device::Cpu).unwrap();
    let model = || {
        let mut m = tiny("llama");
        let vars = trainable(&mut m);
        // Norm weights away from 1 and unlike each other, so that a norm weight misused
        // in a gradient shows.
        for (j, v) in vars.iter().enumerate().filter(|(_, v)| v.rank() == 1) {
            let n = v.dim(0).unwrap();
            let w: Vec<f32> = (0..n)
                .map(|i| 0.5 + ((i * 7 + j * 3) % 11) as f32 / 10.0)
                .collect();
            v.set(&Tensor::from_vec(w, n, &Device::Cpu).unwrap())
                .unwrap();
        }
        (m, vars)
    };
    // The layers ran as one op each: candle's own backward pass does not reach their
    // nine weights, which the model's backward pass adds.
    let (m, vars) = model();
    let raw = weighted_loss(&m, &mb).unwrap().backward().unwrap();
    let outside = vars.iter().filter(|v| raw.get(v.as_tensor()).is_none());
    assert_eq!(outside.count(), 2 * 9);
    let (mut m, vars) = model();
    let loss = |m: &Model| weighted_loss(m, &mb).unwrap().to_scalar::<f32>().unwrap();
    let (fused_loss, fused) = (loss(&m), grads_in(&m, &mb, &vars));
    m.set_fused_layers(false);
    let (composed_loss, composed) = (loss(&m), grads_in(&m, &mb, &vars));
    assert!((fused_loss - composed_loss).abs() < 1e-5);
    for (i, want) in composed.iter().enumerate() {
        assert!(want.iter().any(|&x| x != 0.0), "gradient {i} is zero");
    }
    assert_grads_close(&fused, &composed, 1e-5, "");
}

/// LoRA through the one-op layers: the adapters' gradients equal the composed layers',
/// with dropout (the same masks drawn), without, on some projections or all, and with
/// enough rows that the adapters are merged into the weights for the products.
#[test]
fn one_op_layers_give_the_adapters_gradients_of_the_composed_layers() {
    let all: Vec<String> = crate::llama::LINEAR_NAMES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let some: Vec<String> = ["q_proj", "v_proj", "down_proj"].map(String::from).to_vec();
    for (dropout, copies, targets) in [(0.1, 1, &all), (0.0, 1, &some), (0.0, 4, &all)] {
        let exs: Vec<Example> = (0..copies).flat_map(|_| examples()).collect();
        let refs: Vec<&Example> = exs.iter().collect();
        let totals = StepTotals::of(refs.iter().copied());
        let mb = MicroBatch::packed(&refs, LossMean::Token, totals, &Device::Cpu).unwrap();
        let mut m = tiny("llama");
        let cfg = LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout,
            targets: targets.clone(),
        };
        lora::attach(&mut m, &cfg, 7, &Device::Cpu).unwrap();
        let mut vars = Vec::new();
        for (_, l) in m.loras_mut() {
            for t in [&mut l.a, &mut l.b] {
                let v = Var::from_tensor(t).unwrap();
                *t = v.as_tensor().clone();
                vars.push(v);
            }
        }
        // B away from zero (peft starts it at zero, where A's gradient is zero too).
        for (j, v) in vars.iter().enumerate().skip(1).step_by(2) {
            let n = v.elem_count();
            let b: Vec<f32> = (0..n)
                .map(|i| ((i * 13 + j * 5) % 17) as f32 / 40.0 - 0.2)
                .collect();
            v.set(&Tensor::from_vec(b, v.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
        // The one-op layers ran: candle's own backward pass does not reach the adapters
        // of the second layer (the first layer's input, the frozen embedding, is outside
        // the graph, so it stays composed).
        m.set_training(true, 3);
        let raw = weighted_loss(&m, &mb).unwrap().backward().unwrap();
        let outside = vars.iter().filter(|v| raw.get(v.as_tensor()).is_none());
        assert_eq!(outside.count(), 2 * targets.len(), "{dropout} {copies}");
        let mut run = |fused: bool| {
            m.set_fused_layers(fused);
            m.set_training(true, 3);
            let l = weighted_loss(&m, &mb).unwrap().to_scalar::<f32>().unwrap();
            m.set_training(true, 3);
            (l, grads_in(&m, &mb, &vars))
        };
        let (fused_loss, fused) = run(true);
        let (composed_loss, composed) = run(false);
        assert!(
            (fused_loss - composed_loss).abs() < 1e-5,
            "{dropout} {copies}"
        );
        for (i, want) in composed.iter().enumerate() {
            assert!(want.iter().any(|&x| x != 0.0), "gradient {i} is zero");
        }
        assert_grads_close(&fused, &composed, 1e-5, &format!("{dropout} {copies}:"));
    }
}

/// A raw `loss.backward()` of a one-op pass leaves sums in the model; the next step,
/// padded here, must not pick them up.
#[test]
fn a_raw_backward_pass_leaves_nothing_for_the_next_step() {
    let mut m = tiny("llama");
    let vars = trainable(&mut m);
    let exs = examples();
    let refs: Vec<&Example> = exs.iter().collect();
    let totals = StepTotals::of(refs.iter().copied());
    let packed = MicroBatch::packed(&refs, LossMean::Token, totals, &Device::Cpu).unwrap();
    let padded = MicroBatch::new(&refs, LossMean::Token, totals, &Device::Cpu).unwrap();
    let want = grads_in(&m, &padded, &vars);
    weighted_loss(&m, &packed).unwrap().backward().unwrap();
    assert_same_grads(&grads_in(&m, &padded, &vars), &want);
}

/// A layer weight computed from a variable (not the variable itself) keeps the composed
/// layer, which passes its gradient on.
#[test]
fn a_weight_computed_from_a_variable_keeps_its_gradient() {
    let mut m = tiny("llama");
    let mut vars = Vec::new();
    for (name, _, t) in m.weights_mut() {
        let v = Var::from_tensor(t).unwrap();
        *t = if name == "model.layers.0.self_attn.q_proj.weight" {
            (v.as_tensor() * 1.0).unwrap()
        } else {
            v.as_tensor().clone()
        };
        vars.push(v);
    }
    m.retie().unwrap();
    m.set_training(true, 0);
    let exs = examples();
    let refs: Vec<&Example> = exs.iter().collect();
    let totals = StepTotals::of(refs.iter().copied());
    let mb = MicroBatch::packed(&refs, LossMean::Token, totals, &Device::Cpu).unwrap();
    let fused = grads_in(&m, &mb, &vars);
    m.set_fused_layers(false);
    let composed = grads_in(&m, &mb, &vars);
    for (i, (got, want)) in fused.iter().zip(&composed).enumerate() {
        assert_eq!(got.len(), want.len(), "gradient {i} is missing");
    }
    assert_same_grads(&fused, &composed);
}
