//! Replies cut at the token limit: refused, or trained without their end-of-turn token.
//!
//! A reply that stopped at the token limit (`meta.finished` false for it; `finish_reason:
//! length` from a server) ends mid-sentence. Trained as it is, its end-of-turn token
//! would teach the model to stop mid-sentence, so by default such a record is refused
//! ([`SkipReason::CutReply`]). A cut *final* reply can instead be trained without its
//! end-of-turn token (the reply's tokens carry loss, the marker does not): when the record
//! says so itself (`meta.final_end_of_turn: false`, as `gatt synth --cut-replies drop-eot`
//! writes) or when [`CutReplies::DropEot`] asks for it.

use super::{MaskError, Policy, SkipReason};
use crate::dialogue::{Dialogue, Role};
use serde::Serialize;

/// What the masker does with a record whose `meta.finished` says a reply was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CutReplies {
    /// Refuse it ([`SkipReason::CutReply`]), unless the record asks for its final reply
    /// to be trained without the end-of-turn token (`meta.final_end_of_turn: false`).
    #[default]
    Refuse,
    /// A cut final reply carries loss without its end-of-turn token; a cut earlier reply
    /// is still refused (a user turn follows it mid-sentence).
    DropEot,
    /// Mask it as it is, end-of-turn token included (the reply is trained as if complete).
    Keep,
}

crate::names::named_values!(CutReplies {
    Refuse => "refuse",
    DropEot => "drop-eot",
    Keep => "keep",
});

/// Whether the final reply's end-of-turn token carries loss: false only when the record
/// asks for it (`meta.final_end_of_turn: false`) or `how` is [`CutReplies::DropEot`] and
/// the final reply was cut.
///
/// # Errors
///
/// [`SkipReason::CutReply`] for a cut reply the options do not let through (under
/// [`Policy::All`] every token is trained, so a cut final reply cannot drop its marker);
/// [`SkipReason::Invalid`] when `meta.finished` does not have one flag per assistant reply.
pub(crate) fn final_end_of_turn(
    d: &Dialogue,
    how: CutReplies,
    policy: Policy,
) -> Result<bool, MaskError> {
    let asked = d.meta.final_end_of_turn == Some(false);
    let replies = d
        .messages
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .count();
    let cut: Vec<usize> = match &d.meta.finished {
        None => Vec::new(),
        Some(flags) if flags.len() != replies => {
            return Err(MaskError::new(
                SkipReason::Invalid,
                format!(
                "meta.finished has {} flags for {replies} assistant replies; give one per reply",
                flags.len()
            ),
            ))
        }
        Some(flags) => (0..flags.len()).filter(|&i| !flags[i]).collect(),
    };
    if how == CutReplies::Keep {
        return Ok(!asked || policy == Policy::All);
    }
    let last = replies.saturating_sub(1);
    let drop_final = asked || (how == CutReplies::DropEot && cut.contains(&last));
    let refused = cut.iter().find(|&&i| i != last || !drop_final);
    if let Some(&i) = refused {
        return Err(cut_reply(i, replies, how));
    }
    if drop_final && policy == Policy::All {
        return Err(MaskError::new(
            SkipReason::CutReply,
            "the final reply is to be trained without its end-of-turn token, but --policy all \
             trains every token",
        ));
    }
    Ok(!drop_final)
}

fn cut_reply(i: usize, replies: usize, how: CutReplies) -> MaskError {
    let what = if i + 1 == replies {
        "the final reply"
    } else {
        "an earlier reply (a user turn follows it mid-sentence)"
    };
    let how = match how {
        CutReplies::DropEot if i + 1 == replies => "",
        CutReplies::DropEot => "; only a final reply can be trained without its end-of-turn token",
        _ => "",
    };
    MaskError::new(
        SkipReason::CutReply,
        format!(
            "reply {} of {replies} was cut at the token limit (meta.finished): {what} would be \
             trained with an end-of-turn token after a broken sentence{how}",
            i + 1
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialogue::Message;

    fn record(finished: Option<Vec<bool>>, final_eot: Option<bool>) -> Dialogue {
        let mut d = Dialogue::new(
            "d",
            vec![
                Message::user("a"),
                Message::assistant("b"),
                Message::user("c"),
                Message::assistant("d"),
            ],
        );
        d.meta.finished = finished;
        d.meta.final_end_of_turn = final_eot;
        d
    }

    fn reason(r: Result<bool, MaskError>) -> Option<SkipReason> {
        r.err().map(|e| e.reason)
    }

    #[test]
    fn a_cut_reply_is_refused_by_default() {
        use CutReplies::*;
        let g = Policy::Gatt;
        let ok = record(Some(vec![true, true]), None);
        assert_eq!(final_end_of_turn(&ok, Refuse, g), Ok(true));
        assert_eq!(final_end_of_turn(&record(None, None), Refuse, g), Ok(true));
        let final_cut = record(Some(vec![true, false]), None);
        assert_eq!(
            reason(final_end_of_turn(&final_cut, Refuse, g)),
            Some(SkipReason::CutReply)
        );
        assert_eq!(final_end_of_turn(&final_cut, DropEot, g), Ok(false));
        assert_eq!(final_end_of_turn(&final_cut, Keep, g), Ok(true));
        let early_cut = record(Some(vec![false, true]), None);
        for how in [Refuse, DropEot] {
            assert_eq!(
                reason(final_end_of_turn(&early_cut, how, g)),
                Some(SkipReason::CutReply)
            );
        }
        assert_eq!(final_end_of_turn(&early_cut, Keep, g), Ok(true));
    }

    #[test]
    fn the_record_can_ask_for_its_final_reply_without_end_of_turn() {
        let d = record(Some(vec![true, false]), Some(false));
        assert_eq!(
            final_end_of_turn(&d, CutReplies::Refuse, Policy::Gatt),
            Ok(false)
        );
        assert_eq!(
            final_end_of_turn(&d, CutReplies::Keep, Policy::Gatt),
            Ok(false)
        );
        assert_eq!(
            reason(final_end_of_turn(&d, CutReplies::Refuse, Policy::All)),
            Some(SkipReason::CutReply)
        );
        // Asking does not excuse a cut earlier reply.
        let d = record(Some(vec![false, false]), Some(false));
        assert_eq!(
            reason(final_end_of_turn(&d, CutReplies::Refuse, Policy::Gatt)),
            Some(SkipReason::CutReply)
        );
    }

    #[test]
    fn flags_must_match_the_replies() {
        let d = record(Some(vec![true]), None);
        assert_eq!(
            reason(final_end_of_turn(&d, CutReplies::Refuse, Policy::Gatt)),
            Some(SkipReason::Invalid)
        );
    }

    #[test]
    fn names_round_trip() {
        for &v in CutReplies::ALL {
            assert_eq!(v.to_string().parse::<CutReplies>(), Ok(v));
        }
    }

    /// On SmolLM2's real template and tokenizer: a cut final reply under `drop-eot`
    /// carries loss on exactly the reply's tokens, the `<|im_end|>` after it none.
    #[test]
    fn drop_eot_trains_the_reply_without_its_end_of_turn_token() {
        use crate::mask::tests::smollm2;
        use crate::mask::{MaskOptions, IGNORE};
        let mut d = Dialogue::new(
            "d",
            vec![
                Message::system("Always answer in French."),
                Message::user("Tell me a story."),
                Message::assistant("Il était une fois un roi qui"),
            ],
        );
        d.meta.finished = Some(vec![false]);
        let refuse = smollm2(MaskOptions::default());
        assert_eq!(refuse.mask(&d).unwrap_err().reason, SkipReason::CutReply);
        let keep = smollm2(MaskOptions {
            cut_replies: CutReplies::Keep,
            ..Default::default()
        });
        let with_eot = keep.mask(&d).unwrap().remove(0);
        let drop = smollm2(MaskOptions {
            cut_replies: CutReplies::DropEot,
            ..Default::default()
        });
        let without = drop.mask(&d).unwrap().remove(0);
        assert_eq!(
            without.input_ids, with_eot.input_ids,
            "same tokens, other labels"
        );
        assert_eq!(without.n_loss_tokens() + 1, with_eot.n_loss_tokens());
        let loss: Vec<u32> = without
            .labels
            .iter()
            .filter(|l| **l != IGNORE)
            .map(|l| *l as u32)
            .collect();
        let text = drop.tokenizer().decode(&loss, false).unwrap();
        assert_eq!(text, "Il était une fois un roi qui");
        let im_end = drop.tokenizer().token_to_id("<|im_end|>").unwrap();
        assert!(!loss.contains(&im_end));
        // The record's own request is honoured under the default options.
        d.meta.final_end_of_turn = Some(false);
        assert_eq!(refuse.mask(&d).unwrap(), vec![without]);
    }
}
