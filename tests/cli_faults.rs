//! Faults a data tool must survive: writes that fail part-way (a full disk), paths of the
//! wrong kind, outputs that would destroy a user's files, temporary files left by a
//! killed run. Each leaves no partial output and no temporary file, and says what to do.

mod common;

use common::{arg, fixture, gatt, gatt_with_write_limit, listing, stderr, tempdir};
use std::path::Path;

fn mask_args(input: &Path, out: &Path) -> Vec<String> {
    vec![
        "mask".into(),
        "--input".into(),
        arg(input),
        "--out".into(),
        arg(out),
        "--tokenizer".into(),
        fixture("smollm2_tokenizer.json"),
        "--template".into(),
        fixture("smollm2_chat_template.jinja"),
        "--on-error".into(),
        "skip".into(),
    ]
}

/// A write that fails part-way names the output and the cause, exits 1, and leaves
/// neither the output nor a temporary file.
#[cfg(unix)]
#[test]
fn a_write_failing_part_way_names_the_file_and_leaves_nothing() {
    let dir = tempdir();
    // 400 records: outputs of some hundred KiB, past a 16 KiB limit.
    let one = std::fs::read_to_string(fixture("dialogues.jsonl")).unwrap();
    let input = dir.path().join("d.jsonl");
    std::fs::write(&input, one.repeat(10)).unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    for name in ["m.parquet", "m.jsonl"] {
        let out = out_dir.join(name);
        let o = gatt_with_write_limit(16, &mask_args(&input, &out));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(&arg(&out)), "{name}: the path is named: {err}");
        assert!(
            err.contains("file-size limit"),
            "{name}: the cause is said: {err}"
        );
        assert!(!err.contains("transport error"), "{name}: {err}");
        assert!(
            listing(&out_dir).is_empty(),
            "{name}: {:?}",
            listing(&out_dir)
        );
    }
}

/// A folder where a file is expected, and a file where a folder is expected, are the
/// user's to fix: exit 2, the path named, nothing left behind.
#[test]
fn paths_of_the_wrong_kind_exit_2() {
    let dir = tempdir();
    let input = dir.path().join("d.jsonl");
    std::fs::copy(fixture("dialogues.jsonl"), &input).unwrap();
    let folder = dir.path().join("a-folder.jsonl");
    std::fs::create_dir(&folder).unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    for (input, out) in [
        (folder.clone(), dir.path().join("m.parquet")),
        (input.clone(), folder.clone()),
        (input.clone(), file.join("m.parquet")),
    ] {
        let o = gatt(&mask_args(&input, &out));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{input:?} -> {out:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let mut left = listing(dir.path());
    left.sort();
    assert_eq!(left, ["a-file", "a-folder.jsonl", "d.jsonl"]);
    assert!(listing(&folder).is_empty());
}

/// `gatt model export` and `gatt train merge` never delete a user's files: a folder that
/// holds files is refused (exit 2, before any model is loaded) unless --overwrite.
#[test]
fn folder_outputs_that_hold_files_are_refused_without_overwrite() {
    let dir = tempdir();
    let out = dir.path().join("hf");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("thesis.tex"), "years of work").unwrap();
    let run = dir.path().join("run");
    for args in [
        vec![
            "model".to_string(),
            "export".into(),
            "--out".into(),
            arg(&out),
        ],
        vec![
            "train".into(),
            "merge".into(),
            arg(&run),
            "--out".into(),
            arg(&out),
        ],
    ] {
        let o = gatt(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("--out") && err.contains("--overwrite"),
            "{err}"
        );
        assert_eq!(listing(&out), ["thesis.tex"]);
    }
}

/// Temporary files that a killed run left beside an output are removed by the next run
/// of the same output; those of running processes are kept.
#[cfg(target_os = "linux")]
#[test]
fn temporary_files_of_a_killed_run_are_cleaned_up() {
    let dir = tempdir();
    let input = dir.path().join("d.jsonl");
    std::fs::copy(fixture("dialogues.jsonl"), &input).unwrap();
    let out = dir.path().join("m.jsonl");
    // Process 999999999 cannot exist (Linux caps ids at 2^22); process 1 always runs.
    std::fs::write(dir.path().join(".m.jsonl.tmp-999999999"), "half a file").unwrap();
    std::fs::write(dir.path().join(".m.jsonl.tmp-1"), "being written").unwrap();
    let o = gatt(&mask_args(&input, &out));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        listing(dir.path()),
        [".m.jsonl.tmp-1", "d.jsonl", "m.jsonl"]
    );
}

/// A server that accepts connections and never answers: a synthesis against it runs
/// until stopped.
fn silent_server() -> (String, std::net::TcpListener) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (url, listener)
}

fn synth_args(url: &str, out: &Path, resume: bool) -> Vec<String> {
    let mut a: Vec<String> = [
        "synth",
        "--endpoint",
        url,
        "--api-model",
        "m",
        "--dialogues",
        "1",
        "--turns",
        "1",
        "--timeout",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(["--out".into(), arg(out)]);
    if resume {
        a.push("--resume".into());
    }
    a
}

/// Two runs on one output folder: the second is refused, naming the holder; once the
/// holder is killed (`kill -9`), the folder is free again.
#[test]
fn a_second_run_on_one_folder_is_refused_and_a_dead_holder_frees_it() {
    let dir = tempdir();
    let out = dir.path().join("run");
    let (url, _listener) = silent_server();
    let mut first = common::gatt_cmd(&synth_args(&url, &out, false))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first run holds the folder (it writes run.json right after).
    let t0 = std::time::Instant::now();
    while !out.join("run.json").exists() {
        assert!(t0.elapsed().as_secs() < 60, "the first run never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = gatt(&synth_args(&url, &out, true));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("in use by gatt process {}", first.id())),
        "{err}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    drop(_listener);
    // The holder is dead: a resume gets past the lock (and fails on the absent server).
    let o = gatt(&synth_args(&url, &out, true));
    let err = stderr(&o);
    assert!(!err.contains("in use"), "{err}");
}

/// Parquet files written by pyarrow with an extra column of every type gatt does not
/// read: the column is ignored and the dialogues are masked. A needed column of the
/// wrong type is an input error naming the row and field.
#[test]
fn parquet_columns_gatt_does_not_need_are_ignored_whatever_their_type() {
    let dir = tempdir();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parquet");
    let mut extras = 0;
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let out = dir.path().join(format!("{name}.jsonl"));
        let o = gatt(&mask_args(&path, &out));
        let err = stderr(&o);
        if name.starts_with("extra_") {
            extras += 1;
            assert!(o.status.success(), "{name}: {err}");
            assert_eq!(common::read_jsonl(&out).len(), 2, "{name}");
        } else {
            assert_eq!(o.status.code(), Some(2), "{name}: {err}");
            assert!(
                err.contains("row 0") && err.contains("`messages`"),
                "{name}: {err}"
            );
        }
    }
    assert_eq!(extras, 13, "one fixture per extra type");
}

/// A chat template that doubles a string until memory runs out is stopped at the render
/// budget: exit 2, the template and the record named, no output.
#[test]
fn a_template_that_exhausts_memory_is_refused_naming_it() {
    let dir = tempdir();
    let input = dir.path().join("d.jsonl");
    std::fs::copy(fixture("dialogues.jsonl"), &input).unwrap();
    let template = dir.path().join("bomb.jinja");
    std::fs::write(
        &template,
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}\
         {% endfor %}{{ ns.s | length }}<|im_end|>",
    )
    .unwrap();
    let out = dir.path().join("m.jsonl");
    let mut args = mask_args(&input, &out);
    let at = args.iter().position(|a| a == "--template").unwrap();
    args[at + 1] = arg(&template);
    let o = gatt(&args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("bomb.jinja") && err.contains("MiB"), "{err}");
    assert!(err.contains("record `"), "names the record: {err}");
    assert!(!out.exists());
    let left: Vec<String> = listing(dir.path())
        .into_iter()
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// No output replaces an input of the run: the chat template, the tokenizer, a user's
/// files in a synthesis folder.
#[test]
fn outputs_never_replace_inputs_or_user_files() {
    let dir = tempdir();
    let input = dir.path().join("d.jsonl");
    std::fs::copy(fixture("dialogues.jsonl"), &input).unwrap();
    let template = dir.path().join("t.jinja");
    std::fs::copy(fixture("smollm2_chat_template.jinja"), &template).unwrap();
    let before = std::fs::read(&template).unwrap();
    let mut args = mask_args(&input, &template);
    let at = args.iter().position(|a| a == "--template").unwrap();
    args[at + 1] = arg(&template);
    args.extend(["--out-format".into(), "jsonl".into()]);
    let o = gatt(&args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--out") && err.contains("--template"), "{err}");
    assert_eq!(std::fs::read(&template).unwrap(), before);

    let out = dir.path().join("mine");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("report.md"), "my notes").unwrap();
    let o = gatt(&synth_args("http://127.0.0.1:9", &out, false));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no gatt run"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("report.md")).unwrap(),
        "my notes"
    );
    let o = gatt(&["eval", "--input", &arg(&input), "--out", &arg(&out)]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no gatt evaluation"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("report.md")).unwrap(),
        "my notes"
    );
}

/// An endpoint that is not an http(s) URL is bad input; credentials in it never reach
/// the lock file or a message.
#[test]
fn endpoints_are_checked_and_their_credentials_kept_out_of_the_lock() {
    let dir = tempdir();
    let o = gatt(&synth_args(
        "ftp://u:hunter2@h",
        &dir.path().join("a"),
        false,
    ));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let out = dir.path().join("b");
    let o = gatt(&synth_args(
        "http://u:hunter2@127.0.0.1:9/v1?api_key=qwerty",
        &out,
        false,
    ));
    let text = format!("{}{}", common::stdout(&o), stderr(&o));
    assert!(
        !text.contains("hunter2") && !text.contains("qwerty"),
        "{text}"
    );
    let lock = std::fs::read_to_string(out.join(".gatt.lock")).unwrap();
    assert!(
        !lock.contains("hunter2") && !lock.contains("qwerty"),
        "{lock}"
    );
    if let Ok(run) = std::fs::read_to_string(out.join("run.json")) {
        assert!(!run.contains("hunter2") && !run.contains("qwerty"), "{run}");
    }
}
