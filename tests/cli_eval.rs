//! End-to-end tests of `gatt eval` (the protocol, and the no-instruction control) and
//! `gatt generate` on the real default model.

mod common;

use common::{gatt, gatt_ok, listing, read_json, read_jsonl, stderr, stdout, tempdir};

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
