//! Throughput of loss masking (`--policy gatt`) against bare batch tokenization of the
//! same rendered text, in one process, with the model's own template and tokenizer.
//!
//! For each thread count (a rayon pool of exactly that many threads):
//! - `bare`: every dialogue is rendered with the chat template beforehand; only
//!   `Tokenizer::encode_batch` over the rendered texts is timed (it keeps every
//!   `Encoding` until the batch is done, as a caller of the batch API does).
//! - `bare_encode`: the same texts through a rayon `par_iter` of
//!   `Tokenizer::encode(text, false)`, each encoding dropped at once: the bare cost of
//!   tokenizing, the stricter baseline.
//! - `mask`: `Masker::mask` over all dialogues (render, tokenize, align, verify), timed.
//!
//! Each is repeated `--reps` times (bare and mask alternate, so drift hits both); the
//! summary line per thread count gives medians and the medians of the per-repetition
//! ratios mask_time / bare_time and mask_time / bare_encode_time. With `--phases` it also times, once, what `gatt mask`
//! does around the masks: reading and parsing the JSONL, and writing the Parquet output;
//! then the whole of it as `gatt mask` runs it (`gatt::mask::pipeline::mask_file`: read,
//! mask in parallel batches and write on another thread, overlapped).
//!
//! Usage:
//!   cargo run -p gatt --example mask_bench -- DIALOGUES.jsonl \
//!       [--threads 1,2] [--reps 3] [--model default] [--phases]
//!
//! Output: one JSON object per line; tokens/s counts the tokens of whole conversations.

use gatt::dataset::{read_all, Format, SampleWriter};
use gatt::mask::pipeline::{mask_file, OnError};
use gatt::mask::{MaskOptions, Masker};
use gatt::model::ModelSource;
use gatt::Dialogue;
use rayon::prelude::*;
use serde_json::json;
use std::time::Instant;

struct Args {
    input: String,
    threads: Vec<usize>,
    reps: usize,
    model: String,
    phases: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        input: String::new(),
        threads: vec![1, 2],
        reps: 3,
        model: "default".into(),
        phases: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .unwrap_or_else(|| die(&format!("{name} needs a value")))
        };
        match a.as_str() {
            "--threads" => {
                args.threads = val("--threads")
                    .split(',')
                    .map(|t| {
                        t.trim()
                            .parse()
                            .unwrap_or_else(|_| die("--threads: e.g. 1,2"))
                    })
                    .collect()
            }
            "--reps" => args.reps = val("--reps").parse().unwrap_or_else(|_| die("--reps N")),
            "--model" => args.model = val("--model"),
            "--phases" => args.phases = true,
            "-h" | "--help" => {
                eprintln!(
                    "usage: mask_bench DIALOGUES.jsonl [--threads 1,2] [--reps 3] \
                     [--model default] [--phases]"
                );
                std::process::exit(0);
            }
            _ if args.input.is_empty() && !a.starts_with("--") => args.input = a,
            _ => die(&format!("unexpected argument {a}")),
        }
    }
    if args.input.is_empty() {
        die("pass a dialogues .jsonl or .parquet file");
    }
    args.reps = args.reps.max(1);
    args
}

fn die(msg: &str) -> ! {
    eprintln!("mask_bench: {msg}");
    std::process::exit(2)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Seconds and total tokens of one bare pass.
fn bare(masker: &Masker, texts: &[String]) -> (f64, usize) {
    let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    let encs = masker
        .tokenizer()
        .encode_batch(inputs, false)
        .unwrap_or_else(|e| die(&format!("tokenizer: {e}")));
    let secs = t0.elapsed().as_secs_f64();
    let tokens = encs.iter().map(|e| e.len()).sum();
    drop(encs);
    (secs, tokens)
}

/// Seconds and total tokens of one pass of `encode` per text, results dropped at once.
fn bare_encode(masker: &Masker, texts: &[String]) -> (f64, usize) {
    let t0 = Instant::now();
    let tokens: usize = texts
        .par_iter()
        .map(|t| match masker.tokenizer().encode(t.as_str(), false) {
            Ok(e) => e.len(),
            Err(e) => die(&format!("tokenizer: {e}")),
        })
        .sum();
    (t0.elapsed().as_secs_f64(), tokens)
}

/// Seconds and total tokens of one masking pass (every record must mask).
fn mask(masker: &Masker, dialogues: &[Dialogue]) -> (f64, usize) {
    let t0 = Instant::now();
    let tokens: usize = dialogues
        .par_iter()
        .map(|d| match masker.mask(d) {
            Ok(samples) => samples.iter().map(|s| s.n_tokens()).sum::<usize>(),
            Err(e) => die(&format!("{}: {e}", d.id)),
        })
        .sum();
    (t0.elapsed().as_secs_f64(), tokens)
}

fn main() {
    let args = parse_args();
    let t_load = Instant::now();
    let format = ModelSource::resolve(&args.model)
        .and_then(|m| m.chat_format())
        .unwrap_or_else(|e| die(&e.to_string()));
    let masker = Masker::new(format, MaskOptions::default());
    let load_secs = t_load.elapsed().as_secs_f64();

    let t_read = Instant::now();
    let dialogues =
        read_all(std::path::Path::new(&args.input)).unwrap_or_else(|e| die(&e.to_string()));
    let read_secs = t_read.elapsed().as_secs_f64();

    let t_render = Instant::now();
    let texts: Vec<String> = dialogues
        .par_iter()
        .map(|d| {
            masker
                .template()
                .render(&d.messages, false)
                .unwrap_or_else(|e| die(&format!("{}: {e}", d.id)))
        })
        .collect();
    let render_secs = t_render.elapsed().as_secs_f64();
    let bytes: usize = texts.iter().map(String::len).sum();
    println!(
        "{}",
        json!({
            "bench": "setup",
            "input": args.input,
            "dialogues": dialogues.len(),
            "rendered_bytes": bytes,
            "model_load_s": load_secs,
            "read_s": read_secs,
            "render_s_all_threads": render_secs,
            "rayon_default_threads": rayon::current_num_threads(),
        })
    );

    for &n in &args.threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap_or_else(|e| die(&format!("thread pool: {e}")));
        let (mut bare_tps, mut enc_tps, mut mask_tps) = (vec![], vec![], vec![]);
        let (mut ratios, mut enc_ratios) = (vec![], vec![]);
        let mut tokens = (0, 0, 0);
        pool.install(|| {
            // One untimed pass each warms caches (tokenizer word cache, allocator).
            let _ = bare(&masker, &texts[..texts.len().min(500)]);
            let _ = bare_encode(&masker, &texts[..texts.len().min(500)]);
            let _ = mask(&masker, &dialogues[..dialogues.len().min(500)]);
            for rep in 0..args.reps {
                let (bs, bt) = bare(&masker, &texts);
                let (es, et) = bare_encode(&masker, &texts);
                let (ms, mt) = mask(&masker, &dialogues);
                tokens = (bt, et, mt);
                for (name, secs, tok) in
                    [("bare", bs, bt), ("bare_encode", es, et), ("mask", ms, mt)]
                {
                    println!(
                        "{}",
                        json!({
                            "bench": name,
                            "threads": n,
                            "rep": rep,
                            "seconds": secs,
                            "tokens": tok,
                            "tokens_per_s": tok as f64 / secs,
                        })
                    );
                }
                bare_tps.push(bt as f64 / bs);
                enc_tps.push(et as f64 / es);
                mask_tps.push(mt as f64 / ms);
                ratios.push(ms / bs);
                enc_ratios.push(ms / es);
            }
        });
        println!(
            "{}",
            json!({
                "bench": "summary",
                "threads": n,
                "reps": args.reps,
                "tokens_bare": tokens.0,
                "tokens_bare_encode": tokens.1,
                "tokens_mask": tokens.2,
                "bare_tokens_per_s": median(bare_tps),
                "bare_encode_tokens_per_s": median(enc_tps),
                "mask_tokens_per_s": median(mask_tps),
                "ratio_mask_over_bare": median(ratios),
                "ratio_mask_over_bare_encode": median(enc_ratios),
            })
        );
    }

    if args.phases {
        // What `gatt mask` does around the masks, timed apart (default rayon pool).
        let t_mask = Instant::now();
        let samples: Vec<_> = dialogues
            .par_iter()
            .flat_map_iter(|d| masker.mask(d).unwrap_or_else(|e| die(&e.to_string())))
            .collect();
        let mask_secs = t_mask.elapsed().as_secs_f64();
        let tokens: usize = samples.iter().map(|s| s.n_tokens()).sum();
        let out = std::env::temp_dir().join(format!("mask_bench_{}.parquet", std::process::id()));
        let t_write = Instant::now();
        let mut w =
            SampleWriter::create(&out, Format::Parquet).unwrap_or_else(|e| die(&e.to_string()));
        for s in &samples {
            w.write(s).unwrap_or_else(|e| die(&e.to_string()));
        }
        w.finish().unwrap_or_else(|e| die(&e.to_string()));
        let write_secs = t_write.elapsed().as_secs_f64();
        let out_bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        let t_pipeline = Instant::now();
        let input = std::path::Path::new(&args.input);
        mask_file(&masker, input, &out, Format::Parquet, OnError::Fail, &())
            .unwrap_or_else(|e| die(&e.to_string()));
        let pipeline_secs = t_pipeline.elapsed().as_secs_f64();
        let _ = std::fs::remove_file(&out);
        println!(
            "{}",
            json!({
                "bench": "phases",
                "threads": rayon::current_num_threads(),
                "tokens": tokens,
                "read_parse_s": read_secs,
                "mask_s": mask_secs,
                "parquet_write_s": write_secs,
                "parquet_bytes": out_bytes,
                "pipeline_s": pipeline_secs,
                "read_tokens_per_s": tokens as f64 / read_secs,
                "mask_tokens_per_s": tokens as f64 / mask_secs,
                "write_tokens_per_s": tokens as f64 / write_secs,
                "pipeline_tokens_per_s": tokens as f64 / pipeline_secs,
            })
        );
    }
}
