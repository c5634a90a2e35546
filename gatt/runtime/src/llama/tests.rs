//! A tiny random llama, written as a GGUF in memory and loaded by the real loader.

use super::*;
use candle_core::quantized::{gguf_file, gguf_file::Value, GgmlDType, QTensor};
use std::io::Cursor;

pub(crate) fn tiny_gguf(arch: &str) -> Vec<u8> {
    tiny_gguf_as(arch, false)
}

/// With `quantized`, matrices whose rows are whole 32-element blocks are stored as Q4_1
/// and the embedding (the tied output projection) as Q8_0, as in the default model.
fn tiny_gguf_as(arch: &str, quantized: bool) -> Vec<u8> {
    tiny_gguf_edited(arch, quantized, &|_| {})
}

/// GGUF metadata as written: (key, value) pairs.
type Metadata = Vec<(String, Value)>;

/// [`tiny_gguf_as`] with its metadata changed by `edit` before writing.
fn tiny_gguf_edited(arch: &str, quantized: bool, edit: &dyn Fn(&mut Metadata)) -> Vec<u8> {
    tiny_gguf_wide(arch, quantized, edit, 48)
}

/// [`tiny_gguf_edited`] with an MLP `ff` wide (48 leaves the down projection without
/// blocks; 64 gives every matrix blocks when `quantized`).
fn tiny_gguf_wide(arch: &str, quantized: bool, edit: &dyn Fn(&mut Metadata), ff: usize) -> Vec<u8> {
    let dev = Device::Cpu;
    let (vocab, hidden, layers, heads, kv) = (64usize, 32usize, 2usize, 4usize, 2usize);
    let hd = hidden / heads;
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut seed = 0u64;
    let mut rand = |shape: &[usize]| {
        seed += 1;
        // Deterministic pseudo-random weights in [-0.5, 0.5).
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|i| {
                let x = ((i as u64 + 1) * 2654435761 + seed * 40503) % 1000;
                x as f32 / 1000.0 - 0.5
            })
            .collect();
        let t = Tensor::from_vec(data, shape, &dev).unwrap();
        QTensor::quantize(&t, GgmlDType::F32).unwrap()
    };
    let ones = |n: usize| {
        QTensor::quantize(
            &Tensor::ones(n, DType::F32, &Device::Cpu).unwrap(),
            GgmlDType::F32,
        )
        .unwrap()
    };
    tensors.push(("token_embd.weight".into(), rand(&[vocab, hidden])));
    tensors.push(("output_norm.weight".into(), ones(hidden)));
    for l in 0..layers {
        let p = format!("blk.{l}");
        tensors.push((format!("{p}.attn_norm.weight"), ones(hidden)));
        tensors.push((format!("{p}.ffn_norm.weight"), ones(hidden)));
        tensors.push((format!("{p}.attn_q.weight"), rand(&[heads * hd, hidden])));
        tensors.push((format!("{p}.attn_k.weight"), rand(&[kv * hd, hidden])));
        tensors.push((format!("{p}.attn_v.weight"), rand(&[kv * hd, hidden])));
        tensors.push((
            format!("{p}.attn_output.weight"),
            rand(&[hidden, heads * hd]),
        ));
        tensors.push((format!("{p}.ffn_gate.weight"), rand(&[ff, hidden])));
        tensors.push((format!("{p}.ffn_up.weight"), rand(&[ff, hidden])));
        tensors.push((format!("{p}.ffn_down.weight"), rand(&[hidden, ff])));
        if arch == "qwen2" {
            tensors.push((format!("{p}.attn_q.bias"), rand(&[heads * hd])));
            tensors.push((format!("{p}.attn_k.bias"), rand(&[kv * hd])));
            tensors.push((format!("{p}.attn_v.bias"), rand(&[kv * hd])));
        }
    }
    if quantized {
        for (name, t) in tensors.iter_mut() {
            let dtype = match t.shape().dims() {
                _ if name == "token_embd.weight" => GgmlDType::Q8_0,
                [_, k] if k % 32 == 0 => GgmlDType::Q4_1,
                _ => continue,
            };
            *t = QTensor::quantize(&t.dequantize(&dev).unwrap(), dtype).unwrap();
        }
    }
    let md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (format!("{arch}.block_count"), Value::U32(layers as u32)),
        (
            format!("{arch}.embedding_length"),
            Value::U32(hidden as u32),
        ),
        (
            format!("{arch}.attention.head_count"),
            Value::U32(heads as u32),
        ),
        (
            format!("{arch}.attention.head_count_kv"),
            Value::U32(kv as u32),
        ),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        ),
        (format!("{arch}.rope.freq_base"), Value::F32(10000.0)),
        (format!("{arch}.context_length"), Value::U32(128)),
    ];
    let mut md = md;
    edit(&mut md);
    let mut buf = Cursor::new(Vec::new());
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut buf, &md_refs, &t_refs).unwrap();
    buf.into_inner()
}

fn load(arch: &str) -> Model {
    load_as(arch, false, Weights::Quantized)
}

fn load_as(arch: &str, quantized: bool, weights: Weights) -> Model {
    let bytes = tiny_gguf_as(arch, quantized);
    let mut r = Cursor::new(bytes);
    let ct = gguf_file::Content::read(&mut r).unwrap();
    Model::from_gguf(&ct, &mut r, &Device::Cpu, weights).unwrap()
}

/// Both inference paths: weights as stored (f32 file, the f32 product), and the default
/// for quantized files: the file's blocks, for prompts and decoding steps alike. The
/// second also returns a tolerance: its products quantize activations to 8 bits.
fn both_paths(arch: &str) -> [(&'static str, Model, f32); 2] {
    [
        ("f32 file", load(arch), 1e-4),
        ("quantized file", load_as(arch, true, Weights::Dense), 3e-2),
    ]
}

pub(crate) fn full_logits(m: &Model, prompt: &[u32]) -> Vec<f32> {
    let mut cache = Cache::new(&m.cfg, 64);
    let b = pad_prompts(&[prompt.to_vec()], 0, &Device::Cpu).unwrap();
    logits_rows(
        &m.forward(&b.tokens, &b.positions, &b.pad, &mut cache)
            .unwrap(),
    )
    .unwrap()
    .remove(0)
}

fn close(a: &[f32], b: &[f32]) -> bool {
    close_within(a, b, 1e-4)
}

/// Every difference under `rel` times the largest magnitude in `a` (at least 1).
fn close_within(a: &[f32], b: &[f32], rel: f32) -> bool {
    let scale = a.iter().fold(1f32, |m, x| m.max(x.abs()));
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < rel * scale)
}

#[test]
fn incremental_decoding_matches_full_forward() {
    for (arch, (path, m, tol)) in ["llama", "qwen2"]
        .into_iter()
        .flat_map(|a| both_paths(a).map(|p| (a, p)))
    {
        let prompt = [3u32, 17, 5, 42, 9];
        let full = full_logits(&m, &prompt);
        // An f16 cache rounds keys and values to 11 significant bits.
        for (kv, tol) in [(DType::F32, tol), (DType::F16, tol.max(5e-3))] {
            let mut cache = Cache::with_dtype(&m.cfg, 64, kv);
            let b = pad_prompts(&[prompt[..3].to_vec()], 0, &Device::Cpu).unwrap();
            m.forward(&b.tokens, &b.positions, &b.pad, &mut cache)
                .unwrap();
            let mut last = Vec::new();
            for &t in &prompt[3..] {
                let (tok, pos) = step_inputs(&[t], &[0], cache.len(), &Device::Cpu).unwrap();
                last = logits_rows(&m.forward(&tok, &pos, &[0], &mut cache).unwrap())
                    .unwrap()
                    .remove(0);
            }
            assert!(
                close_within(&full, &last, tol),
                "{arch}, {path}, {kv:?} cache: cached decoding diverged"
            );
        }
    }
}

fn greedy(m: &Model, prompts: &[Vec<u32>], steps: usize, kv: DType) -> Vec<Vec<u32>> {
    let mut cache = Cache::with_dtype(&m.cfg, 64, kv);
    let b = pad_prompts(prompts, 0, &Device::Cpu).unwrap();
    let mut rows = logits_rows(
        &m.forward(&b.tokens, &b.positions, &b.pad, &mut cache)
            .unwrap(),
    )
    .unwrap();
    let mut out = vec![Vec::new(); prompts.len()];
    for _ in 0..steps {
        let next: Vec<u32> = rows
            .iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap()
                    .0 as u32
            })
            .collect();
        for (o, t) in out.iter_mut().zip(&next) {
            o.push(*t);
        }
        let (tok, pos) = step_inputs(&next, &b.pad, cache.len(), &Device::Cpu).unwrap();
        rows = logits_rows(&m.forward(&tok, &pos, &b.pad, &mut cache).unwrap()).unwrap();
    }
    out
}

#[test]
fn ragged_batch_matches_each_prompt_alone() {
    for (arch, (path, m, _)) in ["llama", "qwen2"]
        .into_iter()
        .flat_map(|a| both_paths(a).map(|p| (a, p)))
    {
        let prompts = vec![
            vec![1u32, 2, 3, 4, 5, 6, 7],
            vec![9u32, 8],
            vec![30u32, 31, 32, 33],
        ];
        for kv in [DType::F32, DType::F16] {
            let batched = greedy(&m, &prompts, 6, kv);
            for (p, b) in prompts.iter().zip(&batched) {
                assert_eq!(
                    &greedy(&m, std::slice::from_ref(p), 6, kv)[0],
                    b,
                    "{arch}, {path}, {kv:?} cache"
                );
            }
        }
        // Logits of the padded prompt step equal the unpadded ones.
        let mut cache = Cache::new(&m.cfg, 64);
        let b = pad_prompts(&prompts, 0, &Device::Cpu).unwrap();
        let rows = logits_rows(
            &m.forward(&b.tokens, &b.positions, &b.pad, &mut cache)
                .unwrap(),
        )
        .unwrap();
        for (p, row) in prompts.iter().zip(&rows) {
            assert!(
                close(&full_logits(&m, p), row),
                "{arch}, {path}: padding leaked"
            );
        }
    }
}

/// Logits after `tokens` with the sampling cache, the tokens fed in parts of the given
/// lengths (each part from a cache rebuilt out of the previous parts' keys and values, as
/// a kept conversation is), and the keys and values of every position.
fn logits_in_parts(m: &Model, tokens: &[u32], parts: &[usize]) -> (Vec<f32>, SeqKv) {
    let dtype = m.sampling_cache(0).dtype();
    let mut kept: Option<SeqKv> = None;
    let mut at = 0;
    let mut last = Vec::new();
    for &n in parts {
        let mut cache = match &kept {
            Some(kv) => Cache::from_sequences(&m.cfg, &[kv], n, dtype).unwrap().0,
            None => Cache::with_dtype(&m.cfg, n, dtype),
        };
        let ids = Tensor::new(&tokens[at..at + n], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let pos: Vec<u32> = (at as u32..(at + n) as u32).collect();
        let pos = Tensor::new(pos.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        last = logits_rows(&m.forward(&ids, &pos, &[0], &mut cache).unwrap())
            .unwrap()
            .remove(0);
        at += n;
        kept = Some(cache.sequence(0, 0, at).unwrap());
    }
    (last, kept.unwrap())
}

/// The premise of keeping conversations' caches: on the CPU's inference path a
/// position's logits, keys and values are bit for bit the same whether its tokens are
/// prefilled whole, in parts from a kept cache, or decoded one at a time, and a kept
/// prefix reused in a padded batch decodes the same tokens.
#[test]
fn prefill_in_parts_equals_one_prefill_bit_for_bit() {
    let every_matrix_in_blocks = |arch: &str| {
        let bytes = tiny_gguf_wide(arch, true, &|_| {}, 64);
        let mut r = Cursor::new(bytes);
        let ct = gguf_file::Content::read(&mut r).unwrap();
        Model::from_gguf(&ct, &mut r, &Device::Cpu, Weights::Dense).unwrap()
    };
    for arch in ["llama", "qwen2"] {
        // Products that gemm computes differ by their row count: not independent.
        for (path, m, _) in both_paths(arch) {
            assert!(!m.positions_independent(), "{arch}, {path}");
        }
        let m = every_matrix_in_blocks(arch);
        assert!(m.positions_independent(), "{arch}");
        let path = "blocks";
        let tokens: Vec<u32> = (0..23u32).map(|i| (i * 7 + 3) % 60).collect();
        let (whole, kv) = logits_in_parts(&m, &tokens, &[23]);
        for parts in [
            vec![10, 13],
            vec![2, 21],
            vec![22, 1],
            vec![1, 22],
            vec![21, 2],
            vec![1, 21, 1],
            vec![5, 5, 5, 8],
            vec![1; 23],
        ] {
            let (split, kv2) = logits_in_parts(&m, &tokens, &parts);
            assert_eq!(whole, split, "{arch}, {path}: parts {parts:?}");
            assert_eq!(kv.len(), kv2.len());
        }
        // A kept prefix, cut and extended, as the next turn of a conversation is.
        let prefix = kv.prefix(9).unwrap();
        let mut cache = Cache::from_sequences(&m.cfg, &[&prefix], 14, kv_dtype(&m))
            .unwrap()
            .0;
        let ids = Tensor::new(&tokens[9..], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let pos: Vec<u32> = (9..23u32).collect();
        let pos = Tensor::new(pos.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let resumed = logits_rows(&m.forward(&ids, &pos, &[0], &mut cache).unwrap())
            .unwrap()
            .remove(0);
        assert_eq!(whole, resumed, "{arch}, {path}: from a kept prefix");
        // Decoding steps in a padded batch of kept sequences of different lengths.
        let short = kv.prefix(4).unwrap();
        let (mut cache, pad) =
            Cache::from_sequences(&m.cfg, &[&kv, &short], 4, kv_dtype(&m)).unwrap();
        assert_eq!(pad, vec![0, 19]);
        let (tok, pos) = step_inputs(&[5, tokens[4]], &pad, cache.len(), &Device::Cpu).unwrap();
        let rows = logits_rows(&m.forward(&tok, &pos, &pad, &mut cache).unwrap()).unwrap();
        let mut longer = tokens.clone();
        longer.push(5);
        assert_eq!(
            rows[0],
            logits_in_parts(&m, &longer, &[24]).0,
            "{arch}, {path}"
        );
        assert_eq!(
            rows[1],
            logits_in_parts(&m, &tokens[..5], &[5]).0,
            "{arch}, {path}: padded row"
        );
    }
}

fn kv_dtype(m: &Model) -> DType {
    m.sampling_cache(0).dtype()
}

#[test]
fn decoding_steps_read_the_files_blocks_and_stay_close_to_dense_weights() {
    for arch in ["llama", "qwen2"] {
        let with_blocks = load_as(arch, true, Weights::Dense);
        let mut dense_only = load_as(arch, true, Weights::Dense);
        dense_only.drop_blocks();
        // Loaded where the rows are whole blocks (not ffn_down, 48 wide), and for the
        // tied output projection.
        let l = &with_blocks.layers[0];
        assert!(l.attn.q.blocks.is_some() && l.mlp.gate.blocks.is_some());
        assert!(l.mlp.down.blocks.is_none() && with_blocks.output.blocks.is_some());
        let step = |m: &Model| {
            let mut cache = Cache::new(&m.cfg, 64);
            let b = pad_prompts(&[vec![3u32, 17, 5]], 0, &Device::Cpu).unwrap();
            m.forward(&b.tokens, &b.positions, &b.pad, &mut cache)
                .unwrap();
            let (tok, pos) = step_inputs(&[9], &[0], cache.len(), &Device::Cpu).unwrap();
            logits_rows(&m.forward(&tok, &pos, &[0], &mut cache).unwrap())
                .unwrap()
                .remove(0)
        };
        let (a, b) = (step(&dense_only), step(&with_blocks));
        assert!(close_within(&a, &b, 3e-2), "{arch}: blocks drifted");
        // Different arithmetic (8-bit activations), so not bit-identical: the step did
        // not silently fall back to the dense product.
        assert!(a != b, "{arch}: the blocks were not used");
    }
}

#[test]
fn unsupported_architecture_is_a_clear_error() {
    let mut bytes = tiny_gguf("llama");
    // Rename the architecture in place ("llama" -> "lxama").
    let at = bytes.windows(5).position(|w| w == b"llama").unwrap();
    bytes[at + 1] = b'x';
    let mut r = Cursor::new(bytes);
    let ct = gguf_file::Content::read(&mut r).unwrap();
    let e = Model::from_gguf(&ct, &mut r, &Device::Cpu, Weights::Quantized)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("unsupported architecture"), "{e}");
}

#[test]
fn attention_maps_are_causal_distributions_per_layer_and_head() {
    for arch in ["llama", "qwen2"] {
        let m = load(arch);
        let ids = [3u32, 17, 5, 42, 9, 11];
        let before = full_logits(&m, &ids);
        let maps = m.attention_maps(&ids).unwrap();
        assert_eq!(maps.len(), m.cfg.n_layer);
        for a in &maps {
            assert_eq!(a.dims(), &[m.cfg.n_head, ids.len(), ids.len()]);
            for head in a.to_vec3::<f32>().unwrap() {
                for (i, row) in head.iter().enumerate() {
                    assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{arch}");
                    assert!(row[i + 1..].iter().all(|&x| x == 0.0), "{arch}: not causal");
                }
            }
        }
        // The first position can only attend to itself.
        assert!((maps[0].to_vec3::<f32>().unwrap()[0][0][0] - 1.0).abs() < 1e-6);
        // Capturing changes nothing for later calls.
        assert!(close(&before, &full_logits(&m, &ids)));
    }
}

#[test]
fn an_adapter_on_quantized_weights_is_not_merged_away_silently() {
    let mut m = load_as("llama", true, Weights::Quantized);
    m.add_lora(&["q_proj".to_string()], 2.0, 0.0, |_, n_in, n_out| {
        let a = Tensor::ones((n_in, 2), DType::F32, &Device::Cpu)?;
        let b = Tensor::ones((2, n_out), DType::F32, &Device::Cpu)?;
        Ok((a, b))
    })
    .unwrap();
    let e = m.merge_lora().unwrap_err();
    assert!(e.to_string().contains("quantized"), "{e}");
    assert!(!m.loras_mut().is_empty(), "the adapter is kept");
}

/// Metadata that is zero, absurd, or disagrees with the tensors is refused at load with a
/// message naming the key or tensor: never a division by zero, an allocation abort, or a
/// failure at generation.
#[test]
fn hostile_metadata_is_refused_naming_the_key() {
    let cases: [(&str, Value, &str); 10] = [
        (
            "llama.rope.freq_base",
            Value::String("1e4".into()),
            "freq_base` has the wrong type",
        ),
        ("llama.attention.key_length", Value::U32(16), "key_length"),
        (
            "llama.attention.head_count",
            Value::String("nine".into()),
            "head_count` has the wrong type",
        ),
        (
            "llama.attention.head_count",
            Value::U32(0),
            "llama.attention.head_count",
        ),
        (
            "llama.attention.head_count_kv",
            Value::U32(0),
            "head_count_kv",
        ),
        (
            "llama.attention.head_count_kv",
            Value::U32(3),
            "does not divide",
        ),
        (
            "llama.block_count",
            Value::U32(1_000_000_000),
            "llama.block_count",
        ),
        (
            "llama.context_length",
            Value::U32(4_000_000_000),
            "llama.context_length",
        ),
        (
            "llama.embedding_length",
            Value::U32(64),
            "token_embd.weight",
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(f32::NAN),
            "rms_epsilon",
        ),
    ];
    for (key, value, says) in cases {
        let bytes = tiny_gguf_edited("llama", false, &|md| match md
            .iter_mut()
            .find(|(k, _)| k == key)
        {
            Some((_, v)) => *v = value.clone(),
            None => md.push((key.to_string(), value.clone())),
        });
        let mut r = Cursor::new(bytes);
        let ct = gguf_file::Content::read(&mut r).unwrap();
        let e = match Model::from_gguf(&ct, &mut r, &Device::Cpu, Weights::Quantized) {
            Ok(_) => panic!("{key} = {value:?} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(says), "{key} = {value:?}: {e}");
    }
}

/// The summary reduced layer by layer equals the plain reduction of every layer's maps:
/// max and mean over layers and heads, and each head's mass on the key span.
#[test]
fn attention_summary_is_the_reduction_of_the_maps() {
    for arch in ["llama", "qwen2"] {
        let m = load(arch);
        let ids = [3u32, 17, 5, 42, 9, 11, 60, 2, 33];
        let n = ids.len();
        let keys = 2..5;
        let maps: Vec<Vec<Vec<Vec<f32>>>> = m
            .attention_maps(&ids)
            .unwrap()
            .iter()
            .map(|a| a.to_vec3::<f32>().unwrap())
            .collect();
        let s = m.attention_summary(&ids, keys.clone()).unwrap();
        let (nl, nh) = (m.cfg.n_layer, m.cfg.n_head);
        assert_eq!((s.len, s.layers, s.heads), (n, nl, nh));
        for i in 0..n {
            for j in 0..n {
                let all = maps.iter().flat_map(|l| l.iter().map(move |h| h[i][j]));
                let max = all.clone().fold(0f32, f32::max);
                let mean = all.sum::<f32>() / (nl * nh) as f32;
                assert_eq!(s.max[i * n + j], max, "{arch} max[{i}][{j}]");
                assert!((s.mean[i * n + j] - mean).abs() < 1e-6, "{arch} mean");
            }
            let row: f32 = s.mean[i * n..][..n].iter().sum();
            assert!(
                (row - 1.0).abs() < 1e-5,
                "{arch}: mean row {i} sums to {row}"
            );
            for (l, layer) in maps.iter().enumerate() {
                for (h, head) in layer.iter().enumerate() {
                    let want: f32 = keys.clone().filter(|&j| j <= i).map(|j| head[i][j]).sum();
                    let got = s.mass[(l * nh + h) * n + i];
                    assert!((got - want).abs() < 1e-6, "{arch} mass[{l}][{h}][{i}]");
                }
            }
        }
        // Queries before the span put no mass on it; the first token sees only itself.
        assert!(s.mass.chunks(n).all(|q| q[..2].iter().all(|&x| x == 0.0)));
        assert_eq!(s.max[0], 1.0);
    }
}

#[test]
fn attention_summary_refuses_empty_and_too_long_sequences() {
    let m = load("llama");
    assert!(m.attention_summary(&[], 0..0).is_err());
    let long = vec![1u32; m.cfg.context_length + 1];
    let e = m.attention_summary(&long, 0..1).unwrap_err().to_string();
    assert!(e.contains(&m.cfg.context_length.to_string()), "{e}");
}
