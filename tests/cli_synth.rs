//! End-to-end tests of the main job, `gatt synth`: dialogues, masks, exports and report on
//! the real default model, kill -9 and resume, kept dialogue caches, and the report of a
//! run whose every dialogue the gate dropped.

mod common;

use common::{gatt, gatt_cmd, gatt_ok, read_json, read_jsonl, stderr, stdout, tempdir};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SMALL: &[&str] = &[
    "--dialogues",
    "3",
    "--turns",
    "2",
    "--max-tokens",
    "12",
    "--chunk",
    "1",
    "--format",
    "jsonl",
    "--seed",
    "5",
    // 12 tokens cut every reply: kept as they are (the gate would drop them all), and no
    // language constraint, whose script the gate would judge.
    "--cut-replies",
    "keep",
    "--constraints",
    "hobby,figure",
];

fn synth(out: &Path, extra: &[&str]) -> Command {
    let mut args = vec!["synth", "--out", out.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    gatt_cmd(&args)
}

#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn synth_writes_dialogues_masks_report_and_resumes_after_kill() {
    let dir = tempdir();
    let clean = dir.path().join("clean");
    let exports = "gatt,openai,prompt-completion,tokenized";
    let o = synth(&clean, &["--mask", "--export", exports])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "dialogues.jsonl",
        "masked.jsonl",
        "openai.jsonl",
        "prompt_completion.jsonl",
        "tokenized.jsonl",
        "report.md",
        "report.json",
        "run.json",
        "adherence/report.html",
    ] {
        assert!(clean.join(f).exists(), "{f} missing");
    }
    let records = read_jsonl(clean.join("dialogues.jsonl"));
    assert_eq!(records.len(), 3);
    for r in &records {
        let inst = r["instruction"].as_str().unwrap();
        assert_eq!(r["messages"][0]["content"], inst);
        let users: Vec<&serde_json::Value> = r["meta"]["augmented"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "user")
            .collect();
        assert!(users
            .iter()
            .all(|m| m["content"].as_str().unwrap().contains(inst)));
    }
    // Every export holds the masked samples, in order.
    let masked = read_jsonl(clean.join("masked.jsonl"));
    let tokenized = read_jsonl(clean.join("tokenized.jsonl"));
    let openai = read_jsonl(clean.join("openai.jsonl"));
    let pc = read_jsonl(clean.join("prompt_completion.jsonl"));
    assert!(!masked.is_empty());
    assert_eq!(
        (tokenized.len(), openai.len(), pc.len()),
        (masked.len(), masked.len(), masked.len())
    );
    for (m, t) in masked.iter().zip(&tokenized) {
        for k in ["input_ids", "labels", "attention_mask"] {
            assert_eq!(m[k], t[k], "{k}");
        }
    }
    for (line, row) in openai.iter().zip(&pc) {
        let msgs = line["messages"].as_array().unwrap();
        assert_eq!(msgs.last().unwrap()["weight"], 1);
        assert_eq!(
            msgs.last().unwrap()["content"],
            row["completion"][0]["content"]
        );
        assert_eq!(msgs.len(), row["prompt"].as_array().unwrap().len() + 1);
    }
    let manifest = read_json(clean.join("run.json"));
    assert_eq!(manifest["status"], "done");
    assert!(manifest["fingerprint"]["provenance"]["model_sha256"].is_string());

    // Kill -9 once the first chunk is on disk, then resume. One sequence at a time, so
    // that the other dialogues are still to come when the first chunk is written (in a
    // running batch all three finish together); replies do not depend on the batch.
    let killed = dir.path().join("killed");
    let mut child = synth(&killed, &["--mask", "--batch", "1"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !killed.join("chunks/chunk-000000.jsonl").exists()
        && start.elapsed() < Duration::from_secs(300)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!killed.join("dialogues.jsonl").exists());
    let o = synth(&killed, &["--mask"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "an existing run needs --resume");
    let o = synth(&killed, &["--mask", "--resume"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["dialogues.jsonl", "masked.jsonl"] {
        assert_eq!(
            std::fs::read(killed.join(f)).unwrap(),
            std::fs::read(clean.join(f)).unwrap(),
            "{f}: resumed run differs from a clean run"
        );
    }

    // Score the synthesized dialogues, then compare two reports.
    let ev = dir.path().join("eval");
    gatt_ok(&[
        "eval",
        "--input",
        clean.join("dialogues.jsonl").to_str().unwrap(),
        "--out",
        ev.to_str().unwrap(),
    ]);
    let report = read_json(ev.join("report.json"));
    assert!(report["schema_version"].is_number());
    let cmp = dir.path().join("cmp");
    let o = gatt_ok(&[
        "report",
        "compare",
        ev.to_str().unwrap(),
        clean.join("adherence").to_str().unwrap(),
        "--out",
        cmp.to_str().unwrap(),
    ]);
    assert!(stdout(&o).contains("turn"));
}

/// Keeping each dialogue's KV cache between turns changes no reply, and neither does the
/// running batch: `gatt synth` (two candidates a turn) and `gatt eval` write the same
/// dialogues and reports with `--session-cache 0` (every prompt prefilled in full) and
/// one sequence at a time (`--batch 1`) as with the default cache and a batch of 3, where
/// a dialogue's candidates are split between steps and its next turn joins a batch still
/// decoding the others.
#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn kept_dialogue_caches_change_no_reply_in_synth_and_eval() {
    let dir = tempdir();
    let run = |name: &str, cache: &str| {
        let out = dir.path().join(name);
        let batch = if cache == "0" { "1" } else { "3" };
        let args = [
            "--session-cache",
            cache,
            "--candidates",
            "2",
            "--batch",
            batch,
        ];
        let o = synth(&out, &args).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        read_jsonl(out.join("dialogues.jsonl"))
    };
    let (full, kept) = (run("full", "0"), run("kept", "1024"));
    assert_eq!(full.len(), 3);
    assert_eq!(full, kept);
    let eval = |name: &str, cache: &str| {
        let out = dir.path().join(name);
        gatt_ok(&[
            "eval",
            "--out",
            out.to_str().unwrap(),
            "--turns",
            "3",
            "--dialogues",
            "3",
            "--max-tokens",
            "16",
            "--session-cache",
            cache,
            "--batch",
            if cache == "0" { "1" } else { "2" },
        ]);
        let mut report = read_json(out.join("report.json"));
        report.as_object_mut().unwrap().remove("run");
        report
    };
    assert_eq!(eval("eval-full", "0"), eval("eval-kept", "1024"));
}

/// A server whose every reply the quality gate rejects (empty): `gatt synth --mask` has
/// nothing to mask and fails, but its report still says what the gate rejected.
#[test]
fn synth_writes_its_report_when_every_dialogue_is_dropped() {
    let url = common::chat_server(|_| String::new());
    // The masks' tokenizer and template, without the model's weights.
    let dir = tempdir();
    let model = dir.path().join("tok");
    std::fs::create_dir(&model).unwrap();
    std::fs::copy(
        common::fixture("smollm2_tokenizer.json"),
        model.join("tokenizer.json"),
    )
    .unwrap();
    let template = std::fs::read_to_string(common::fixture("smollm2_chat_template.jinja")).unwrap();
    let config = serde_json::json!({
        "chat_template": template,
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
    });
    std::fs::write(model.join("tokenizer_config.json"), config.to_string()).unwrap();
    let out = dir.path().join("run");
    let o = gatt(&[
        "synth",
        "--out",
        out.to_str().unwrap(),
        "--dialogues",
        "2",
        "--turns",
        "1",
        "--resample-tries",
        "0",
        "--mask",
        "--mask-model",
        model.to_str().unwrap(),
        "--endpoint",
        &url,
        "--api-model",
        "m",
    ]);
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no record could be masked"),
        "{}",
        stderr(&o)
    );
    let report = read_json(out.join("report.json"));
    let text = report.to_string();
    assert!(
        text.contains("empty"),
        "the gate's reason is in the report: {text}"
    );
    assert!(out.join("report.md").exists());
}
