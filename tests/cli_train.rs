//! End-to-end tests of `gatt train` and `gatt train merge` on the default model.

mod common;

use common::{gatt, stdout, tempdir, text};
use std::path::Path;

/// Three short dialogues, masked for the default model.
fn masked(dir: &Path) -> String {
    let dialogues = dir.join("d.jsonl");
    let mut lines = String::new();
    for (i, (q, a)) in [
        ("Say hi.", "Bonjour !"),
        ("What is two plus two?", "Deux plus deux font quatre."),
        ("Name a colour.", "Le bleu."),
    ]
    .iter()
    .enumerate()
    {
        lines.push_str(&format!(
            "{{\"id\":\"d{i}\",\"messages\":[{{\"role\":\"system\",\"content\":\"Answer in French.\"}},\
             {{\"role\":\"user\",\"content\":\"{q}\"}},{{\"role\":\"assistant\",\"content\":\"{a}\"}}]}}\n"
        ));
    }
    std::fs::write(&dialogues, lines).unwrap();
    let out = dir.join("m.parquet");
    let o = gatt(&[
        "mask",
        "--input",
        dialogues.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--model",
        "default",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    out.display().to_string()
}

#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn lora_run_resumes_merges_and_the_merged_folder_generates() {
    let dir = tempdir();
    let data = masked(dir.path());
    let run = dir.path().join("run");
    let args = [
        "train",
        "--data",
        &data,
        "--out",
        run.to_str().unwrap(),
        "--max-steps",
        "2",
        "--batch-tokens",
        "64",
        "--lora-r",
        "4",
        "--save-every",
        "1",
        "--lr",
        "1e-3",
    ];
    let o = gatt(&args);
    assert!(o.status.success(), "{}", text(&o));
    for f in [
        "loss.jsonl",
        "loss.html",
        "train.json",
        "checkpoint/state.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "base/config.json",
        "base/model.safetensors",
        "base/tokenizer_config.json",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    // peft loads the adapter by its folder alone: the base is a Hugging Face folder.
    let adapter_config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        adapter_config["base_model_name_or_path"],
        std::fs::canonicalize(run.join("base"))
            .unwrap()
            .display()
            .to_string()
    );
    let log = std::fs::read_to_string(run.join("loss.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2);
    // Again without --resume: refused, nothing overwritten.
    let o = gatt(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--resume"));
    // --resume with other settings: refused.
    let mut other = args.to_vec();
    other.extend(["--resume", "--seed", "9"]);
    let o = gatt(&other);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // --resume of a finished run: no new steps, same log.
    let mut same = args.to_vec();
    same.push("--resume");
    let o = gatt(&same);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(run.join("loss.jsonl")).unwrap(),
        log
    );
    // Merge, then the merged Hugging Face folder runs in the embedded backend.
    let merged = dir.path().join("merged");
    let o = gatt(&[
        "train",
        "merge",
        run.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(merged.join(f).exists(), "{f} missing");
    }
    let o = gatt(&[
        "generate",
        "--model",
        merged.to_str().unwrap(),
        "--system",
        "You are a helpful assistant.",
        "--prompt",
        "What is the capital of France?",
        "--max-tokens",
        "12",
        "--temperature",
        "0",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(stdout(&o).contains("Paris"), "{}", text(&o));
    // `gatt score`: base + adapter scores as the merged folder does; the base alone not.
    let score = |extra: &[&str], name: &str| -> f64 {
        let out = dir.path().join(name);
        let mut a = vec!["score", "--data", &data, "--out", out.to_str().unwrap()];
        a.extend_from_slice(extra);
        let o = gatt(&a);
        assert!(o.status.success(), "{}", text(&o));
        assert!(stdout(&o).contains("perplexity"), "{}", text(&o));
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(doc["scores"]["samples"].as_array().unwrap().len(), 3);
        doc["scores"]["nll_per_token"].as_f64().unwrap()
    };
    let adapter = run.join("adapter");
    let with_adapter = score(&["--adapter", adapter.to_str().unwrap()], "a.json");
    let merged_nll = score(&["--model", merged.to_str().unwrap()], "m.json");
    let base = score(&[], "b.json");
    assert!(
        (with_adapter - merged_nll).abs() <= 1e-4 * with_adapter,
        "{with_adapter} vs {merged_nll}"
    );
    assert!(base != with_adapter, "the adapter changed nothing: {base}");
}

#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn data_for_another_tokenizer_is_refused_with_the_row() {
    let dir = tempdir();
    let data = dir.path().join("bad.jsonl");
    std::fs::write(
        &data,
        "{\"id\":\"ok\",\"input_ids\":[1,2,3],\"labels\":[-100,2,3],\"attention_mask\":[1,1,1]}\n\
         {\"id\":\"big\",\"input_ids\":[1,999999,2],\"labels\":[-100,-100,2],\"attention_mask\":[1,1,1]}\n",
    )
    .unwrap();
    let out = dir.path().join("run");
    let o = gatt(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    // Rows are 0-based, as `gatt inspect --row` counts: the second sample is row 1.
    assert!(
        t.contains("row 1") && t.contains("999999") && t.contains("vocabulary"),
        "{t}"
    );
    assert!(t.contains("--row 1` shows the sample"), "{t}");
    let o = gatt(&["inspect", data.to_str().unwrap(), "--row", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("id big:"),
        "inspect --row 1 shows the sample the error named: {}",
        text(&o)
    );
}

/// Samples masked with another vocabulary (here: the model's own plus one added token, so
/// that most ids even agree) are refused by `gatt train` and `gatt score` before any
/// step, by the tokenizer stamp `gatt mask` writes into Parquet files; the model's own
/// vocabulary (from a tokenizer.json) passes.
#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn samples_of_another_vocabulary_are_refused_by_their_stamp() {
    let dir = tempdir();
    let fixtures = Path::new(common::FIXTURES);
    let tokenizer: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("smollm2_tokenizer.json")).unwrap(),
    )
    .unwrap();
    let mut other = tokenizer.clone();
    other["added_tokens"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "id": 49152, "content": "<extra>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }));
    let qa = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/reference/general_qa.jsonl");
    let mask_with = |tok: &serde_json::Value, name: &str| {
        let tok_path = dir.path().join(format!("{name}.json"));
        std::fs::write(&tok_path, tok.to_string()).unwrap();
        let out = dir.path().join(format!("{name}.parquet"));
        let o = gatt(&[
            "mask",
            "--tokenizer",
            tok_path.to_str().unwrap(),
            "--template",
            fixtures
                .join("smollm2_chat_template.jinja")
                .to_str()
                .unwrap(),
            "--input",
            qa.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        out.display().to_string()
    };
    let same = mask_with(&tokenizer, "same");
    let o = gatt(&["score", "--data", &same, "--model", "default"]);
    assert!(o.status.success(), "{}", text(&o));

    let foreign = mask_with(&other, "other");
    let run = dir.path().join("run");
    for args in [
        vec!["score", "--data", &foreign, "--model", "default"],
        vec!["train", "--data", &foreign, "--out", run.to_str().unwrap()],
    ] {
        let o = gatt(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        let t = text(&o);
        assert!(
            t.contains("another vocabulary") && t.contains("49153 tokens"),
            "{args:?}: {t}"
        );
    }
    assert!(!run.exists(), "nothing written before the refusal");
}
