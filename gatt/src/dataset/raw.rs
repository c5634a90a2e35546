//! The record shapes accepted on input, converted to [`Dialogue`].

use super::Location;
use crate::dialogue::{Constraint, Dialogue, DialogueMeta, Message, Role};
use crate::error::{Error, Result};
use serde::Deserialize;

/// Our record, or a ShareGPT one; everything optional so that missing fields get
/// a message naming them rather than a generic parse error.
#[derive(Deserialize)]
struct RawRecord {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    conversations: Option<Vec<ShareGptTurn>>,
    /// ShareGPT's top-level system prompt: the conversation's system message.
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    instruction: Option<String>,
    #[serde(default)]
    constraints: Option<Vec<Constraint>>,
    /// An object, or (in Parquet) the same object as a JSON string.
    #[serde(default)]
    meta: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ShareGptTurn {
    from: String,
    value: String,
}

fn sharegpt_role(from: &str) -> Option<Role> {
    match from {
        "system" => Some(Role::System),
        "human" | "user" => Some(Role::User),
        "gpt" | "assistant" | "chatgpt" | "bing" | "bard" | "model" => Some(Role::Assistant),
        _ => None,
    }
}

/// Parses one JSON record found at `loc`; errors are input errors at `loc`, naming the
/// field at fault.
pub fn parse_record(text: &str, loc: &Location) -> Result<Dialogue> {
    let at = |field: &str| Location::default().with_field(field).or(loc.clone());
    // A line that is JSON but not an object (`[1, 2]`, `42`, `"text"`): say so, rather
    // than what the deserializer expected internally.
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        if !v.is_object() {
            let kind = match v {
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Bool(_) => "a boolean",
                _ => "null",
            };
            return Err(Error::input(format!(
                "a record must be a JSON object with `messages` (or `conversations`); this \
                 line holds {kind}"
            ))
            .at(loc.clone()));
        }
    }
    let de = &mut serde_json::Deserializer::from_str(text);
    let raw: RawRecord = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let syntax = e.inner().is_syntax() || e.inner().is_eof();
        if text.starts_with('\u{feff}') {
            // The first line's own mark is skipped before this: one left there is a second.
            let what = match loc.line {
                Some(1) => {
                    "this line starts with a second byte order mark (U+FEFF) after the \
                            file's own"
                }
                _ => {
                    "this line starts with a byte order mark (U+FEFF), which only the first \
                      line of a file may carry"
                }
            };
            Error::input(format!(
                "{what}: several files joined with `cat`? Remove the mark \
                 (e.g. `sed -i 's/^\\xEF\\xBB\\xBF//' FILE`)"
            ))
            .at(loc.clone())
        } else if path == "." || syntax {
            Error::input(format!("invalid JSON record: {}", e.inner()))
                .at(loc.clone())
                .with_source(e.into_inner())
        } else {
            Error::input(e.inner().to_string())
                .at(at(&path))
                .with_source(e.into_inner())
        }
    })?;
    let mut messages = match (raw.messages, raw.conversations) {
        (Some(_), Some(_)) => {
            let named = match &raw.id {
                Some(serde_json::Value::String(s)) => loc.clone().with_id(s.clone()),
                Some(serde_json::Value::Number(n)) => loc.clone().with_id(n.to_string()),
                _ => loc.clone(),
            };
            return Err(Error::input(
                "the record has both `messages` and `conversations`; which one is the \
                 conversation is ambiguous: keep one",
            )
            .at(named));
        }
        (Some(m), None) => m,
        (None, Some(turns)) => turns
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let role = sharegpt_role(&t.from).ok_or_else(|| {
                    Error::input(format!(
                        "unknown speaker `{}` (expected system, human or gpt)",
                        t.from
                    ))
                    .at(at(&format!("conversations[{i}].from")))
                })?;
                Ok(Message::new(role, t.value))
            })
            .collect::<Result<_>>()?,
        (None, None) => {
            return Err(Error::input(
                "field `messages` missing (expected `messages: [{role, content}]` or \
                 ShareGPT `conversations: [{from, value}]`)",
            )
            .at(loc.clone()))
        }
    };
    // A top-level system prompt (ShareGPT's `system`) is the system message; an empty
    // one is no system message.
    if let Some(system) = raw.system.filter(|s| !s.is_empty()) {
        if messages.first().is_some_and(|m| m.role == Role::System) {
            return Err(Error::input(
                "the record has a top-level `system` and a system message in its \
                 conversation; which one is the system prompt is ambiguous: keep one",
            )
            .at(at("system")));
        }
        messages.insert(0, Message::system(system));
    }
    // Records without an id are named after their place: the line in JSONL, the row in
    // Parquet.
    let place = loc.line.or(loc.row).unwrap_or_default();
    let id = match raw.id {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::Null) | None => format!("row-{place}"),
        Some(other) => {
            return Err(
                Error::input(format!("expected a string or number, found {other}")).at(at("id")),
            )
        }
    };
    let not_object = || Error::input("expected a JSON object").at(at("meta"));
    let map = match raw.meta {
        None | Some(serde_json::Value::Null) => Default::default(),
        Some(serde_json::Value::Object(m)) => m,
        Some(serde_json::Value::String(s)) if s.is_empty() => Default::default(),
        Some(serde_json::Value::String(s)) => match serde_json::from_str(&s) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => return Err(not_object()),
        },
        Some(_) => return Err(not_object()),
    };
    let meta = DialogueMeta::from_map(map).map_err(|invalid| invalid.at(loc.clone()))?;
    Ok(Dialogue {
        id,
        messages,
        instruction: raw.instruction.unwrap_or_default(),
        constraints: raw.constraints.unwrap_or_default(),
        meta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_that_is_not_an_object_is_refused_saying_what_it_holds() {
        let loc = Location::default().at_line(3);
        for (line, kind) in [
            ("[1, 2]", "an array"),
            ("42", "a number"),
            ("\"hi\"", "a string"),
        ] {
            let e = parse_record(line, &loc).unwrap_err();
            assert!(e.is_input());
            let msg = e.to_string();
            assert!(msg.contains("JSON object") && msg.contains(kind), "{msg}");
            assert!(!msg.contains("RawRecord"), "{msg}");
        }
    }
}
