//! Masks of real chat templates with real vocabularies against llama.cpp's own token
//! ids (`tests/fixtures/golden/llamacpp_samples.jsonl`, made by
//! `scripts/golden/make_llamacpp_samples.py` with llama-cpp-python): the sample's ids
//! are the ones llama.cpp gives the rendered conversation, and the loss starts exactly
//! where llama.cpp's tokens of the inference prompt end; or the record is refused.

use super::{MaskOptions, Masker, IGNORE};
use crate::model::resolve_format;
use crate::tokenizer::vectors::vocab_dir;
use crate::{Dialogue, Message};
use std::collections::HashMap;
use std::path::Path;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/golden");

fn dialogues() -> HashMap<String, Vec<Message>> {
    crate::dataset::read_all(&Path::new(FIXTURES).join("dialogues.jsonl"))
        .unwrap()
        .into_iter()
        .map(|d| (d.id, d.messages))
        .collect()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
#[cfg_attr(
    not(feature = "model-tests"),
    ignore = "fetches llama.cpp's reference files (about 77 MB with pip): cargo test --workspace --features model-tests"
)]
fn real_templates_mask_with_llamacpp_ids() {
    let dir = vocab_dir();
    let all = dialogues();
    let fixture =
        std::fs::read_to_string(Path::new(FIXTURES).join("llamacpp_samples.jsonl")).unwrap();
    let mut maskers: HashMap<(String, String, String), Masker> = HashMap::new();
    let (mut exact, mut refused, mut wrong) = (0, Vec::new(), Vec::new());
    for line in fixture.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let template = row["template"].as_str().unwrap().to_string();
        let vocab = row["vocab"].as_str().unwrap().to_string();
        let args = row["args"].clone();
        let masker = maskers
            .entry((template.clone(), vocab.clone(), args.to_string()))
            .or_insert_with(|| {
                let spec = match template.strip_prefix("builtin:") {
                    Some(name) => name.to_string(),
                    None => {
                        let path = dir.join("templates").join(format!("{template}.jinja"));
                        assert_eq!(
                            crate::model::fetch::sha256_file(&path).unwrap(),
                            row["sha256"].as_str().unwrap(),
                            "{template}: the fixture was made from another version"
                        );
                        path.display().to_string()
                    }
                };
                let model = dir.join(format!("ggml-vocab-{vocab}.gguf"));
                let mut format = resolve_format(Some(&model.display().to_string()), None, &spec)
                    .unwrap_or_else(|e| panic!("{template} x {vocab}: {e}"));
                let targs: crate::template::TemplateArgs = args
                    .as_object()
                    .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default();
                format.template.set_args(targs).unwrap();
                format
                    .template
                    .set_today(crate::template::llamacpp_tests::FIXTURE_DAY);
                Masker::new(format, MaskOptions::default())
            });
        let id = row["id"].as_str().unwrap();
        let what = format!("{template} {} x {vocab} {id}", row["args"]);
        let dialogue = Dialogue::new(id, all[id].clone());
        let (full, prompt) = (ids(&row["full_ids"]), ids(&row["prompt_ids"]));
        let sample = match masker.mask(&dialogue) {
            Ok(mut s) => s.remove(0),
            Err(e) => {
                refused.push(format!("{what}: {e}"));
                continue;
            }
        };
        if sample.input_ids != full {
            wrong.push(format!(
                "{what}: ids differ from llama.cpp's\n  llama.cpp: {full:?}\n  gatt:      {:?}",
                sample.input_ids
            ));
            continue;
        }
        // llama.cpp's prompt tokens must be where the loss starts (a prompt whose tokens
        // are not a prefix of the conversation's must have been refused).
        let first_loss = sample.labels.iter().position(|&l| l != IGNORE);
        if !full.starts_with(&prompt) || first_loss != Some(prompt.len()) {
            wrong.push(format!(
                "{what}: loss starts at {first_loss:?}; llama.cpp's prompt has {} tokens{}",
                prompt.len(),
                if full.starts_with(&prompt) {
                    ""
                } else {
                    " and is not a prefix"
                }
            ));
            continue;
        }
        exact += 1;
    }
    eprintln!("{exact} samples exact, {} refused", refused.len());
    for r in &refused {
        eprintln!("  refused: {r}");
    }
    assert!(
        wrong.is_empty(),
        "{} samples differ from llama.cpp:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(exact >= 60, "only {exact} samples could be compared");
}
