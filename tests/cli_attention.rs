//! End-to-end tests of `gatt attention`: the figure's files for the default model, base
//! and adapter side by side, and the refusals (exit 2, naming the file, record and field).

mod common;

use common::{arg, gatt, gatt_ok, read_json, tempdir, text};
use std::path::Path;

/// A three-turn dialogue with its instruction in the system message.
const DIALOGUE: &str = r#"{"id":"a1","messages":[{"role":"system","content":"Always answer in French."},{"role":"user","content":"How are you today?"},{"role":"assistant","content":"Je vais bien, merci."},{"role":"user","content":"What is your name?"},{"role":"assistant","content":"Je suis un assistant."},{"role":"user","content":"Name a colour."},{"role":"assistant","content":"Le bleu."}],"instruction":"Always answer in French."}"#;

fn write(dir: &Path, name: &str, lines: &[&str]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    arg(&p)
}

/// A LoRA adapter for the default model after two steps with a large learning rate.
fn adapter(dir: &Path) -> String {
    let data = write(
        dir,
        "train.jsonl",
        &[
            r#"{"id":"t0","messages":[{"role":"system","content":"Answer in French."},{"role":"user","content":"Say hi."},{"role":"assistant","content":"Bonjour !"}]}"#,
        ],
    );
    let masked = arg(&dir.join("m.parquet"));
    gatt_ok(&[
        "mask", "--input", &data, "--out", &masked, "--model", "default",
    ]);
    let run = dir.join("run");
    gatt_ok(&[
        "train",
        "--data",
        &masked,
        "--out",
        &arg(&run),
        "--max-steps",
        "2",
        "--batch-tokens",
        "64",
        "--lora-r",
        "4",
        "--lr",
        "0.01",
    ]);
    arg(&run.join("adapter"))
}

#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn base_and_adapter_side_by_side_with_parseable_numbers() {
    let dir = tempdir();
    let input = write(dir.path(), "d.jsonl", &[DIALOGUE]);
    let ad = adapter(dir.path());
    let out = dir.path().join("att");
    let o = gatt_ok(&[
        "attention",
        "--input",
        &input,
        "--id",
        "a1",
        "--adapter",
        &ad,
        "--bin",
        "4",
        "--out",
        &arg(&out),
    ]);
    assert!(text(&o).contains("attention.html"), "{}", text(&o));
    let doc = read_json(out.join("attention.json"));
    let figs = doc["figures"].as_array().unwrap();
    assert_eq!(figs.len(), 2);
    assert_eq!(figs[0]["model"], "SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_eq!(
        figs[1]["model"],
        "SmolLM2-135M-Instruct.Q4_1.gguf + run/adapter"
    );
    assert_eq!(doc["meta"]["instruction"], "Always answer in French.");
    assert_eq!(doc["meta"]["instruction_message"], 0);
    for f in figs {
        // "Always answer in French." is five tokens right after "<|im_start|>system\n".
        assert_eq!(f["instruction"], serde_json::json!([3, 8]));
        let pieces: Vec<&str> = f["instruction_pieces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert_eq!(pieces.concat(), "Always answer in French.");
        let turns = f["turns"].as_array().unwrap();
        assert_eq!(turns.len(), 3);
        let bins = f["bins"].as_array().unwrap();
        let heat = f["heatmap"].as_array().unwrap();
        assert_eq!(heat.len(), 5);
        for row in heat {
            let row = row.as_array().unwrap();
            assert_eq!(row.len(), bins.len());
            assert!(row
                .iter()
                .all(|v| (0.0..=1.0).contains(&v.as_f64().unwrap())));
        }
        for b in bins {
            let width = b["end"].as_u64().unwrap() - b["start"].as_u64().unwrap();
            assert!((1..=4).contains(&width), "{b}");
        }
        for t in turns {
            let m = t["reply_mass_max"].as_f64().unwrap();
            assert!(m > 0.0 && m <= 1.0, "{t}");
            assert!(t["reply_mass_mean"].as_f64().unwrap() <= m);
        }
    }
    // Same dialogue, same tokens; the adapter changed the numbers.
    assert_eq!(figs[0]["bins"], figs[1]["bins"]);
    assert_ne!(figs[0]["heatmap"], figs[1]["heatmap"]);
    let turns = std::fs::read_to_string(out.join("turns.csv")).unwrap();
    assert_eq!(turns.lines().count(), 1 + 2 * 3, "{turns}");
    let tokens = std::fs::read_to_string(out.join("tokens.csv")).unwrap();
    let n = figs[0]["tokens"].as_u64().unwrap() as usize;
    assert_eq!(tokens.lines().count(), 1 + 2 * (n - 8));
    let page = std::fs::read_to_string(out.join("attention.html")).unwrap();
    assert!(page.contains("run/adapter") && page.matches("<svg").count() == 4);
    assert!(!page.contains("<script") && !page.contains("https://"));
}

#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn an_instruction_in_the_first_user_turn_is_found_there() {
    let dir = tempdir();
    let input = write(
        dir.path(),
        "d.jsonl",
        &[
            r#"{"id":"u1","messages":[{"role":"user","content":"Hello! Always answer in French."},{"role":"assistant","content":"Bonjour !"},{"role":"user","content":"How are you?"},{"role":"assistant","content":"Bien."}],"instruction":"Always answer in French."}"#,
        ],
    );
    let out = dir.path().join("att");
    gatt_ok(&["attention", "--input", &input, "--out", &arg(&out)]);
    let doc = read_json(out.join("attention.json"));
    assert_eq!(doc["meta"]["instruction_message"], 0);
    let f = &doc["figures"][0];
    let pieces: Vec<&str> = f["instruction_pieces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    // The token holding the space before "Always" overlaps the instruction too.
    assert_eq!(pieces.concat(), " Always answer in French.");
    // Turn 1 still counts: its reply comes after the instruction.
    assert_eq!(f["turns"].as_array().unwrap().len(), 2);
}

#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn a_dialogue_over_the_token_limit_is_refused_with_the_limit() {
    let dir = tempdir();
    let input = write(dir.path(), "d.jsonl", &[DIALOGUE]);
    let out = dir.path().join("att");
    let o = gatt(&[
        "attention",
        "--input",
        &input,
        "--max-tokens",
        "20",
        "--out",
        &arg(&out),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("limit of 20") && t.contains("--max-tokens"),
        "{t}"
    );
    assert!(t.contains("d.jsonl:1") && t.contains("a1"), "{t}");
    assert!(!out.exists());
}

/// Refusals that come before any model is loaded: no model needed.
#[test]
fn bad_records_and_ids_are_refused_naming_file_line_and_field() {
    let dir = tempdir();
    let no_instruction = r#"{"id":"n1","messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"}]}"#;
    let elsewhere = r#"{"id":"e1","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"},{"role":"user","content":"Speak French."}],"instruction":"Speak French."}"#;
    let input = write(
        dir.path(),
        "d.jsonl",
        &[DIALOGUE, no_instruction, elsewhere],
    );
    let out = arg(&dir.path().join("att"));
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["--id", "zz"],
            &["--id zz", "no record", "3 records", "d.jsonl"],
        ),
        (
            &["--id", "n1"],
            &["d.jsonl:2", "n1", "instruction", "no system message"],
        ),
        (
            &["--id", "e1"],
            &["d.jsonl:3", "e1", "instruction", "first user message"],
        ),
        (&["--bin", "0"], &["--bin"]),
    ];
    for (extra, says) in cases {
        let mut args = vec!["attention", "--input", &input, "--out", &out];
        args.extend_from_slice(extra);
        let o = gatt(&args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {t}");
        for s in says {
            assert!(t.contains(s), "{extra:?}: `{s}` not in {t}");
        }
        assert!(!t.contains("panicked"), "{t}");
    }
}
