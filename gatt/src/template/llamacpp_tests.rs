//! Every chat template llama.cpp keeps for its tests (about 70 model families, from the
//! pinned llama-cpp-python sdist) against `transformers`' rendering of the same
//! dialogues (`tests/fixtures/golden/llamacpp_templates.jsonl`, made by
//! `scripts/golden/make_llamacpp_templates.py`): gatt renders each exactly as
//! `transformers` does, or refuses it with an error; it never renders something else.

use super::ChatTemplate;
use crate::tokenizer::vectors::vocab_dir;
use crate::Message;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/golden");

fn dialogues() -> HashMap<String, Vec<Message>> {
    crate::dataset::read_all(&Path::new(FIXTURES).join("dialogues.jsonl"))
        .unwrap()
        .into_iter()
        .map(|d| (d.id, d.messages))
        .collect()
}

/// What happened to one template's renderings.
#[derive(Default, Debug)]
struct Tally {
    same: usize,
    both_refuse: usize,
    /// transformers renders, gatt refuses: correct but unusable (reported, not failed).
    only_we_refuse: Vec<String>,
}

/// The day the golden fixtures of llama.cpp's templates were made (2026-11-30, days since
/// 1970-01-01): templates that print today's date (Llama 3.x) printed that one, in
/// `transformers`' renderings and in llama.cpp's token ids (`mask::llamacpp_tests`).
pub(crate) const FIXTURE_DAY: u64 = 20_787;

#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "fetches llama.cpp's reference files (about 77 MB with pip): cargo test --workspace --features model-tests"
)]
fn every_llamacpp_template_renders_like_transformers_or_is_refused() {
    let dir = vocab_dir().join("templates");
    let all = dialogues();
    let fixture =
        std::fs::read_to_string(Path::new(FIXTURES).join("llamacpp_templates.jsonl")).unwrap();
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut wrong = Vec::new();
    for line in fixture.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let stem = row["template"].as_str().unwrap();
        let source = std::fs::read_to_string(dir.join(format!("{stem}.jinja")))
            .unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert_eq!(
            crate::model::fetch::sha256_file(&dir.join(format!("{stem}.jinja"))).unwrap(),
            row["sha256"].as_str().unwrap(),
            "{stem}: the fixture was made from another version of the template"
        );
        let msgs = &all[row["id"].as_str().unwrap()];
        let gen = row["add_generation_prompt"].as_bool().unwrap();
        let msgs = &msgs[..if gen { msgs.len() - 1 } else { msgs.len() }];
        let what = format!("{stem} {} add_generation_prompt={gen}", row["id"]);
        let ours = ChatTemplate::new(stem, source, "<s>", "</s>", vec![]).and_then(|mut t| {
            t.set_today(FIXTURE_DAY);
            t.render(msgs, gen)
        });
        let tally = tallies.entry(stem.to_string()).or_default();
        match (row.get("text").and_then(|t| t.as_str()), ours) {
            (Some(want), Ok(got)) if got == want => tally.same += 1,
            (Some(want), Ok(got)) => wrong.push(format!(
                "{what}: rendered differently\n  transformers: {want:?}\n  gatt:         {got:?}"
            )),
            (None, Err(_)) => tally.both_refuse += 1,
            (Some(_), Err(e)) => tally.only_we_refuse.push(format!("{what}: {e}")),
            (None, Ok(got)) => wrong.push(format!(
                "{what}: transformers refuses ({}), gatt renders {got:?}",
                row["error"]
            )),
        }
    }
    let same: usize = tallies.values().map(|t| t.same).sum();
    let refused: Vec<&String> = tallies.values().flat_map(|t| &t.only_we_refuse).collect();
    eprintln!(
        "{} templates: {same} renderings equal, {} refused by both, {} refused by gatt only",
        tallies.len(),
        tallies.values().map(|t| t.both_refuse).sum::<usize>(),
        refused.len()
    );
    for r in &refused {
        eprintln!("  refused: {r}");
    }
    assert!(tallies.len() >= 70, "{} templates", tallies.len());
    assert!(
        wrong.is_empty(),
        "{} of the renderings differ from transformers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
