//! End-to-end tests of `gatt mask`, `gatt inspect` and `gatt templates`.

mod common;

use common::{arg, fixture, gatt, read_jsonl, stderr, stdout, tempdir, text, FIXTURES};
use std::path::Path;
use std::process::Output;

/// The fixture tokenizer and template: masking needs no model.
fn tok_args() -> Vec<String> {
    vec![
        "--tokenizer".into(),
        fixture("smollm2_tokenizer.json"),
        "--template".into(),
        fixture("smollm2_chat_template.jinja"),
    ]
}

fn mask(input: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["mask".into(), "--input".into(), arg(input)];
    args.extend(["--out".into(), arg(out)]);
    args.extend(tok_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    gatt(&args)
}

#[test]
fn masks_a_dataset_and_inspect_shows_the_loss_tokens() {
    let dir = tempdir();
    let out = dir.path().join("m.parquet");
    let o = mask(
        &Path::new(FIXTURES).join("dialogues.jsonl"),
        &out,
        &["--on-error", "skip"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["records"], 40);
    assert!(summary["samples"].as_u64().unwrap() >= 35);
    assert!(summary["skipped"]
        .as_object()
        .unwrap()
        .values()
        .all(|v| v.as_u64().unwrap() <= 2));
    let mut args = vec!["inspect".to_string(), arg(&out), "--row".into(), "0".into()];
    args.extend(tok_args());
    let o = gatt(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("[[The capital of France is Paris.<|im_end|>]]"),
        "{text}"
    );
}

#[test]
fn expand_policy_writes_one_sample_per_reply() {
    let dir = tempdir();
    let input = dir.path().join("d.jsonl");
    std::fs::write(
        &input,
        r#"{"id": "a", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}, {"role": "assistant", "content": "see you"}]}"#,
    )
    .unwrap();
    let out = dir.path().join("m.jsonl");
    let o = mask(&input, &out, &["--policy", "gatt-expand"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ids: Vec<String> = read_jsonl(&out)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["a#1", "a#2"]);
}

/// `--export` writes the same samples in the trainers' layouts, and refuses a layout that
/// cannot hold the mask, naming the flag.
#[test]
fn exports_write_the_trainers_layouts() {
    let dir = tempdir();
    let input = dir.path().join("d.jsonl");
    std::fs::write(
        &input,
        r#"{"id": "a", "messages": [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "bonjour"}, {"role": "user", "content": "bye"}, {"role": "assistant", "content": "au revoir"}]}"#,
    )
    .unwrap();
    let out = dir.path().join("o.jsonl");
    let o = mask(
        &input,
        &out,
        &["--export", "openai", "--policy", "gatt-expand"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = read_jsonl(&out);
    assert_eq!(lines.len(), 2);
    let weights: Vec<Vec<i64>> = lines
        .iter()
        .map(|l| {
            l["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|m| m.get("weight").and_then(|w| w.as_i64()))
                .collect()
        })
        .collect();
    assert_eq!(weights, [vec![1], vec![0, 1]]);
    assert_eq!(lines[0].as_object().unwrap().len(), 1, "only `messages`");

    let out = dir.path().join("t.parquet");
    let o = mask(&input, &out, &["--export", "tokenized"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.exists());

    let out = dir.path().join("o.parquet");
    let o = mask(&input, &out, &["--export", "openai"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--export openai"), "{}", stderr(&o));
    assert!(!out.exists());
    let o = mask(
        &input,
        &dir.path().join("pc.jsonl"),
        &["--export", "prompt-completion", "--policy", "all"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("policy all"), "{}", stderr(&o));
}

/// A reply that mentions `<|im_end|>` is refused by default with its own reason and a
/// hint; `--special-text encode` masks it with the text as ordinary tokens, and so does
/// `gatt synth --mask`, which shares the flag.
#[test]
fn special_token_text_in_content_is_refused_or_encoded() {
    let dir = tempdir();
    let input = dir.path().join("d.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"id": "m", "messages": [{"role": "user", "content": "How does a turn end?"}, {"role": "assistant", "content": "Each turn ends with the text <|im_end|> followed by a newline."}]}"#,
            "\n",
            r#"{"id": "ok", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#,
            "\n",
        ),
    )
    .unwrap();
    let out = dir.path().join("m.jsonl");
    let o = mask(&input, &out, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("special_token_in_content"), "{err}");
    assert!(
        err.contains("messages[1]") && err.contains("<|im_end|>"),
        "{err}"
    );
    assert!(err.contains("--special-text encode"), "{err}");
    assert!(!out.exists());

    let o = mask(
        &input,
        &out,
        &["--special-text", "refuse", "--on-error", "skip"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["samples"], 1);
    assert_eq!(
        summary["skipped"]["special_token_in_content"], 1,
        "{summary}"
    );

    let o = mask(&input, &out, &["--special-text", "encode"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = read_jsonl(&out);
    assert_eq!(rows.len(), 2);
    let labels: Vec<i64> = rows[0]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    // Only the final <|im_end|> (id 2) of the loss span is a special token.
    let loss: Vec<i64> = labels.into_iter().filter(|l| *l != -100).collect();
    assert_eq!(loss.iter().filter(|l| **l <= 16).count(), 1, "{loss:?}");
    assert_eq!(*loss.last().unwrap(), 2);

    let o = gatt(&["synth", "--help"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("--special-text"),
        "synth --mask shares the flag"
    );
}

/// Issue 16: a Parquet output of one sample (and of two) is written, not panicked on,
/// and `gatt inspect` reads it back.
#[test]
fn one_or_two_records_mask_to_parquet() {
    let dir = tempdir();
    let record = |id: &str| {
        format!(
            r#"{{"id": "{id}", "messages": [{{"role": "user", "content": "hi"}}, {{"role": "assistant", "content": "hello"}}]}}"#
        )
    };
    for n in [1, 2] {
        let input = dir.path().join(format!("d{n}.jsonl"));
        let lines: Vec<String> = (0..n).map(|i| record(&format!("r{i}"))).collect();
        std::fs::write(&input, lines.join("\n")).unwrap();
        let out = dir.path().join(format!("m{n}.parquet"));
        let o = mask(&input, &out, &[]);
        assert!(o.status.success(), "{n} records: {}", stderr(&o));
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(summary["samples"], n);
        let last = (n - 1).to_string();
        let mut args = vec!["inspect".to_string(), arg(&out), "--row".into(), last];
        args.extend(tok_args());
        let o = gatt(&args);
        assert!(o.status.success(), "{n} records: {}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains(&format!("id r{}", n - 1)), "{text}");
        assert!(text.contains("[[hello<|im_end|>]]"), "{text}");
    }
}

/// Bad input exits with status 2, names the file, line and field, and leaves no output.
#[test]
fn bad_input_is_reported_with_location_and_exit_2() {
    let dir = tempdir();
    let out = dir.path().join("m.parquet");
    let cases = [
        ("{not json", "bad.jsonl:1", "invalid JSON"),
        (
            r#"{"id": "x", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}"#,
            "bad.jsonl:1",
            "messages[1].role",
        ),
        (
            r#"{"id": "x", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}"#,
            "bad.jsonl:1",
            "messages[1].content",
        ),
        (
            r#"{"id": "x", "messages": [{"role": "robot", "content": "a"}]}"#,
            "bad.jsonl:1",
            "messages[0].role",
        ),
        (r#"{"id": "x"}"#, "bad.jsonl:1", "`messages` missing"),
    ];
    for (line, place, field) in cases {
        let input = dir.path().join("bad.jsonl");
        std::fs::write(&input, line).unwrap();
        let o = mask(&input, &out, &[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{line}: {err}");
        assert!(err.contains(place) && err.contains(field), "{line}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}

#[test]
fn unknown_template_missing_file_and_mismatched_tokenizer_are_clear_errors() {
    let dir = tempdir();
    let input = Path::new(FIXTURES).join("dialogues.jsonl");
    let out = dir.path().join("m.parquet");
    let tok = fixture("smollm2_tokenizer.json");
    let o = gatt(&[
        "mask",
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--tokenizer",
        &tok,
        "--template",
        "nosuch",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown chat template `nosuch`"),
        "{}",
        stderr(&o)
    );
    // llama3's end-of-turn marker is not a token of SmolLM2's tokenizer.
    let o = gatt(&[
        "mask",
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--tokenizer",
        &tok,
        "--template",
        "llama3",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("different models"), "{}", stderr(&o));
    let o = gatt(&[
        "mask",
        "--input",
        "/nonexistent.jsonl",
        "--out",
        out.to_str().unwrap(),
        "--tokenizer",
        &tok,
        "--template",
        "chatml",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent.jsonl"), "{}", stderr(&o));
    let o = gatt(&["mask", "--input", input.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "missing --out is a usage error");
}

#[test]
fn a_failing_template_is_reported_not_panicked() {
    let dir = tempdir();
    let t = dir.path().join("t.jinja");
    // It ends turns with <|im_end|> (else the end-of-turn token is unknown and the
    // template is refused before any record is rendered).
    std::fs::write(
        &t,
        "{{ raise_exception('System role not supported') }}{{ '<|im_end|>' }}",
    )
    .unwrap();
    let out = dir.path().join("m.parquet");
    let tok = fixture("smollm2_tokenizer.json");
    let input = fixture("dialogues.jsonl");
    let o = gatt(&[
        "mask",
        "--input",
        &input,
        "--out",
        out.to_str().unwrap(),
        "--tokenizer",
        &tok,
        "--template",
        t.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("System role not supported"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn templates_lists_the_builtins() {
    let o = gatt(&["templates"]);
    let text = String::from_utf8_lossy(&o.stdout);
    for name in [
        "chatml", "llama2", "llama3", "mistral", "gemma", "phi3", "qwen2.5",
    ] {
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn templates_renders_a_template_file() {
    let dir = tempdir();
    let file = dir.path().join("t.jinja");
    std::fs::write(
        &file,
        "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}",
    )
    .unwrap();
    let o = gatt(&["templates", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("[user] Hi!\n"), "{text}");
    // A template file that is not there is said to be missing, not an unknown name.
    let o = gatt(&["templates", dir.path().join("nope.jinja").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("file not found"), "{}", stderr(&o));
}

/// Every subcommand's --help renders (clap checks its definitions when it does).
#[test]
fn every_command_has_help() {
    for cmd in [
        "synth",
        "mask",
        "inspect",
        "eval",
        "report",
        "generate",
        "model",
        "templates",
    ] {
        let o = gatt(&[cmd, "--help"]);
        assert!(o.status.success(), "{cmd}: {}", stderr(&o));
        assert!(!String::from_utf8_lossy(&o.stdout).is_empty());
    }
}

/// An output that is the input is refused before anything is written: the dialogues
/// stay as they were.
#[test]
fn an_output_that_is_the_input_is_refused() {
    let dir = tempdir();
    let input = dir.path().join("d.jsonl");
    std::fs::copy(fixture("dialogues.jsonl"), &input).unwrap();
    let before = std::fs::read(&input).unwrap();
    let same = dir.path().join(".").join("d.jsonl");
    let o = mask(&input, &same, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("the output is the input file"), "{err}");
    assert_eq!(std::fs::read(&input).unwrap(), before);
}

/// `gatt inspect` shows a sample that `gatt train` refuses, without hiding what is wrong:
/// an id outside the vocabulary is marked, labels shorter than the tokens are said.
#[test]
fn inspect_shows_bad_samples_visibly() {
    let dir = tempdir();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"id":"v","input_ids":[1,999999,28],"labels":[-100,999999,28],"attention_mask":[1,1,1]}"#,
            "\n",
            r#"{"id":"l","input_ids":[1,28,29],"labels":[-100,28],"attention_mask":[1,1,1]}"#,
            "\n"
        ),
    )
    .unwrap();
    let mut args = vec![
        "inspect".to_string(),
        arg(&path),
        "--row".into(),
        "0".into(),
    ];
    args.extend(tok_args());
    let o = gatt(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(stdout(&o).contains("<?id 999999>"), "{}", stdout(&o));
    args[3] = "1".into();
    let o = gatt(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stdout(&o).contains("labels has 2 entries but input_ids has 3"),
        "{}",
        stdout(&o)
    );
}

/// A record too long for --max-len is refused with a hint that names only flags not
/// already given: --truncate left once, a higher --max-len when it was given.
#[test]
fn too_long_hint_does_not_suggest_a_flag_already_given() {
    let dir = tempdir();
    let input = dir.path().join("d.jsonl");
    std::fs::write(
        &input,
        r#"{"id": "a", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there, how are you today?"}]}"#,
    )
    .unwrap();
    let out = dir.path().join("m.jsonl");
    let o = mask(&input, &out, &["--max-len", "4"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("pass --truncate left"),
        "{}",
        stderr(&o)
    );
    let o = mask(&input, &out, &["--max-len", "4", "--truncate", "left"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("too_long") && e.contains("raise --max-len"),
        "{e}"
    );
    assert!(!e.contains("pass --truncate left"), "{e}");
}

/// Qwen3's template writes an empty think block before a final reply without one, and
/// its generation prompt holds that block only with `enable_thinking=false`: the sample
/// is refused as inserting text before the reply unless the template argument is given
/// (then prompt and sample agree, as transformers renders them).
#[test]
fn template_arg_enable_thinking_lets_qwen3_data_be_masked() {
    let dir = tempdir();
    let input = dir.path().join("d.jsonl");
    std::fs::write(
        &input,
        // A reply that starts with a digit: SmolLM2's tokenizer (standing in for Qwen3's)
        // keeps the think block's "\n\n" one token before it, as in the prompt alone.
        r#"{"id": "q", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "42 is the answer."}]}"#,
    )
    .unwrap();
    let out = dir.path().join("m.jsonl");
    let qwen3 = format!("{FIXTURES}/../templates/Qwen-Qwen3-0.6B.jinja");
    let base = [
        "mask".to_string(),
        "--input".into(),
        arg(&input),
        "--out".into(),
        arg(&out),
        "--tokenizer".into(),
        fixture("smollm2_tokenizer.json"),
        "--template".into(),
        qwen3,
    ];
    let o = gatt(&base);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("template_alters_reply") && e.contains("inserts"),
        "{e}"
    );
    let mut with_arg = base.to_vec();
    with_arg.extend(["--template-arg".into(), "enable_thinking=false".into()]);
    let o = gatt(&with_arg);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = read_jsonl(&out);
    assert_eq!(rows.len(), 1);
    let mut bad = base.to_vec();
    bad.extend(["--template-arg".into(), "messages=[]".into()]);
    let o = gatt(&bad);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--template-arg"), "{}", stderr(&o));
}

/// A record whose `meta.finished` says the final reply was cut is refused as `cut_reply`
/// with a hint; `--cut-replies drop-eot` trains it without its end-of-turn token,
/// `--cut-replies keep` as it is; a record that asks for it (`final_end_of_turn: false`)
/// is masked without the token by default.
#[test]
fn cut_replies_are_refused_or_trained_without_end_of_turn() {
    let dir = tempdir();
    let input = dir.path().join("d.jsonl");
    let cut = r#"{"id": "cut", "messages": [{"role": "user", "content": "Tell me a story."}, {"role": "assistant", "content": "Once upon a time a king"}], "meta": {"finished": [false]}}"#;
    let asks = r#"{"id": "asks", "messages": [{"role": "user", "content": "Tell me a story."}, {"role": "assistant", "content": "Once upon a time a king"}], "meta": {"finished": [false], "final_end_of_turn": false}}"#;
    std::fs::write(&input, format!("{cut}\n")).unwrap();
    let out = dir.path().join("m.jsonl");
    let o = mask(&input, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("(cut_reply)") && stderr(&o).contains("--cut-replies drop-eot"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    let loss_len = |extra: &[&str]| {
        let o = mask(&input, &out, extra);
        assert!(o.status.success(), "{}", stderr(&o));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        s["loss_tokens"].as_u64().unwrap()
    };
    let kept = loss_len(&["--cut-replies", "keep"]);
    let dropped = loss_len(&["--cut-replies", "drop-eot"]);
    assert_eq!(
        dropped + 1,
        kept,
        "only the end-of-turn token loses its loss"
    );
    std::fs::write(&input, format!("{asks}\n{cut}\n")).unwrap();
    let o = mask(&input, &out, &["--on-error", "skip"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (s["samples"].as_u64(), s["loss_tokens"].as_u64()),
        (Some(1), Some(dropped))
    );
    assert_eq!(s["skipped"]["cut_reply"], 1);
}

/// The reference answers `gatt score` compares models on: every record masks, with the
/// loss on the answer alone, and no question is one the user bank (training data) asks.
#[test]
fn the_general_reference_answers_mask_and_are_held_out() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let qa = root.join("templates/reference/general_qa.jsonl");
    let bank: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("templates/users/bank.json")).unwrap(),
    )
    .unwrap();
    let bank: Vec<String> = bank["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().trim().to_lowercase())
        .collect();
    let records = read_jsonl(&qa);
    assert_eq!(records.len(), 48);
    for r in &records {
        let q = r["messages"][0]["content"]
            .as_str()
            .unwrap()
            .trim()
            .to_lowercase();
        assert!(!bank.contains(&q), "{q} is in the user bank");
    }
    let dir = tempdir();
    let out = dir.path().join("qa.jsonl");
    let o = mask(&qa, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let samples = read_jsonl(&out);
    assert_eq!(samples.len(), 48, "{}", text(&o));
    for s in &samples {
        let labels = s["labels"].as_array().unwrap();
        assert!(labels.iter().any(|l| l != -100), "{s}");
    }
}
