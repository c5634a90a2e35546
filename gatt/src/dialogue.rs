//! The one record type every stage reads and writes.

mod meta;

pub use meta::DialogueMeta;

use serde::{Deserialize, Serialize};

/// Who speaks a message (OpenAI chat format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the whole conversation; [`Dialogue::validate`] allows one, as the
    /// first message.
    System,
    /// The person's turn.
    User,
    /// The model's reply: the only role a loss mask can train on.
    Assistant,
}

impl Role {
    /// The lowercase name, as JSON records and chat templates spell it (`"user"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One turn of a conversation, `{"role": ..., "content": ...}` as in the OpenAI chat
/// format and `transformers`' `apply_chat_template`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// The text, as the chat template receives it (no trimming here).
    pub content: String,
}

impl Message {
    /// A message of any role.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
        }
    }
    /// A [`Role::System`] message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
    /// A [`Role::User`] message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    /// A [`Role::Assistant`] message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// The kinds of constraint the generator samples and the evaluator checks.
///
/// Unknown kinds are kept (as `Other`) rather than rejected, so that datasets from
/// elsewhere load and the evaluator can count what it could not check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ConstraintKind {
    /// Talk about a hobby, e.g. "Tennis" (the paper's "Hobbies").
    Hobby,
    /// Answer in a language, e.g. "French" (the paper's "Language").
    Language,
    /// Act as a public figure, e.g. "Napoleon Bonaparte" (the paper's "Public Figure").
    Figure,
    /// Play a fictional role ("a gruff pirate captain").
    Persona,
    /// A format rule that code can check (lowercase only, at most N words, ...).
    Format,
    /// A kind this version does not know, by its name as read.
    Other(String),
}

impl ConstraintKind {
    /// The kinds the built-in catalogs hold and the evaluator checks.
    pub const KNOWN: [ConstraintKind; 5] = [
        ConstraintKind::Hobby,
        ConstraintKind::Language,
        ConstraintKind::Figure,
        ConstraintKind::Persona,
        ConstraintKind::Format,
    ];

    /// The lowercase name records use (`"hobby"`), or an unknown kind's name as read.
    pub fn as_str(&self) -> &str {
        match self {
            ConstraintKind::Hobby => "hobby",
            ConstraintKind::Language => "language",
            ConstraintKind::Figure => "figure",
            ConstraintKind::Persona => "persona",
            ConstraintKind::Format => "format",
            ConstraintKind::Other(s) => s,
        }
    }
}

impl From<String> for ConstraintKind {
    fn from(s: String) -> Self {
        match s.as_str() {
            "hobby" => ConstraintKind::Hobby,
            "language" => ConstraintKind::Language,
            "figure" => ConstraintKind::Figure,
            "persona" => ConstraintKind::Persona,
            "format" => ConstraintKind::Format,
            _ => ConstraintKind::Other(s),
        }
    }
}

impl From<ConstraintKind> for String {
    fn from(k: ConstraintKind) -> Self {
        k.as_str().to_string()
    }
}

impl std::fmt::Display for ConstraintKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One constraint of an instruction, e.g. `{"kind": "language", "value": "French"}`.
///
/// Format rules name the rule in `value` (`max_words`) and its argument in `param` (`"20"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// What is constrained.
    pub kind: ConstraintKind,
    /// A catalog entry's name (`"French"`, `"Tennis"`), or a format rule's id.
    pub value: String,
    /// A format rule's argument (`"20"` for `max_words`); absent from the JSON when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
}

impl Constraint {
    /// A constraint without a parameter.
    pub fn new(kind: ConstraintKind, value: impl Into<String>) -> Self {
        Constraint {
            kind,
            value: value.into(),
            param: None,
        }
    }
}

/// A dialogue record: the unit of every dataset the toolkit reads or writes.
///
/// As JSON: `{"id", "messages", "instruction", "constraints", "meta"}`, of which only
/// `id` and `messages` are required. [`Dialogue::validate`] checks the turn order that
/// templates and masks rely on ([`crate::mask::Masker::mask`] calls it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dialogue {
    /// Unique within a dataset; masked samples and error messages name the record by it.
    pub id: String,
    /// The conversation as it is trained on or evaluated: for a `gatt synth` record, the
    /// training form, with the instruction only once at the start (see
    /// [`crate::transform::to_training`]).
    pub messages: Vec<Message>,
    /// The GAtt instruction (may be empty for plain chat data).
    #[serde(default)]
    pub instruction: String,
    /// The constraints the instruction states, which the evaluator checks replies
    /// against (empty for plain chat data).
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    /// Provenance: model, seed, the augmented conversation, token counts, probe turns.
    #[serde(default, skip_serializing_if = "DialogueMeta::is_empty")]
    pub meta: DialogueMeta,
}

/// What a record is going to be used for decides how strict validation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Any well-formed conversation (may end with a user turn awaiting a reply).
    Chat,
    /// A training record: must end with an assistant reply.
    Training,
}

/// Why a record is malformed, naming the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// A path into the record: `messages`, `messages[1].role`, `meta.seed`.
    pub field: String,
    /// What is wrong, worded for the user.
    pub reason: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for Invalid {}

impl Invalid {
    /// An input error at `loc` (the record), naming this field.
    pub fn at(self, loc: crate::error::Location) -> crate::Error {
        crate::Error::input(self.reason)
            .at(crate::error::Location::default().with_field(self.field))
            .at(loc)
    }
}

impl Dialogue {
    /// A record with no instruction, constraints or provenance.
    pub fn new(id: impl Into<String>, messages: Vec<Message>) -> Self {
        Dialogue {
            id: id.into(),
            messages,
            instruction: String::new(),
            constraints: Vec::new(),
            meta: Default::default(),
        }
    }

    /// Checks the shape every template and mask relies on: an optional leading system
    /// message, then user/assistant alternating starting with user, no empty content.
    ///
    /// # Errors
    ///
    /// [`Invalid`] naming the first field at fault: no messages, only a system message,
    /// content that is empty or all whitespace, a role out of order, or (for
    /// [`Purpose::Training`]) a last message that is not an assistant reply.
    pub fn validate(&self, purpose: Purpose) -> Result<(), Invalid> {
        let invalid = |field: String, reason: String| Err(Invalid { field, reason });
        if self.messages.is_empty() {
            return invalid("messages".into(), "no messages".into());
        }
        let start = usize::from(self.messages[0].role == Role::System);
        if start == self.messages.len() {
            return invalid(
                "messages".into(),
                "only a system message; a user turn must follow".into(),
            );
        }
        for (i, m) in self.messages.iter().enumerate() {
            if m.content.trim().is_empty() {
                return invalid(format!("messages[{i}].content"), "empty content".into());
            }
            let expected = if i < start {
                Role::System
            } else if (i - start) % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            if m.role != expected {
                return invalid(
                    format!("messages[{i}].role"),
                    format!(
                        "expected `{}` here but found `{}` (after an optional system message, \
                         turns must alternate user, assistant, user, ...)",
                        expected.as_str(),
                        m.role.as_str()
                    ),
                );
            }
        }
        if purpose == Purpose::Training
            && self.messages.last().map(|m| m.role) != Some(Role::Assistant)
        {
            let last = self.messages.len() - 1;
            return invalid(
                format!("messages[{last}].role"),
                "a training record must end with an assistant reply".into(),
            );
        }
        Ok(())
    }

    /// Index of the system message, if any.
    pub fn system_index(&self) -> Option<usize> {
        (self.messages.first()?.role == Role::System).then_some(0)
    }

    /// Indices of the assistant messages, in order.
    pub fn assistant_indices(&self) -> Vec<usize> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.role == Role::Assistant)
            .map(|(i, _)| i)
            .collect()
    }

    /// Number of user turns.
    pub fn turns(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| m.role == Role::User)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(msgs: Vec<Message>) -> Dialogue {
        Dialogue::new("x", msgs)
    }

    #[test]
    fn accepts_system_then_alternation() {
        let x = d(vec![
            Message::system("s"),
            Message::user("u"),
            Message::assistant("a"),
        ]);
        assert_eq!(x.validate(Purpose::Training), Ok(()));
    }

    #[test]
    fn rejects_wrong_order_naming_field() {
        let x = d(vec![Message::user("u"), Message::user("u2")]);
        let e = x.validate(Purpose::Chat).unwrap_err();
        assert_eq!(e.field, "messages[1].role");
    }

    #[test]
    fn rejects_empty_content() {
        let x = d(vec![Message::user("u"), Message::assistant("  ")]);
        assert_eq!(
            x.validate(Purpose::Chat).unwrap_err().field,
            "messages[1].content"
        );
    }

    #[test]
    fn training_needs_final_assistant() {
        let x = d(vec![Message::user("u")]);
        assert!(x.validate(Purpose::Chat).is_ok());
        assert!(x.validate(Purpose::Training).is_err());
    }

    #[test]
    fn unknown_constraint_kind_round_trips() {
        let c: Constraint = serde_json::from_str(r#"{"kind":"mood","value":"happy"}"#).unwrap();
        assert_eq!(c.kind, ConstraintKind::Other("mood".into()));
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"kind":"mood","value":"happy"}"#
        );
    }
}
