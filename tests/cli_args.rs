//! The argument checks of `gatt synth` and `gatt eval` that run before any model is
//! loaded or any request sent: bad values and flag combinations exit 2 and name the flag.

mod common;

use common::{gatt, stderr, tempdir};
use std::path::Path;
use std::time::{Duration, Instant};

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
        (vec!["--min-combined", "0"], "--min-combined"),
        (
            vec!["--min-combined", "3", "--max-combined", "2"],
            "--min-combined must be between 1 and --max-combined (2)",
        ),
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
