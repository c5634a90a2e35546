//! Constraint kinds by name, as a user names them (any case, spaces around ignored).

use crate::dialogue::ConstraintKind;

/// A name that is none of the known constraint kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown kind `{0}` (use hobby, language, figure, persona, format)")]
pub struct UnknownKind(pub String);

/// One of the known kinds ([`ConstraintKind::KNOWN`]) by name: `hobby`, `language`,
/// `figure`, `persona` or `format`, in any case, with surrounding spaces ignored.
///
/// # Errors
///
/// [`UnknownKind`] for any other name (unlike `ConstraintKind::from`, which keeps it
/// as `Other` for datasets from elsewhere).
pub fn parse_kind(name: &str) -> Result<ConstraintKind, UnknownKind> {
    match ConstraintKind::from(name.trim().to_lowercase()) {
        ConstraintKind::Other(k) => Err(UnknownKind(k)),
        known => Ok(known),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_kinds_parse_in_any_case_and_others_are_refused() {
        for k in ConstraintKind::KNOWN {
            assert_eq!(
                parse_kind(&format!(" {} ", k.as_str().to_uppercase())),
                Ok(k)
            );
        }
        let e = parse_kind("Mood").unwrap_err();
        assert_eq!(e, UnknownKind("mood".into()));
        assert!(e.to_string().starts_with("unknown kind `mood`"), "{e}");
    }
}
