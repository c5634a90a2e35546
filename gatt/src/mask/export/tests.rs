//! The exports agree: each message layout, tokenized again the way its consumer does it,
//! gives the tokens and labels of the tokenized export (SmolLM2's template and tokenizer,
//! the default model's, from the golden fixtures).

use super::*;
use crate::dataset::read_samples;
use crate::mask::pipeline::{mask_to, OnError, Output};
use crate::mask::tests::smollm2;
use crate::mask::{Masker, IGNORE};
use serde_json::Value;
use std::path::{Path, PathBuf};

const DIALOGUES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/golden/dialogues.jsonl"
);

fn options(policy: Policy) -> MaskOptions {
    MaskOptions {
        policy,
        ..Default::default()
    }
}

/// Masks the golden dialogues once into every `exports` (JSON lines unless `format`
/// says otherwise); the files' paths, in order.
fn write(dir: &Path, m: &Masker, exports: &[(Export, Format)]) -> Vec<PathBuf> {
    let outputs: Vec<Output> = exports
        .iter()
        .map(|&(export, format)| Output {
            path: dir.join(format!("{}.{}", export.file_stem(), format.extension())),
            format,
            export,
        })
        .collect();
    mask_to(m, Path::new(DIALOGUES), &outputs, OnError::Skip, &()).unwrap();
    outputs.into_iter().map(|o| o.path).collect()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Messages of a JSON list, ignoring any `weight`.
fn messages(v: &Value) -> Vec<Message> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let role = match m["role"].as_str().unwrap() {
                "system" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                r => panic!("role {r}"),
            };
            Message::new(role, m["content"].as_str().unwrap())
        })
        .collect()
}

/// Tokens of `messages` as `transformers`' `apply_chat_template(..., tokenize=True)`
/// makes them: the rendered text, tokenized without added special tokens.
fn tokens(m: &Masker, messages: &[Message], generation_prompt: bool) -> Vec<u32> {
    let text = m.template().render(messages, generation_prompt).unwrap();
    m.tokenizer()
        .encode(text.as_str(), false)
        .unwrap()
        .get_ids()
        .to_vec()
}

/// TRL's SFTTrainer on a conversational prompt-completion row (`tokenize_fn` in
/// trl/trainer/sft_trainer.py): the prompt tokenized with the generation prompt, the
/// prompt and completion tokenized whole, loss on every token after the prompt's.
fn trl(m: &Masker, row: &Value) -> (Vec<u32>, Vec<i64>) {
    let prompt = messages(&row["prompt"]);
    let mut all = prompt.clone();
    all.extend(messages(&row["completion"]));
    let prompt_ids = tokens(m, &prompt, true);
    let ids = tokens(m, &all, false);
    assert_eq!(
        ids[..prompt_ids.len()],
        prompt_ids[..],
        "TRL's prefix check"
    );
    let labels = ids
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            if i < prompt_ids.len() {
                IGNORE
            } else {
                i64::from(t)
            }
        })
        .collect();
    (ids, labels)
}

/// An OpenAI-format line as weight-reading trainers train it (axolotl's `chat_template`
/// with `message_field_training: weight` and `train_on_eos: turn`): the conversation
/// tokenized whole, loss on each assistant message of weight 1, from the end of the
/// generation prompt before it through the first end-of-turn token after it.
fn weighted(m: &Masker, line: &Value) -> (Vec<u32>, Vec<i64>) {
    let raw = line["messages"].as_array().unwrap();
    let all = messages(&line["messages"]);
    let ids = tokens(m, &all, false);
    let end_of_turn = m.tokenizer().token_to_id("<|im_end|>").unwrap();
    let mut labels = vec![IGNORE; ids.len()];
    for (j, msg) in raw.iter().enumerate() {
        if msg.get("weight").and_then(Value::as_u64) != Some(1) {
            continue;
        }
        let start = tokens(m, &all[..j], true).len();
        assert_eq!(ids[..start], tokens(m, &all[..j], true)[..]);
        let eot = start + ids[start..].iter().position(|&t| t == end_of_turn).unwrap();
        for i in start..=eot {
            labels[i] = i64::from(ids[i]);
        }
    }
    (ids, labels)
}

fn tokenized_row(v: &Value) -> (Vec<u32>, Vec<i64>, Vec<u8>) {
    let ints = |k: &str| -> Vec<i64> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    let ids = ints("input_ids").into_iter().map(|t| t as u32).collect();
    let mask = ints("attention_mask")
        .into_iter()
        .map(|t| t as u8)
        .collect();
    (ids, ints("labels"), mask)
}

/// What a consumer computed from a message layout against the tokenized export: the
/// same tokens and labels through the last loss token; after it, only the template's
/// text that follows the end-of-turn marker (SmolLM2: `\n`), which the consumer may
/// train (`suffix_trained`) or not.
fn assert_agree(
    m: &Masker,
    consumer: &(Vec<u32>, Vec<i64>),
    tokenized: &(Vec<u32>, Vec<i64>, Vec<u8>),
    suffix_trained: bool,
    what: &str,
) {
    let (ids, labels) = consumer;
    let (t_ids, t_labels, _) = tokenized;
    let last = t_labels.iter().rposition(|l| *l != IGNORE).unwrap();
    assert_eq!(ids[..=last], t_ids[..=last], "{what}: tokens");
    assert_eq!(labels[..=last], t_labels[..=last], "{what}: labels");
    let rest = &ids[last + 1..];
    assert_eq!(t_ids[last + 1..], rest[..t_ids.len() - last - 1], "{what}");
    assert_eq!(m.tokenizer().decode(rest, false).unwrap(), "\n", "{what}");
    let want: Vec<i64> = if suffix_trained {
        rest.iter().map(|&t| i64::from(t)).collect()
    } else {
        vec![IGNORE; rest.len()]
    };
    assert_eq!(
        labels[last + 1..],
        want[..],
        "{what}: after the end of turn"
    );
}

#[test]
fn every_export_holds_the_samples_of_the_tokenized_one() {
    for policy in [Policy::Gatt, Policy::GattExpand] {
        let dir = tempfile::tempdir().unwrap();
        let m = smollm2(options(policy));
        let paths = write(
            dir.path(),
            &m,
            &[
                (Export::Gatt, Format::Jsonl),
                (Export::Openai, Format::Jsonl),
                (Export::PromptCompletion, Format::Jsonl),
                (Export::Tokenized, Format::Jsonl),
            ],
        );
        let samples = read_samples(&paths[0]).unwrap();
        let openai = lines(&paths[1]);
        let pc = lines(&paths[2]);
        let tokenized: Vec<_> = lines(&paths[3]).iter().map(tokenized_row).collect();
        assert!(samples.len() > 30, "{}", samples.len());
        assert_eq!(
            (openai.len(), pc.len(), tokenized.len()),
            (samples.len(), samples.len(), samples.len())
        );
        for (i, s) in samples.iter().enumerate() {
            let t = &tokenized[i];
            assert_eq!(
                (&s.input_ids, &s.labels, &s.attention_mask),
                (&t.0, &t.1, &t.2)
            );
            let what = format!("{policy} sample {} ({})", i, s.id);
            assert_agree(&m, &trl(&m, &pc[i]), t, true, &format!("TRL, {what}"));
            assert_agree(
                &m,
                &weighted(&m, &openai[i]),
                t,
                false,
                &format!("openai, {what}"),
            );
        }
    }
}

#[test]
fn openai_weights_every_reply_under_the_assistant_policy() {
    let dir = tempfile::tempdir().unwrap();
    let m = smollm2(options(Policy::Assistant));
    let paths = write(
        dir.path(),
        &m,
        &[
            (Export::Openai, Format::Jsonl),
            (Export::Tokenized, Format::Jsonl),
        ],
    );
    let openai = lines(&paths[0]);
    let tokenized: Vec<_> = lines(&paths[1]).iter().map(tokenized_row).collect();
    let mut several = 0;
    for (line, t) in openai.iter().zip(&tokenized) {
        let weights: Vec<u64> = line["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m.get("weight").and_then(Value::as_u64))
            .collect();
        assert!(weights.iter().all(|w| *w == 1));
        several += usize::from(weights.len() > 1);
        let (ids, labels) = weighted(&m, line);
        assert_eq!((&ids, &labels), (&t.0, &t.1));
    }
    assert!(several > 0);
}

#[test]
fn message_layouts_hold_only_the_keys_consumers_read() {
    let dir = tempfile::tempdir().unwrap();
    let m = smollm2(options(Policy::GattExpand));
    let paths = write(
        dir.path(),
        &m,
        &[
            (Export::Openai, Format::Jsonl),
            (Export::PromptCompletion, Format::Jsonl),
            (Export::Tokenized, Format::Jsonl),
        ],
    );
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    let mut earlier_replies = 0;
    for line in lines(&paths[0]) {
        assert_eq!(keys(&line), ["messages"]);
        let msgs = line["messages"].as_array().unwrap();
        for (i, msg) in msgs.iter().enumerate() {
            let assistant = msg["role"] == "assistant";
            let want = if assistant {
                vec!["content", "role", "weight"]
            } else {
                vec!["content", "role"]
            };
            assert_eq!(keys(msg), want);
            if assistant {
                let last = i + 1 == msgs.len();
                assert_eq!(msg["weight"], u64::from(last));
                earlier_replies += usize::from(!last);
            }
        }
    }
    assert!(earlier_replies > 0);
    for row in lines(&paths[1]) {
        assert_eq!(keys(&row), ["completion", "prompt"]);
        let completion = row["completion"].as_array().unwrap();
        assert_eq!(completion.len(), 1);
        assert_eq!(completion[0]["role"], "assistant");
    }
    for row in lines(&paths[2]) {
        assert_eq!(keys(&row), ["attention_mask", "input_ids", "labels"]);
    }
}

/// The Parquet files hold what the JSON lines hold.
#[test]
fn parquet_exports_hold_the_json_lines_rows() {
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let m = smollm2(options(Policy::GattExpand));
    let paths = write(
        dir.path(),
        &m,
        &[
            (Export::PromptCompletion, Format::Jsonl),
            (Export::PromptCompletion, Format::Parquet),
            (Export::Tokenized, Format::Jsonl),
            (Export::Tokenized, Format::Parquet),
        ],
    );
    let read = |p: &Path| {
        ParquetReader::new(std::fs::File::open(p).unwrap())
            .finish()
            .unwrap()
    };
    let tokenized = read(&paths[3]);
    let names: Vec<&str> = tokenized
        .get_column_names()
        .into_iter()
        .map(|n| n.as_str())
        .collect();
    assert_eq!(names, ["input_ids", "attention_mask", "labels"]);
    let want = lines(&paths[2]);
    assert_eq!(tokenized.height(), want.len());
    for name in ["input_ids", "attention_mask", "labels"] {
        let col = tokenized.column(name).unwrap().list().unwrap().clone();
        for (i, want) in want.iter().enumerate() {
            let row = col.get_as_series(i).unwrap();
            let ints = row.i64().unwrap();
            let got: Vec<i64> = (0..ints.len()).map(|j| ints.get(j).unwrap()).collect();
            let json: Vec<i64> = want[name]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            assert_eq!(got, json, "{name} row {i}");
        }
    }
    let pc = read(&paths[1]);
    let want = lines(&paths[0]);
    assert_eq!(pc.height(), want.len());
    for name in ["prompt", "completion"] {
        let col = pc.column(name).unwrap().list().unwrap().clone();
        for (i, want) in want.iter().enumerate() {
            let row = col.get_as_series(i).unwrap();
            let fields = row.struct_().unwrap().fields_as_series();
            let texts = |s: &Series| -> Vec<String> {
                let t = s.str().unwrap();
                (0..t.len())
                    .map(|j| t.get(j).unwrap().to_string())
                    .collect()
            };
            let got: Vec<(String, String)> = texts(&fields[0])
                .into_iter()
                .zip(texts(&fields[1]))
                .collect();
            let json: Vec<(String, String)> = messages(&want[name])
                .into_iter()
                .map(|m| (m.role.as_str().to_string(), m.content))
                .collect();
            assert_eq!(got, json, "{name} row {i}");
        }
    }
}

#[test]
fn layouts_that_cannot_hold_the_mask_are_refused_before_anything_is_written() {
    let cases = [
        (Export::Openai, Policy::Gatt, Format::Parquet, "JSON lines"),
        (Export::Openai, Policy::All, Format::Jsonl, "policy all"),
        (
            Export::PromptCompletion,
            Policy::All,
            Format::Jsonl,
            "policy all",
        ),
        (
            Export::PromptCompletion,
            Policy::Assistant,
            Format::Parquet,
            "policy assistant",
        ),
    ];
    for (export, policy, format, why) in cases {
        let msg = export.refusal(&options(policy), format).unwrap();
        assert!(msg.contains(why), "{msg}");
        let dir = tempfile::tempdir().unwrap();
        let m = smollm2(options(policy));
        let path = dir.path().join(format!("out.{}", format.extension()));
        let out = Output {
            path: path.clone(),
            format,
            export,
        };
        let e = mask_to(&m, Path::new(DIALOGUES), &[out], OnError::Skip, &()).unwrap_err();
        assert!(crate::Error::from(e).is_input());
        assert!(!path.exists());
    }
    let encode = MaskOptions {
        special_text: SpecialText::Encode,
        ..options(Policy::Gatt)
    };
    for export in [Export::Openai, Export::PromptCompletion] {
        let msg = export.refusal(&encode, Format::Jsonl).unwrap();
        assert!(msg.contains("special-token text"), "{msg}");
    }
    for export in [Export::Gatt, Export::Tokenized] {
        assert_eq!(export.refusal(&encode, Format::Parquet), None);
        assert_eq!(export.refusal(&options(Policy::All), Format::Parquet), None);
    }
}

#[test]
fn export_names_round_trip() {
    for &v in Export::ALL {
        assert_eq!(v.to_string().parse::<Export>(), Ok(v));
    }
}
