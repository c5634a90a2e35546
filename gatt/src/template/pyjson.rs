//! `tojson` as Hugging Face defines it (Python `json.dumps(ensure_ascii=False)`),
//! not minijinja's HTML-safe variant, so tool schemas render byte for byte.

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, Value};

pub fn tojson(value: &Value, indent: Option<usize>, kwargs: Kwargs) -> Result<Value, Error> {
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    // `tojson(indent=4)`, as templates with tools write it, or `tojson(4)`.
    let indent = match indent {
        Some(n) => Some(n),
        None => kwargs.get::<Option<usize>>("indent")?,
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write(&mut out, value, indent, 0, sort_keys.unwrap_or(false))?;
    Ok(Value::from_safe_string(out))
}

fn write(
    out: &mut String,
    v: &Value,
    indent: Option<usize>,
    depth: usize,
    sort: bool,
) -> Result<(), Error> {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    if super::pynone::is_none(v) {
        out.push_str("null");
        return Ok(());
    }
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&v.to_string()),
        ValueKind::String => out.push_str(
            &serde_json::to_string(v.as_str().unwrap_or(""))
                .map_err(|e| Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string()))?,
        ),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write(out, item, indent, depth + 1, sort)?;
            }
            if !items.is_empty() {
                newline(out, depth);
            }
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if sort {
                keys.sort();
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                let key = k
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| k.to_string());
                out.push_str(&serde_json::to_string(&key).unwrap_or_default());
                out.push_str(": ");
                write(out, &v.get_item(k)?, indent, depth + 1, sort)?;
            }
            if !keys.is_empty() {
                newline(out, depth);
            }
            out.push('}');
        }
        _ => out.push_str(&serde_json::to_string(&v.to_string()).unwrap_or_default()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_python_json_dumps() {
        let env = {
            let mut e = minijinja::Environment::new();
            e.add_filter("tojson", tojson);
            e
        };
        let v = serde_json::json!({"name": "f", "args": [1, "é<>"], "ok": true, "n": null});
        let out = env
            .render_str("{{ v | tojson }}", minijinja::context! { v => v })
            .unwrap();
        assert_eq!(
            out,
            r#"{"args": [1, "é<>"], "n": null, "name": "f", "ok": true}"#
        );
    }

    /// `tojson(indent=2)` as a keyword (Llama 3.1's template with tools writes
    /// `tojson(indent=4)`); the expected text is Python's
    /// `json.dumps(v, ensure_ascii=False, indent=2)`.
    #[test]
    fn indent_as_a_keyword_matches_python() {
        let mut env = minijinja::Environment::new();
        env.add_filter("tojson", tojson);
        let v = serde_json::json!({"args": [1, "é"], "n": null, "name": "f", "o": {}, "l": []});
        let python = "{\n  \"args\": [\n    1,\n    \"é\"\n  ],\n  \"l\": [],\n  \"n\": null,\n  \"name\": \"f\",\n  \"o\": {}\n}";
        for call in ["tojson(indent=2)", "tojson(2)"] {
            let out = env
                .render_str(
                    &format!("{{{{ v | {call} }}}}"),
                    minijinja::context! { v => v },
                )
                .unwrap();
            assert_eq!(out, python, "{call}");
        }
    }
}
