//! A record's provenance (`meta`): how it was made, by whom, with which seed.

use super::{ConstraintKind, Invalid, Message};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The provenance the generator and the evaluator record with each dialogue.
///
/// Serialized as the JSON object it has always been (the `meta` key of a JSONL record,
/// the `meta` column of a Parquet file, a JSON string there), byte for byte: one object
/// of the known keys that are set and the unknown ones kept as read, keys sorted as a
/// `serde_json::Map` sorts them. Reading checks every known key: a malformed one
/// (`"seed": "x"`) is an [`Invalid`] naming it (`meta.seed`), never silently ignored.
/// `null` counts as absent.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(try_from = "Map<String, Value>")]
pub struct DialogueMeta {
    /// The conversation as it was sampled, with the instruction attached to every user
    /// turn (`gatt synth`); the record's `messages` hold the training form.
    pub augmented: Option<Vec<Message>>,
    /// The chat model that wrote the replies, as its backend describes itself.
    pub model: Option<String>,
    /// The seed: `gatt synth`'s per-dialogue seed, or `gatt eval`'s job seed.
    pub seed: Option<u64>,
    /// 0-based position of the dialogue in its job.
    pub index: Option<usize>,
    /// True when the instruction was phrased tersely ("Language: French.").
    pub terse: Option<bool>,
    /// Prompt tokens of each sampled reply, in turn order.
    pub prompt_tokens: Option<Vec<usize>>,
    /// Tokens generated for each reply, in turn order.
    pub completion_tokens: Option<Vec<usize>>,
    /// Whether each reply ended on its own (rather than at the token limit).
    pub finished: Option<Vec<bool>>,
    /// False when the final reply was cut at the token limit and is to be trained
    /// without its end-of-turn token (`gatt synth --cut-replies drop-eot`); the masker
    /// then puts no loss on that token (see `gatt::mask::CutReplies`).
    pub final_end_of_turn: Option<bool>,
    /// 1-based turns whose user message was a probe question (`gatt eval`).
    pub probe_turns: Option<Vec<usize>>,
    /// The kind each probe turn asked about; as long as `probe_turns`.
    pub probe_kinds: Option<Vec<ConstraintKind>>,
    /// Keys this version does not know, kept as they are.
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
            final_end_of_turn: typed("final_end_of_turn", take("final_end_of_turn"))?,
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

/// A known field's value, borrowed for writing.
enum Known<'a> {
    Messages(&'a [Message]),
    Text(&'a str),
    Int(u64),
    Flag(bool),
    Ints(&'a [usize]),
    Flags(&'a [bool]),
    Kinds(&'a [ConstraintKind]),
}

impl Serialize for Known<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Known::Messages(v) => v.serialize(s),
            Known::Text(v) => v.serialize(s),
            Known::Int(v) => v.serialize(s),
            Known::Flag(v) => v.serialize(s),
            Known::Ints(v) => v.serialize(s),
            Known::Flags(v) => v.serialize(s),
            Known::Kinds(v) => v.serialize(s),
        }
    }
}

impl Serialize for DialogueMeta {
    /// One object, keys sorted, as a `serde_json::Map` of the same entries would write
    /// them (how `meta` was always written); a known field wins over an unknown key of
    /// the same name.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let known = [
            ("augmented", self.augmented.as_deref().map(Known::Messages)),
            ("model", self.model.as_deref().map(Known::Text)),
            ("seed", self.seed.map(Known::Int)),
            ("index", self.index.map(|i| Known::Int(i as u64))),
            ("terse", self.terse.map(Known::Flag)),
            (
                "prompt_tokens",
                self.prompt_tokens.as_deref().map(Known::Ints),
            ),
            (
                "completion_tokens",
                self.completion_tokens.as_deref().map(Known::Ints),
            ),
            ("finished", self.finished.as_deref().map(Known::Flags)),
            ("final_end_of_turn", self.final_end_of_turn.map(Known::Flag)),
            ("probe_turns", self.probe_turns.as_deref().map(Known::Ints)),
            ("probe_kinds", self.probe_kinds.as_deref().map(Known::Kinds)),
        ];
        let mut entries: Vec<(&str, Entry)> = known
            .into_iter()
            .filter_map(|(k, v)| Some((k, Entry::Known(v?))))
            .collect();
        for (k, v) in &self.other {
            if !entries.iter().any(|(name, _)| name == k) {
                entries.push((k.as_str(), Entry::Other(v)));
            }
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (k, v) in &entries {
            match v {
                Entry::Known(v) => map.serialize_entry(k, v)?,
                Entry::Other(v) => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

/// One key's value: a known field or an unknown key's JSON.
enum Entry<'a> {
    Known(Known<'a>),
    Other(&'a Value),
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
    fn writes_the_json_older_versions_wrote_byte_for_byte() {
        let m = DialogueMeta {
            model: Some("m".into()),
            seed: Some(1),
            index: Some(0),
            probe_turns: Some(vec![2]),
            probe_kinds: Some(vec![ConstraintKind::Hobby]),
            other: [("b_extra".to_string(), json!(true))].into_iter().collect(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"b_extra":true,"index":0,"model":"m","probe_kinds":["hobby"],"probe_turns":[2],"seed":1}"#
        );
        assert_eq!(
            serde_json::to_string(&DialogueMeta::default()).unwrap(),
            "{}"
        );
        // A record `gatt eval` wrote before `meta` was typed (docs/baseline).
        let old = r#"{"index":10,"model":"SmolLM2-135M-Instruct.Q4_1.gguf","probe_kinds":["figure","hobby","figure","hobby","figure","hobby"],"probe_turns":[2,4,6,8,10,12],"seed":0}"#;
        let m: DialogueMeta = serde_json::from_str(old).unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), old);
    }

    #[test]
    fn a_known_field_wins_over_an_unknown_key_of_its_name() {
        let mut m = DialogueMeta {
            seed: Some(3),
            ..Default::default()
        };
        m.other.insert("seed".into(), json!("x"));
        m.other.insert("terse".into(), json!("y"));
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"seed":3,"terse":"y"}"#
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
