//! Flag values that name a library enum's values: clap mirrors of the library enums, which
//! know nothing of flags. Each mirror lists the same variants (the conversions both ways
//! fail to compile otherwise) and its doc comments are what `--help` shows for each value;
//! the tests check that clap's names are the library's.

use gatt::dataset::Format;
use gatt::mask::export::Export;
use gatt::mask::pipeline::OnError;
use gatt::mask::{CutReplies, Policy, SpecialText, Truncate};
use gatt::transform::{Attach, Placement};
use gatt_synth::CutMode;

/// A `clap::ValueEnum` mirror of a library enum, with `From` both ways.
macro_rules! mirror {
    ($(#[$meta:meta])* $name:ident => $lib:ident { $($(#[$vmeta:meta])* $variant:ident,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl From<$name> for $lib {
            fn from(a: $name) -> Self {
                match a {
                    $($name::$variant => $lib::$variant,)+
                }
            }
        }

        impl From<$lib> for $name {
            fn from(v: $lib) -> Self {
                match v {
                    $($lib::$variant => $name::$variant,)+
                }
            }
        }
    };
}

mirror! {
    /// Values of `--on-error`.
    OnErrorArg => OnError {
        /// Stop at the first bad record (exit status 2).
        Fail,
        /// Skip it and count it by reason.
        Skip,
    }
}

mirror! {
    /// Values of `--policy`.
    PolicyArg => Policy {
        /// Only the final assistant reply and its end-of-turn marker (the paper's GAtt).
        Gatt,
        /// One sample per assistant turn: the conversation up to that reply, loss only on it.
        GattExpand,
        /// Every assistant reply (ordinary SFT, for ablations).
        Assistant,
        /// Every token.
        All,
    }
}

mirror! {
    /// Values of `--truncate`.
    TruncateArg => Truncate {
        /// Drop the oldest user/assistant pairs (keeping the system message and the final
        /// reply intact) until the record fits.
        Left,
    }
}

mirror! {
    /// Values of `--special-text`.
    SpecialTextArg => SpecialText {
        /// Refuse records whose content holds the text of a special token
        /// (counted as special_token_in_content).
        Refuse,
        /// Encode such text as ordinary tokens (transformers' split_special_tokens=True
        /// for the content only); the template's markers stay special tokens.
        Encode,
    }
}

mirror! {
    /// Values of `gatt mask --cut-replies`.
    CutRepliesArg => CutReplies {
        /// Refuse a record with a reply cut at the token limit (counted as cut_reply),
        /// unless it asks for its final reply to be trained without the end-of-turn
        /// token (meta.final_end_of_turn: false).
        Refuse,
        /// Train a cut final reply without its end-of-turn token; refuse a cut earlier reply.
        DropEot,
        /// Mask it as it is: the cut reply is trained as if complete, end-of-turn included.
        Keep,
    }
}

mirror! {
    /// Values of `gatt synth --cut-replies`.
    CutModeArg => CutMode {
        /// Sample the turn again (another seed, up to --resample-tries times), then drop
        /// the dialogue.
        Resample,
        /// As resample, but a final reply still cut is kept and trained without its
        /// end-of-turn token (meta.final_end_of_turn: false).
        DropEot,
        /// Keep cut replies as they are (trained as if complete; `gatt mask` refuses them
        /// unless --cut-replies keep there too).
        Keep,
    }
}

mirror! {
    /// Values of `--format` and `--out-format`.
    FormatArg => Format {
        Parquet,
        Jsonl,
    }
}

mirror! {
    /// Values of `--attach`.
    AttachArg => Attach {
        /// `instruction\n\nuser text`
        Prefix,
        /// `user text\n\ninstruction`
        Suffix,
    }
}

mirror! {
    /// Values of `--placement`.
    PlacementArg => Placement {
        /// The instruction becomes the system message, or extends an existing one.
        System,
        /// The instruction is attached to the first user turn only.
        FirstUser,
    }
}

mirror! {
    /// Values of `--export`.
    ExportArg => Export {
        /// gatt's samples: id, input_ids, labels, attention_mask, n_tokens, n_loss_tokens.
        Gatt,
        /// OpenAI chat fine-tuning JSON lines: {"messages": [...]}, "weight": 0 on every
        /// assistant message without loss, 1 on those with loss; no other key.
        Openai,
        /// TRL's conversational prompt-completion: `prompt` (the earlier messages) and
        /// `completion` (the final reply).
        PromptCompletion,
        /// Exactly input_ids, attention_mask and labels (lists of int64).
        Tokenized,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;
    use std::fmt::Display;
    use std::str::FromStr;

    /// Every flag value parses, under clap's name, to the library value it mirrors, and
    /// the library prints it under the same name.
    fn same_names<A, L>()
    where
        A: ValueEnum + Copy + Into<L>,
        L: FromStr + Display + PartialEq + std::fmt::Debug,
        L::Err: std::fmt::Debug,
    {
        for a in A::value_variants() {
            let name = a.to_possible_value().unwrap().get_name().to_string();
            let lib: L = (*a).into();
            assert_eq!(name.parse::<L>().unwrap(), lib);
            assert_eq!(lib.to_string(), name);
        }
    }

    #[test]
    fn flag_values_are_the_library_names() {
        same_names::<OnErrorArg, OnError>();
        same_names::<PolicyArg, Policy>();
        same_names::<TruncateArg, Truncate>();
        same_names::<SpecialTextArg, SpecialText>();
        same_names::<CutRepliesArg, CutReplies>();
        same_names::<CutModeArg, CutMode>();
        same_names::<FormatArg, Format>();
        same_names::<AttachArg, Attach>();
        same_names::<PlacementArg, Placement>();
        same_names::<ExportArg, Export>();
    }
}
