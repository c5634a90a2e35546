//! End-to-end tests of the main job on the real default model: `gatt synth` (with
//! masks, report, kill -9 and resume), `gatt eval`, `gatt report compare`, `gatt generate`;
//! and the argument checks that run before any model is loaded.

mod common;

use common::{gatt, gatt_cmd, gatt_ok, listing, read_json, read_jsonl, stderr, stdout, tempdir};
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

#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn eval_protocol_runs_on_the_default_model() {
    let dir = tempdir();
    let out = dir.path().join("base");
    gatt_ok(&[
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
    let report = read_json(out.join("report.json"));
    assert_eq!(
        report["turns"].as_array().map(|t| t.len()),
        Some(2),
        "{report}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg"));
}

/// The control run: no system message, every reply checked for the user's language.
#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn eval_without_instruction_checks_the_users_language() {
    let dir = tempdir();
    let out = dir.path().join("control");
    let out = out.to_str().unwrap();
    let o = gatt(&[
        "eval",
        "--no-instruction",
        "--constraints",
        "language",
        "--out",
        out,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--constraints"), "{}", stderr(&o));
    let o = gatt(&[
        "eval",
        "--no-instruction",
        "--judge-model",
        "default",
        "--out",
        out,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--judge-model"), "{}", stderr(&o));

    gatt_ok(&[
        "eval",
        "--no-instruction",
        "--out",
        out,
        "--turns",
        "3",
        "--dialogues",
        "2",
        "--max-tokens",
        "24",
    ]);
    let report = read_json(dir.path().join("control/report.json"));
    assert_eq!(
        report["kinds"],
        serde_json::json!(["user_language"]),
        "{report}"
    );
    let counts = &report["counts"];
    assert_eq!(counts["checks"], 6, "{report}");
    let files = listing(&dir.path().join("control"));
    let dialogues = files.iter().find(|f| f.starts_with("dialogues-")).unwrap();
    for d in read_jsonl(dir.path().join("control").join(dialogues)) {
        let roles: Vec<&str> = d["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            [
                "user",
                "assistant",
                "user",
                "assistant",
                "user",
                "assistant"
            ]
        );
        assert!(
            d["constraints"].as_array().is_none_or(|c| c.is_empty()),
            "{d}"
        );
    }
}

#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn generate_answers_on_the_default_model() {
    let o = gatt_ok(&[
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
    assert!(stdout(&o).contains("Paris"));
}

/// Bad arguments exit with status 2 before any model is loaded (these run offline).
#[test]
fn bad_synth_and_eval_arguments_exit_2() {
    let dir = tempdir();
    let out = dir.path().join("x");
    let out = out.to_str().unwrap();
    let o = gatt(&["synth", "--out", out, "--constraints", "mood"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown kind `mood`"));
    let o = gatt(&["synth", "--out", out, "--shard", "4/3"]);
    assert_eq!(o.status.code(), Some(2));
    let bank = dir.path().join("bank.json");
    std::fs::write(&bank, "{\"messages\": [\"  \"]}").unwrap();
    let o = gatt(&["eval", "--out", out, "--user-bank", bank.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`messages` is empty"));
    assert!(!Path::new(out).exists(), "nothing written");
}

/// Every flag combination is checked before any request or model load: a `--mask` that
/// cannot work, an empty catalog, flags that do nothing, impossible sampling settings.
#[test]
fn synth_flag_combinations_fail_before_any_work() {
    let dir = tempdir();
    let out = dir.path().join("x");
    let out = out.to_str().unwrap();
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, "[]").unwrap();
    let hobby_empty = format!("hobby={}", empty.display());
    // An endpoint nobody listens on: a check that ran after a request would fail otherwise.
    let endpoint = ["--endpoint", "http://127.0.0.1:9", "--api-model", "m"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--mask"], "--mask-model"),
        (
            vec!["--catalog", &hobby_empty, "--constraints", "hobby,language"],
            "`hobby`",
        ),
        (vec!["--max-tokens", "0"], "--max-tokens"),
        (vec!["--candidates", "0"], "--candidates"),
        (vec!["--chunk", "0"], "--chunk"),
        (vec!["--top-p", "0"], "--top-p"),
        (vec!["--policy", "all"], "--mask"),
        (vec!["--mask-model", "default"], "--mask"),
        (vec!["--cut-replies", "sometimes"], "resample"),
        // A judge with nothing to weigh in (one candidate, no --min-adherence)...
        (vec!["--judge-model", "default"], "--judge-model weighs"),
        (
            vec![
                "--judge-endpoint",
                "http://127.0.0.1:9",
                "--judge-api-model",
                "j",
            ],
            "--judge-endpoint weighs",
        ),
        // ...or no kind it judges; judge flags that do not go together.
        (
            vec![
                "--judge-model",
                "default",
                "--candidates",
                "2",
                "--constraints",
                "language",
            ],
            "holds none of them",
        ),
        (
            vec![
                "--judge-endpoint",
                "http://127.0.0.1:9",
                "--candidates",
                "2",
            ],
            "--judge-api-model",
        ),
        (
            vec!["--judge-api-model", "j", "--candidates", "2"],
            "--judge-endpoint",
        ),
        (
            vec![
                "--judge-model",
                "default",
                "--judge-endpoint",
                "http://127.0.0.1:9",
            ],
            "--judge-endpoint",
        ),
        (vec!["--plain-share", "1.5"], "--plain-share"),
    ];
    for (extra, says) in cases {
        let mut args = vec!["synth", "--out", out];
        args.extend_from_slice(&endpoint);
        args.extend_from_slice(&extra);
        let start = Instant::now();
        let o = gatt(&args);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{extra:?}: {}", stderr(&o));
        assert!(start.elapsed() < Duration::from_secs(10), "{extra:?}: slow");
        assert!(!Path::new(out).exists(), "{extra:?}: nothing written");
    }
}

/// A judge server nobody listens on is found before any reply is sampled: the error
/// names --judge-endpoint, and nothing is written.
#[test]
fn an_unreachable_judge_is_found_before_any_work() {
    let dir = tempdir();
    let out = dir.path().join("x");
    let start = Instant::now();
    let o = gatt(&[
        "synth",
        "--out",
        out.to_str().unwrap(),
        "--endpoint",
        "http://127.0.0.1:9",
        "--api-model",
        "m",
        "--judge-endpoint",
        "http://127.0.0.1:9",
        "--judge-api-model",
        "j",
        "--candidates",
        "2",
        "--constraints",
        "hobby",
        "--dialogues",
        "1",
        "--turns",
        "1",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("--judge-endpoint") && err.contains("cannot reach"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(20), "slow");
    assert!(!out.join("dialogues.parquet").exists());
}

/// An OpenAI-compatible server for `gatt synth --endpoint` and `--judge-endpoint`: the
/// k-th request with a given conversation gets "Candidate {k mod 3} answers ..."; a
/// judge's question gets "Yes." when it is about "Candidate 2", "No." otherwise.
fn candidates_server() -> String {
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let messages = &req["messages"];
                let first = messages[0]["content"].as_str().unwrap_or("");
                let text = if first.starts_with("You are a strict evaluator") {
                    let q = messages[1]["content"].as_str().unwrap_or("");
                    if q.contains("Assistant: Candidate 2 answers") {
                        "Yes.".to_string()
                    } else {
                        "No.".to_string()
                    }
                } else {
                    let mut seen = seen.lock().unwrap();
                    let k = seen.entry(messages.to_string()).or_default();
                    *k += 1;
                    format!(
                        "Candidate {} answers the question with some care.",
                        (*k - 1) % 3
                    )
                };
                let out = serde_json::json!({
                    "choices": [{"message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 9}
                })
                .to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{out}",
                    out.len()
                );
            });
        }
    });
    url
}

/// `--judge-endpoint` end to end: the judge's verdicts choose the kept replies (without
/// it the first candidate is kept) and are counted in run.json and report.md.
#[test]
fn synth_keeps_the_candidates_the_judge_endpoint_says_yes_to() {
    let url = candidates_server();
    let dir = tempdir();
    let run = |name: &str, judge: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec![
            "synth",
            "--out",
            out.to_str().unwrap(),
            "--endpoint",
            &url,
            "--api-model",
            "m",
            // One request at a time: the k-th of a conversation is its candidate k.
            "--in-flight",
            "1",
            "--dialogues",
            "2",
            "--turns",
            "2",
            "--candidates",
            "3",
            "--constraints",
            "figure",
            "--format",
            "jsonl",
        ];
        args.extend_from_slice(judge);
        let o = gatt(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let kept: Vec<String> = read_jsonl(out.join("dialogues.jsonl"))
            .iter()
            .flat_map(|r| r["messages"].as_array().unwrap().clone())
            .filter(|m| m["role"] == "assistant")
            .map(|m| m["content"].as_str().unwrap()[..11].to_string())
            .collect();
        (kept, read_json(out.join("run.json")), out)
    };
    let (kept, manifest, _) = run("plain", &[]);
    assert_eq!(kept, vec!["Candidate 0"; 4]);
    assert_eq!(manifest["gate"]["judge"]["questions"], 0);
    let (kept, manifest, out) = run(
        "judged",
        &["--judge-endpoint", &url, "--judge-api-model", "j"],
    );
    assert_eq!(kept, vec!["Candidate 2"; 4]);
    // 2 dialogues x 2 turns x 3 candidates, one figure each.
    let j = &manifest["gate"]["judge"];
    assert_eq!(
        [
            &j["candidates_judged"],
            &j["candidates_rejected"],
            &j["yes"],
            &j["no"],
            &j["picks_changed"]
        ],
        [12, 8, 4, 8, 4]
    );
    assert!(
        manifest["fingerprint"]["judge"]
            .as_str()
            .unwrap()
            .starts_with("j ("),
        "{manifest}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("12 candidates judged, 8 rejected"),
        "{report}"
    );
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
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let text = r#"{"choices":[{"message":{"role":"assistant","content":""},"finish_reason":"stop"}]}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
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
