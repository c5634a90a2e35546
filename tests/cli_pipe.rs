//! End-to-end: a reader that stops reading (`gatt inspect F --row 0 | head -1`) ends the
//! command quietly with status 0, never with a panic.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs gatt with its standard output a pipe whose reader reads `lines` lines (0: none)
/// and then closes it, as `head` does.
fn closed_reader(args: &[&str], lines: usize) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatt"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    for _ in 0..lines {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(
            !line.is_empty(),
            "gatt {args:?} wrote fewer than {lines} lines"
        );
    }
    drop(reader);
    child.wait_with_output().unwrap()
}

fn assert_quiet(args: &[&str], o: &Output) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "gatt {args:?} panicked: {err}");
    assert_eq!(o.status.code(), Some(0), "gatt {args:?}: {err}");
    assert!(
        err.is_empty(),
        "gatt {args:?} says nothing when its reader goes: {err}"
    );
}

/// A masked sample file of `n` rows, the first with `tokens` tokens.
fn samples(dir: &Path, n: usize, tokens: usize) -> String {
    let path = dir.join("m.jsonl");
    let mut text = String::new();
    for i in 0..n {
        let len = if i == 0 { tokens } else { 3 };
        let ids: Vec<String> = (0..len).map(|t| (t % 500).to_string()).collect();
        text.push_str(&format!(
            "{{\"id\":\"s{i}\",\"input_ids\":[{ids}],\"labels\":[{ids}]}}\n",
            ids = ids.join(",")
        ));
    }
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn a_reader_that_closes_at_once_ends_every_listing_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let file = samples(dir.path(), 2, 5);
    let commands: [&[&str]; 5] = [
        &["inspect", &file, "--row", "0"],
        &["inspect", &file, "--row", "1", "--tokens"],
        &["templates"],
        &["templates", "chatml"],
        &["constraints", "list", "--kind", "hobby"],
    ];
    for args in commands {
        assert_quiet(args, &closed_reader(args, 0));
    }
}

/// Like `| head -1`: the reader takes the first line of an output far larger than a pipe
/// holds, so gatt is still writing when the reader goes.
#[test]
fn head_dash_one_on_a_long_output_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let file = samples(dir.path(), 1, 20_000);
    let args = ["inspect", &file, "--row", "0", "--tokens"];
    assert_quiet(&args, &closed_reader(&args, 1));
    // And through a real shell pipe: `head` prints the first line, gatt exits 0.
    let script = format!(
        "'{}' inspect '{file}' --row 0 --tokens 2>'{err}' | head -1; exit ${{PIPESTATUS[0]}}",
        env!("CARGO_BIN_EXE_gatt"),
        err = dir.path().join("err").display()
    );
    let o = Command::new("bash").args(["-c", &script]).output().unwrap();
    let err = std::fs::read_to_string(dir.path().join("err")).unwrap();
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "id s0: 20000 tokens, 20000 with loss\n"
    );
}
