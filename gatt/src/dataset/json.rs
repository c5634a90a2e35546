//! Reading a JSON file into a typed value, with errors that name the field.

use super::Location;
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use std::path::Path;

/// Reads the JSON file at `path` as a `T`.
///
/// A file that is not JSON, or whose content does not fit `T`, is an input error at the
/// file, the line the parser stopped on and (for a misfit) the field at fault, e.g.
/// `run.json:3: field `fingerprint.model`: invalid type: integer `3`, expected a string`.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let mut loc = Location::in_file(path).at_line(inner.line());
        if field != "." && !(inner.is_syntax() || inner.is_eof()) {
            loc = loc.with_field(field);
        }
        // serde_json's message ends with " at line L column C", which the location says.
        let text = inner.to_string();
        let message = match text.rfind(" at line ") {
            Some(i) => text[..i].to_string(),
            None => text,
        };
        Error::input(message).at(loc).with_source(inner)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Run {
        status: String,
        counts: Counts,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Counts {
        done: usize,
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        std::fs::write(
            &path,
            "{\n  \"status\": \"done\",\n  \"counts\": {\"done\": -1}\n}\n",
        )
        .unwrap();
        let e = read_json::<Run>(&path).unwrap_err();
        assert!(e.is_input());
        assert_eq!(
            e.to_string(),
            format!(
                "{}:3: field `counts.done`: invalid value: integer `-1`, expected usize",
                path.display()
            )
        );
        std::fs::write(&path, "{\"status\": ").unwrap();
        let e = read_json::<Run>(&path).unwrap_err();
        assert!(e.to_string().contains("EOF while parsing"), "{e}");
        assert!(read_json::<Run>(&dir.path().join("none.json"))
            .unwrap_err()
            .is_input());
    }
}
