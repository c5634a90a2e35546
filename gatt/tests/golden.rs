//! Our rendering and tokenization against fixtures made by Python `transformers`
//! (see tests/fixtures/golden/README.md): they must match exactly.

use gatt::template::ChatTemplate;
use gatt::{Dialogue, Message};
use std::collections::HashMap;
use std::path::Path;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/golden");

fn lines(name: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(Path::new(FIXTURES).join(name))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn dialogues() -> HashMap<String, Vec<Message>> {
    gatt::dataset::read_all(&Path::new(FIXTURES).join("dialogues.jsonl"))
        .unwrap()
        .into_iter()
        .map(|d: Dialogue| (d.id, d.messages))
        .collect()
}

/// The messages a fixture row rendered: all of them, or all but the final reply.
fn messages_for(
    row: &serde_json::Value,
    all: &HashMap<String, Vec<Message>>,
) -> (Vec<Message>, bool) {
    let msgs = &all[row["id"].as_str().unwrap()];
    let gen = row["add_generation_prompt"].as_bool().unwrap();
    let n = if gen { msgs.len() - 1 } else { msgs.len() };
    (msgs[..n].to_vec(), gen)
}

#[test]
fn builtin_templates_render_like_transformers() {
    let all = dialogues();
    let mut templates: HashMap<String, ChatTemplate> = HashMap::new();
    let rows = lines("render.jsonl");
    assert!(rows.len() >= 500);
    for row in rows {
        let name = row["template"].as_str().unwrap().to_string();
        let t = templates
            .entry(name.clone())
            .or_insert_with(|| ChatTemplate::builtin(&name).unwrap());
        let (msgs, gen) = messages_for(&row, &all);
        let ours = t.render(&msgs, gen);
        match (row.get("text"), ours) {
            (Some(text), Ok(out)) => {
                assert_eq!(out, text.as_str().unwrap(), "{name} {}", row["id"])
            }
            (None, Err(e)) => {
                let want = row["error"].as_str().unwrap();
                assert!(e.to_string().contains(want), "{name} {}: {e}", row["id"]);
            }
            (Some(_), Err(e)) => panic!("{name} {}: we failed: {e}", row["id"]),
            (None, Ok(out)) => panic!(
                "{name} {}: transformers failed, we rendered {out:?}",
                row["id"]
            ),
        }
    }
}

#[test]
fn smollm2_tokens_match_transformers() {
    let all = dialogues();
    let tok = gatt::tokenizer::from_json_file(&Path::new(FIXTURES).join("smollm2_tokenizer.json"))
        .unwrap();
    let source =
        std::fs::read_to_string(Path::new(FIXTURES).join("smollm2_chat_template.jinja")).unwrap();
    let t = ChatTemplate::new("smollm2", source, "<|im_start|>", "<|im_end|>", vec![]).unwrap();
    let rows = lines("smollm2_tokens.jsonl");
    assert_eq!(rows.len(), 80);
    for row in rows {
        let (msgs, gen) = messages_for(&row, &all);
        let text = t.render(&msgs, gen).unwrap();
        assert_eq!(text, row["text"].as_str().unwrap(), "{}", row["id"]);
        let ids: Vec<u32> = row["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ours = tok.encode(text.as_str(), false).unwrap();
        assert_eq!(ours.get_ids(), &ids[..], "{}", row["id"]);
    }
}

/// The tokenizer and template we read from the default model's GGUF give exactly the
/// ids Python produced (fetches the default model on first run).
#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "needs the default model (about 93 MB, fetched on first use): cargo test --workspace --features model-tests"
)]
fn gguf_tokenizer_matches_fixture_tokenizer() {
    let path = gatt::model::ensure_default_model().unwrap();
    let format = gatt::model::ChatFormat::from_gguf(&path).unwrap();
    let all = dialogues();
    for row in lines("smollm2_tokens.jsonl") {
        let (msgs, gen) = messages_for(&row, &all);
        let text = format.template.render(&msgs, gen).unwrap();
        assert_eq!(text, row["text"].as_str().unwrap());
        let ids: Vec<u32> = row["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            format
                .tokenizer
                .encode(text.as_str(), false)
                .unwrap()
                .get_ids(),
            &ids[..],
            "{}",
            row["id"]
        );
    }
    assert_eq!(format.stop_ids, vec![2]);
    assert_eq!(format.template.end_of_turn, vec!["<|im_end|>".to_string()]);
}

/// Real model templates (llama.cpp's collection) with template arguments, `none` as
/// Python's and `{% generation %}` blocks: text, error and generation ranges as
/// `transformers` gives them.
#[test]
fn real_templates_render_like_transformers() {
    let all = dialogues();
    let rows = lines("real_templates.jsonl");
    assert!(rows.len() >= 28);
    let mut generation_rows = 0;
    for row in rows {
        let stem = row["template"].as_str().unwrap();
        let source =
            std::fs::read_to_string(Path::new(FIXTURES).join(format!("../templates/{stem}.jinja")))
                .unwrap();
        let mut t = ChatTemplate::new(
            stem,
            source,
            row["bos_token"].as_str().unwrap(),
            row["eos_token"].as_str().unwrap(),
            vec![],
        )
        .unwrap();
        let args: gatt::template::TemplateArgs = row["args"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        t.set_args(args).unwrap();
        let (msgs, gen) = messages_for(&row, &all);
        let what = format!("{stem} {} {} {}", row["id"], gen, row["args"]);
        match (row.get("text"), t.render_generation(&msgs, gen)) {
            (Some(text), Ok((out, ranges))) => {
                assert_eq!(out, text.as_str().unwrap(), "{what}");
                // transformers gives character offsets; ours are bytes.
                let byte = |c: u64| {
                    out.char_indices()
                        .map(|(b, _)| b)
                        .chain(std::iter::once(out.len()))
                        .nth(c as usize)
                        .unwrap()
                };
                let want: Option<Vec<std::ops::Range<usize>>> = row.get("generation").map(|g| {
                    g.as_array()
                        .unwrap()
                        .iter()
                        .map(|r| byte(r[0].as_u64().unwrap())..byte(r[1].as_u64().unwrap()))
                        .collect()
                });
                generation_rows += usize::from(want.is_some());
                assert_eq!(ranges, want, "{what}");
            }
            (None, Err(e)) => eprintln!("{what}: both refuse: {e}"),
            (Some(_), Err(e)) => panic!("{what}: we failed: {e}"),
            (None, Ok((out, _))) => panic!("{what}: transformers failed, we rendered {out:?}"),
        }
    }
    assert!(generation_rows >= 4);
}
