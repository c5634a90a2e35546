//! The GAtt transform, as pure functions.
//!
//! Sampling sees the instruction in *every* user turn ([`attach`]); the training record
//! keeps it only once, at the start ([`to_training`]). The mismatch this creates for the
//! earlier replies is why the loss mask later zeroes every turn but the last.

use crate::dialogue::{Message, Role};

/// Separator between the instruction and the user's own words.
pub const SEPARATOR: &str = "\n\n";

/// Where the instruction goes inside each user turn during sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attach {
    /// `instruction\n\nuser text`
    #[default]
    Prefix,
    /// `user text\n\ninstruction`
    Suffix,
}

crate::names::named_values!(Attach {
    Prefix => "prefix",
    Suffix => "suffix",
});

/// Where the instruction lives in the training record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// The instruction becomes the system message, or extends an existing one.
    #[default]
    System,
    /// The instruction is attached to the first user turn only.
    FirstUser,
}

crate::names::named_values!(Placement {
    System => "system",
    FirstUser => "first-user",
});

fn join(instruction: &str, content: &str, at: Attach) -> String {
    match at {
        Attach::Prefix => format!("{instruction}{SEPARATOR}{content}"),
        Attach::Suffix => format!("{content}{SEPARATOR}{instruction}"),
    }
}

/// Step 2 of the recipe: the instruction concatenated to every user turn.
pub fn attach(messages: &[Message], instruction: &str, at: Attach) -> Vec<Message> {
    if instruction.is_empty() {
        return messages.to_vec();
    }
    messages
        .iter()
        .map(|m| match m.role {
            Role::User => Message::user(join(instruction, &m.content, at)),
            _ => m.clone(),
        })
        .collect()
}

/// The inverse of [`attach`]: user turns without the instruction.
///
/// Turns that do not carry the instruction are left as they are.
pub fn detach(messages: &[Message], instruction: &str, at: Attach) -> Vec<Message> {
    if instruction.is_empty() {
        return messages.to_vec();
    }
    messages
        .iter()
        .map(|m| {
            if m.role != Role::User {
                return m.clone();
            }
            let stripped = match at {
                Attach::Prefix => m
                    .content
                    .strip_prefix(instruction)
                    .and_then(|s| s.strip_prefix(SEPARATOR)),
                Attach::Suffix => m
                    .content
                    .strip_suffix(instruction)
                    .and_then(|s| s.strip_suffix(SEPARATOR)),
            };
            Message::user(stripped.unwrap_or(&m.content))
        })
        .collect()
}

/// Puts the instruction once, at the start of a conversation that does not carry it.
pub fn place_once(
    messages: &[Message],
    instruction: &str,
    placement: Placement,
    at: Attach,
) -> Vec<Message> {
    let mut out = messages.to_vec();
    if instruction.is_empty() {
        return out;
    }
    match placement {
        Placement::System => match out.first_mut() {
            Some(first) if first.role == Role::System => {
                first.content = format!("{}{SEPARATOR}{instruction}", first.content);
            }
            _ => out.insert(0, Message::system(instruction)),
        },
        Placement::FirstUser => {
            if let Some(first) = out.iter_mut().find(|m| m.role == Role::User) {
                first.content = join(instruction, &first.content, at);
            }
        }
    }
    out
}

/// Step 4 of the recipe: from the augmented conversation (instruction in every user
/// turn) to the training conversation (instruction only at the start).
pub fn to_training(
    augmented: &[Message],
    instruction: &str,
    at: Attach,
    placement: Placement,
) -> Vec<Message> {
    place_once(
        &detach(augmented, instruction, at),
        instruction,
        placement,
        at,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn convo() -> Vec<Message> {
        vec![
            Message::user("hi"),
            Message::assistant("hello"),
            Message::user("how are you?"),
            Message::assistant("fine"),
        ]
    }

    #[test]
    fn attach_touches_every_user_turn_only() {
        let a = attach(&convo(), "Speak French.", Attach::Prefix);
        assert_eq!(a[0].content, "Speak French.\n\nhi");
        assert_eq!(a[1].content, "hello");
        assert_eq!(a[2].content, "Speak French.\n\nhow are you?");
        let s = attach(&convo(), "Speak French.", Attach::Suffix);
        assert_eq!(s[2].content, "how are you?\n\nSpeak French.");
    }

    #[test]
    fn training_keeps_instruction_once_in_system() {
        let a = attach(&convo(), "Speak French.", Attach::Prefix);
        let t = to_training(&a, "Speak French.", Attach::Prefix, Placement::System);
        assert_eq!(t[0], Message::system("Speak French."));
        assert_eq!(&t[1..], &convo()[..]);
    }

    #[test]
    fn training_extends_existing_system() {
        let mut c = convo();
        c.insert(0, Message::system("Be brief."));
        let a = attach(&c, "Speak French.", Attach::Suffix);
        let t = to_training(&a, "Speak French.", Attach::Suffix, Placement::System);
        assert_eq!(t[0].content, "Be brief.\n\nSpeak French.");
        assert_eq!(t.len(), c.len());
    }

    #[test]
    fn training_first_user_placement() {
        let a = attach(&convo(), "Speak French.", Attach::Prefix);
        let t = to_training(&a, "Speak French.", Attach::Prefix, Placement::FirstUser);
        assert_eq!(t[0].content, "Speak French.\n\nhi");
        assert_eq!(t[2].content, "how are you?");
    }

    proptest! {
        #[test]
        fn detach_inverts_attach(
            turns in proptest::collection::vec((".*", ".*"), 1..5),
            inst in ".+",
            suffix in any::<bool>(),
        ) {
            let at = if suffix { Attach::Suffix } else { Attach::Prefix };
            let msgs: Vec<Message> = turns
                .iter()
                .flat_map(|(u, a)| [Message::user(u.clone()), Message::assistant(a.clone())])
                .collect();
            let back = detach(&attach(&msgs, &inst, at), &inst, at);
            prop_assert_eq!(back, msgs);
        }

        #[test]
        fn instruction_only_in_first_turn(
            turns in proptest::collection::vec(("[a-z ]{1,20}", "[a-z ]{1,20}"), 1..6),
        ) {
            let inst = "Always answer in French.";
            let msgs: Vec<Message> = turns
                .iter()
                .flat_map(|(u, a)| [Message::user(u.clone()), Message::assistant(a.clone())])
                .collect();
            let aug = attach(&msgs, inst, Attach::Prefix);
            for m in aug.iter().filter(|m| m.role == Role::User) {
                prop_assert!(m.content.contains(inst));
            }
            let t = to_training(&aug, inst, Attach::Prefix, Placement::FirstUser);
            let users: Vec<_> = t.iter().filter(|m| m.role == Role::User).collect();
            prop_assert!(users[0].content.contains(inst));
            for u in &users[1..] {
                prop_assert!(!u.content.contains(inst));
            }
        }
    }
}
