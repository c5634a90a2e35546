//! Catalog files that replace the built-in entries of one kind (`KIND=FILE`, e.g.
//! `hobby=hobbies.json` as `gatt constraints expand` writes it).

use super::kinds::parse_kind;
use super::Catalog;
use crate::dialogue::ConstraintKind;
use crate::error::Result;
use std::path::PathBuf;

/// One kind's entries, to be read from a file instead of the built-in catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogOverride {
    /// The kind whose entries the file replaces.
    pub kind: ConstraintKind,
    /// A JSON list of entries of that kind.
    pub path: PathBuf,
}

impl std::str::FromStr for CatalogOverride {
    type Err = String;

    /// Parses `KIND=FILE`: a known kind (see [`parse_kind`]) and a path.
    fn from_str(spec: &str) -> std::result::Result<Self, String> {
        let (kind, path) = spec
            .split_once('=')
            .filter(|(_, path)| !path.is_empty())
            .ok_or_else(|| "expected KIND=FILE, e.g. hobby=hobbies.json".to_string())?;
        Ok(CatalogOverride {
            kind: parse_kind(kind).map_err(|e| e.to_string())?,
            path: path.into(),
        })
    }
}

impl Catalog {
    /// The built-in catalogs with some kinds replaced by files, later overrides of a
    /// kind winning.
    ///
    /// # Errors
    ///
    /// A file that cannot be read, or whose entries do not parse as that kind's.
    pub fn with_overrides(overrides: &[CatalogOverride]) -> Result<Catalog> {
        let mut catalog = Catalog::builtin();
        for o in overrides {
            catalog.load_file(&o.kind, &o.path)?;
        }
        Ok(catalog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_or_say_what_is_expected() {
        let o: CatalogOverride = "hobby=h.json".parse().unwrap();
        assert_eq!(
            (o.kind, o.path),
            (ConstraintKind::Hobby, PathBuf::from("h.json"))
        );
        for bad in ["hobby", "hobby=", "=h.json"] {
            assert!(bad.parse::<CatalogOverride>().is_err(), "{bad}");
        }
        assert!("hobby.json"
            .parse::<CatalogOverride>()
            .unwrap_err()
            .contains("expected KIND=FILE"));
        assert!("mood=m.json"
            .parse::<CatalogOverride>()
            .unwrap_err()
            .contains("unknown kind `mood`"));
    }

    #[test]
    fn a_file_replaces_its_kind_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.json");
        std::fs::write(&path, r#"[{"name": "Juggling", "keywords": ["juggl"]}]"#).unwrap();
        let c = Catalog::with_overrides(&[CatalogOverride {
            kind: ConstraintKind::Hobby,
            path,
        }])
        .unwrap();
        assert_eq!(c.values(&ConstraintKind::Hobby), ["Juggling"]);
        assert_eq!(c.figures, Catalog::builtin().figures);
        let missing = CatalogOverride {
            kind: ConstraintKind::Hobby,
            path: dir.path().join("none.json"),
        };
        assert!(Catalog::with_overrides(&[missing]).unwrap_err().is_input());
    }

    #[test]
    fn translated_keywords_are_keyed_by_language_code() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.json");
        let load = |json: &str| {
            std::fs::write(&path, json).unwrap();
            Catalog::with_overrides(&[CatalogOverride {
                kind: ConstraintKind::Hobby,
                path: path.clone(),
            }])
        };
        let ok = load(
            r#"[{"name": "Chess", "keywords": ["chess"],
            "translated_keywords": {"fra": ["échecs"]}}]"#,
        )
        .unwrap();
        assert_eq!(ok.hobbies[0].translated_keywords["fra"], ["échecs"]);
        let by_name = load(
            r#"[{"name": "Chess", "keywords": ["chess"],
            "translated_keywords": {"French": ["échecs"]}}]"#,
        )
        .unwrap_err();
        assert!(by_name.is_input());
        assert!(by_name
            .to_string()
            .contains("`French` is not an ISO 639-3 code"));
        let blank = load(
            r#"[{"name": "Chess", "keywords": ["chess"],
            "translated_keywords": {"fra": [" "]}}]"#,
        )
        .unwrap_err();
        assert!(blank.to_string().contains("no blank ones"), "{blank}");
    }

    #[test]
    fn false_friends_are_read_and_blank_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.json");
        let load = |json: &str| {
            std::fs::write(&path, json).unwrap();
            Catalog::with_overrides(&[CatalogOverride {
                kind: ConstraintKind::Language,
                path: path.clone(),
            }])
        };
        let ok = load(r#"[{"name": "Italian", "code": "ita", "false_friends": ["camera"]}]"#);
        assert_eq!(ok.unwrap().languages[0].false_friends, ["camera"]);
        let none = load(r#"[{"name": "Italian", "code": "ita"}]"#).unwrap();
        assert!(none.languages[0].false_friends.is_empty());
        let blank = load(r#"[{"name": "Italian", "code": "ita", "false_friends": ["a", ""]}]"#)
            .unwrap_err();
        assert!(blank.is_input());
        assert!(
            blank
                .to_string()
                .ends_with("language `Italian`: false_friends[1] is blank"),
            "{blank}"
        );
    }
}
