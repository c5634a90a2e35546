//! A record's provenance (`meta`): how it was made, by whom, with which seed.

use super::{ConstraintKind, Invalid, Message};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The provenance the generator and the evaluator record with each dialogue.
///
/// Serialized as the JSON object it has always been (the `meta` key of a JSONL record,
/// the `meta` column of a Parquet file, a JSON string there): known keys in the order
/// below, absent ones left out, then keys this version does not know, kept as read.
/// Reading checks every known key: a malformed one (`"seed": "x"`) is an [`Invalid`]
/// naming it (`meta.seed`), never silently ignored. `null` counts as absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>")]
pub struct DialogueMeta {
    /// The conversation as it was sampled, with the instruction attached to every user
    /// turn (`gatt synth`); the record's `messages` hold the training form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augmented: Option<Vec<Message>>,
    /// The chat model that wrote the replies, as its backend describes itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The seed: `gatt synth`'s per-dialogue seed, or `gatt eval`'s job seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// 0-based position of the dialogue in its job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// True when the instruction was phrased tersely ("Language: French.").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terse: Option<bool>,
    /// Prompt tokens of each sampled reply, in turn order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<Vec<usize>>,
    /// Tokens generated for each reply, in turn order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<Vec<usize>>,
    /// Whether each reply ended on its own (rather than at the token limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<Vec<bool>>,
    /// 1-based turns whose user message was a probe question (`gatt eval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_turns: Option<Vec<usize>>,
    /// The kind each probe turn asked about; as long as `probe_turns`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_kinds: Option<Vec<ConstraintKind>>,
    /// Keys this version does not know, kept as they are.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl DialogueMeta {
    /// True when there is nothing to write (the record then has no `meta` key).
    pub fn is_empty(&self) -> bool {
        *self == DialogueMeta::default()
    }

    /// Tokens generated over all replies (0 when not recorded).
    pub fn tokens_generated(&self) -> usize {
        self.completion_tokens.iter().flatten().sum()
    }

    /// Reads `meta` from its JSON object; the error names the field at fault,
    /// `meta.KEY` or a path below it (`meta.augmented[2].role`).
    pub fn from_map(mut map: Map<String, Value>) -> Result<Self, Invalid> {
        let mut take = |key: &str| map.remove(key).filter(|v| !v.is_null());
        let meta = DialogueMeta {
            augmented: typed("augmented", take("augmented"))?,
            model: typed("model", take("model"))?,
            seed: typed("seed", take("seed"))?,
            index: typed("index", take("index"))?,
            terse: typed("terse", take("terse"))?,
            prompt_tokens: typed("prompt_tokens", take("prompt_tokens"))?,
            completion_tokens: typed("completion_tokens", take("completion_tokens"))?,
            finished: typed("finished", take("finished"))?,
            probe_turns: typed("probe_turns", take("probe_turns"))?,
            probe_kinds: typed("probe_kinds", take("probe_kinds"))?,
            other: Map::new(),
        };
        let turns = meta.probe_turns.as_ref().map_or(0, Vec::len);
        if let Some(kinds) = &meta.probe_kinds {
            if kinds.len() != turns {
                return Err(Invalid {
                    field: "meta.probe_kinds".into(),
                    reason: format!(
                        "{} kinds for {turns} probe turns (`probe_turns`); give one kind per turn",
                        kinds.len()
                    ),
                });
            }
        }
        Ok(DialogueMeta { other: map, ..meta })
    }
}

/// Reads the value of a known key, naming `meta.KEY...` when it does not fit.
fn typed<T: DeserializeOwned>(key: &str, value: Option<Value>) -> Result<Option<T>, Invalid> {
    let Some(value) = value else {
        return Ok(None);
    };
    serde_path_to_error::deserialize(value)
        .map(Some)
        .map_err(|e| {
            let path = e.path().to_string();
            let field = match path.as_str() {
                "." => format!("meta.{key}"),
                p if p.starts_with('[') => format!("meta.{key}{p}"),
                p => format!("meta.{key}.{p}"),
            };
            Invalid {
                field,
                reason: e.into_inner().to_string(),
            }
        })
}

impl TryFrom<Map<String, Value>> for DialogueMeta {
    type Error = Invalid;
    fn try_from(map: Map<String, Value>) -> Result<Self, Invalid> {
        DialogueMeta::from_map(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<DialogueMeta, Invalid> {
        match v {
            Value::Object(m) => DialogueMeta::from_map(m),
            _ => unreachable!(),
        }
    }

    #[test]
    fn known_keys_are_typed_and_unknown_ones_kept() {
        let v = json!({
            "augmented": [{"role": "user", "content": "hi"}],
            "model": "m",
            "seed": 7,
            "index": 2,
            "terse": true,
            "prompt_tokens": [10],
            "completion_tokens": [3, 4],
            "finished": [true],
            "source": {"file": "x"},
        });
        let m = parse(v.clone()).unwrap();
        assert_eq!(m.augmented, Some(vec![Message::user("hi")]));
        assert_eq!((m.seed, m.index, m.terse), (Some(7), Some(2), Some(true)));
        assert_eq!(m.tokens_generated(), 7);
        assert_eq!(m.other["source"], json!({"file": "x"}));
        assert_eq!(serde_json::to_value(&m).unwrap(), v, "same JSON back");
    }

    #[test]
    fn writes_the_keys_in_the_order_the_writers_always_used() {
        let m = DialogueMeta {
            model: Some("m".into()),
            seed: Some(1),
            index: Some(0),
            probe_turns: Some(vec![2]),
            probe_kinds: Some(vec![ConstraintKind::Hobby]),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"model":"m","seed":1,"index":0,"probe_turns":[2],"probe_kinds":["hobby"]}"#
        );
        assert_eq!(
            serde_json::to_string(&DialogueMeta::default()).unwrap(),
            "{}"
        );
    }

    #[test]
    fn a_malformed_known_key_names_its_field() {
        let cases = [
            (json!({"seed": "seven"}), "meta.seed"),
            (json!({"terse": 1}), "meta.terse"),
            (
                json!({"completion_tokens": [1, -2]}),
                "meta.completion_tokens[1]",
            ),
            (
                json!({"augmented": [{"role": "robot", "content": "x"}]}),
                "meta.augmented[0].role",
            ),
            (
                json!({"probe_turns": [1, 2], "probe_kinds": ["hobby"]}),
                "meta.probe_kinds",
            ),
            (json!({"probe_kinds": [3]}), "meta.probe_kinds[0]"),
        ];
        for (v, field) in cases {
            let e = parse(v.clone()).unwrap_err();
            assert_eq!(e.field, field, "{v}: {e}");
        }
    }

    #[test]
    fn null_is_absent() {
        let m = parse(json!({"model": null, "seed": 3})).unwrap();
        assert_eq!((m.model, m.seed), (None, Some(3)));
    }

    #[test]
    fn deserializes_inside_a_record() {
        let ok: DialogueMeta = serde_json::from_value(json!({"model": "m"})).unwrap();
        assert_eq!(ok.model.as_deref(), Some("m"));
        let e = serde_json::from_value::<DialogueMeta>(json!({"seed": -1})).unwrap_err();
        assert!(e.to_string().contains("meta.seed"), "{e}");
    }
}
