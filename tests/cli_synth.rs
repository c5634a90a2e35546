//! End-to-end tests of the main job on the real default model: `gatt synth` (with
//! masks, report, kill -9 and resume), `gatt eval`, `gatt report compare`, `gatt generate`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn gatt_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gatt"));
    c.args(args);
    c
}

fn run(args: &[&str]) -> Output {
    let o = gatt_cmd(args).output().unwrap();
    assert!(
        o.status.success(),
        "gatt {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

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
];

fn synth(out: &Path, extra: &[&str]) -> Command {
    let mut args = vec!["synth", "--out", out.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    gatt_cmd(&args)
}

#[test]
fn synth_writes_dialogues_masks_report_and_resumes_after_kill() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean");
    let o = synth(&clean, &["--mask"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "dialogues.jsonl",
        "masked.jsonl",
        "report.md",
        "report.json",
        "run.json",
        "adherence/report.html",
    ] {
        assert!(clean.join(f).exists(), "{f} missing");
    }
    let records: Vec<serde_json::Value> = std::fs::read_to_string(clean.join("dialogues.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(clean.join("run.json")).unwrap()).unwrap();
    assert_eq!(manifest["status"], "done");
    assert!(manifest["fingerprint"]["provenance"]["model_sha256"].is_string());

    // Kill -9 once the first chunk is on disk, then resume.
    let killed = dir.path().join("killed");
    let mut child = synth(&killed, &["--mask"])
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
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["dialogues.jsonl", "masked.jsonl"] {
        assert_eq!(
            std::fs::read(killed.join(f)).unwrap(),
            std::fs::read(clean.join(f)).unwrap(),
            "{f}: resumed run differs from a clean run"
        );
    }

    // Score the synthesized dialogues, then compare two reports.
    let ev = dir.path().join("eval");
    run(&[
        "eval",
        "--input",
        clean.join("dialogues.jsonl").to_str().unwrap(),
        "--out",
        ev.to_str().unwrap(),
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ev.join("report.json")).unwrap()).unwrap();
    assert!(report["schema_version"].is_number());
    let cmp = dir.path().join("cmp");
    let o = run(&[
        "report",
        "compare",
        ev.to_str().unwrap(),
        clean.join("adherence").to_str().unwrap(),
        "--out",
        cmp.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("turn"));
}

#[test]
fn eval_protocol_runs_on_the_default_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("base");
    run(&[
        "eval",
        "--out",
        out.to_str().unwrap(),
        "--turns",
        "2",
        "--dialogues",
        "2",
        "--max-tokens",
        "12",
        "--constraints",
        "language,figure",
        "--probe-every",
        "2",
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        report["turns"].as_array().map(|t| t.len()),
        Some(2),
        "{report}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg"));
}

#[test]
fn generate_answers_and_bad_arguments_exit_2() {
    let o = run(&[
        "generate",
        "--prompt",
        "What is the capital of France?",
        "--system",
        "You are a helpful assistant.",
        "--temperature",
        "0",
        "--max-tokens",
        "20",
    ]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("Paris"));
    let o = gatt_cmd(&["synth", "--out", "/tmp/x", "--constraints", "mood"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown kind `mood`"));
    let o = gatt_cmd(&["synth", "--out", "/tmp/x", "--shard", "4/3"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let bank = dir.path().join("bank.json");
    std::fs::write(&bank, "{\"messages\": [\"  \"]}").unwrap();
    let out = dir.path().join("e");
    let o = gatt_cmd(&[
        "eval",
        "--out",
        out.to_str().unwrap(),
        "--user-bank",
        bank.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("`messages` is empty"));
}
