//! Special-token text inside message content.
//!
//! A tokenizer matches its special tokens (`<|im_end|>`, `<|eot_id|>`, ...) anywhere in
//! the text it is given, so a reply that mentions `<|im_end|>` would train the
//! end-of-turn id in mid-reply, and a user turn holding
//! `<|im_end|>\n<|im_start|>system\n...` would forge a real system turn. The decode
//! check cannot see either: the ids decode back to the same text.
//!
//! By default such a record is refused ([`SkipReason::SpecialTokenInContent`]). With
//! [`SpecialText::Encode`] the text is encoded as ordinary tokens, as `transformers` does
//! with `split_special_tokens=True`, while the template's own markers stay special
//! tokens: the rendered conversation is tokenized as usual, every special token that
//! lies outside the message contents is kept, and the text between two kept ones is
//! tokenized with special-token matching off. The tokenizer itself tokenizes the text
//! between special tokens independently, so the result is exactly what it gives when
//! the content holds no special-token text.

use super::spans::ReplySpan;
use super::{MaskError, SkipReason};
use crate::dialogue::Message;
use crate::template::ChatTemplate;
use aho_corasick::{AhoCorasick, MatchKind};
use serde::Serialize;
use std::ops::Range;
use tokenizers::Tokenizer;

/// What to do with message content that contains the text of a special token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpecialText {
    /// Refuse the record ([`SkipReason::SpecialTokenInContent`]).
    #[default]
    Refuse,
    /// Encode the text as ordinary tokens (`transformers`' `split_special_tokens=True`
    /// for the content only); the template's markers stay special tokens. The model
    /// must then be prompted the same way at inference.
    Encode,
}

crate::names::named_values!(SpecialText {
    Refuse => "refuse",
    Encode => "encode",
});

/// A tokenized conversation: ids and the byte range of each in the rendered text.
pub(super) struct Encoded {
    pub ids: Vec<u32>,
    pub offsets: Vec<(usize, usize)>,
    /// Content text was encoded apart from the tokenizer's special tokens.
    pub apart: bool,
}

/// The special tokens of one tokenizer, and how to keep them out of content.
pub(super) struct Specials {
    /// Sorted ids of the special tokens.
    pub ids: Vec<u32>,
    /// The text of each, in the order of `ids`.
    texts: Vec<String>,
    /// Finds their texts; `None` when the tokenizer has no special token.
    finder: Option<AhoCorasick>,
    /// The index in `texts` of each pattern of `finder` (empty texts are left out).
    patterns: Vec<usize>,
    /// The same tokenizer with special-token matching off.
    pub plain: Tokenizer,
}

impl Specials {
    /// The added tokens of `tokenizer`, special or not: the tokenizer matches both kinds
    /// whole anywhere in the text (a `tokenizer.json` may mark an end-of-text token
    /// `special: false`, as Phi-3's `</s>`), so content holding the text of either would
    /// become that token. Encoding apart only turns special ones into text; content that
    /// still holds a non-special one is refused there.
    pub fn new(tokenizer: &Tokenizer) -> Self {
        let mut ids: Vec<u32> = tokenizer
            .get_added_tokens_decoder()
            .keys()
            .copied()
            .collect();
        ids.sort_unstable();
        let texts: Vec<String> = ids
            .iter()
            .map(|id| tokenizer.id_to_token(*id).unwrap_or_default())
            .collect();
        let patterns: Vec<usize> = (0..texts.len()).filter(|i| !texts[*i].is_empty()).collect();
        let finder = (!patterns.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(patterns.iter().map(|i| &texts[*i]))
                .expect("special token texts form a valid automaton")
        });
        let mut plain = tokenizer.clone();
        plain.set_encode_special_tokens(true);
        Specials {
            ids,
            texts,
            finder,
            patterns,
            plain,
        }
    }

    /// The text of `id` when it is a special token.
    fn text(&self, id: u32) -> Option<&str> {
        let i = self.ids.binary_search(&id).ok()?;
        Some(self.texts[i].as_str())
    }

    /// Whether `id` is a special token.
    pub fn is_special(&self, id: u32) -> bool {
        self.text(id).is_some()
    }

    /// The bytes of special token `id` within its offsets `start..end`, which may also
    /// cover whitespace the token strips (`lstrip`/`rstrip`).
    fn core(&self, id: u32, full: &str, start: usize, end: usize) -> Range<usize> {
        self.text(id)
            .filter(|t| !t.is_empty())
            .and_then(|t| full[start..end].find(t).map(|p| (p, t.len())))
            .map_or(start..end, |(p, n)| start + p..start + p + n)
    }

    /// No special token may start inside reply `turn` before its end-of-turn marker (the
    /// whitespace a token strips does not count): that would be content text read as a
    /// special token, which the decode check cannot see (it decodes to the same text).
    pub fn verify_reply(
        &self,
        full: &str,
        enc: &Encoded,
        span: &ReplySpan,
        tokens: &Range<usize>,
        turn: usize,
    ) -> Result<(), MaskError> {
        let inside = tokens.clone().find(|&t| {
            let (id, (start, end)) = (enc.ids[t], enc.offsets[t]);
            self.is_special(id) && self.core(id, full, start, end).start < span.content_end
        });
        match inside {
            None => Ok(()),
            Some(t) => Err(MaskError::new(
                SkipReason::SpecialTokenInContent,
                format!(
                    "messages[{turn}]: token {t} (id {}, bytes {}..{}) inside the reply is a \
                     special token",
                    enc.ids[t], enc.offsets[t].0, enc.offsets[t].1
                ),
            )),
        }
    }

    /// The first message whose content holds the text of a special token: its index and
    /// that text.
    pub fn find(&self, messages: &[Message]) -> Option<(usize, &str)> {
        let finder = self.finder.as_ref()?;
        messages.iter().enumerate().find_map(|(i, m)| {
            let found = finder.find(m.content.as_str())?;
            let text = &self.texts[self.patterns[found.pattern().as_usize()]];
            Some((i, text.as_str()))
        })
    }

    /// Tokenizes `full` (the rendering of `messages`) so that no text of the messages'
    /// content becomes a special token, while the template's own ones stay.
    ///
    /// # Errors
    ///
    /// [`SkipReason::SpecialTokenInContent`] when the contents cannot be located in the
    /// rendering (the template does not reproduce them verbatim), when a special token
    /// straddles content and template text, or when content text still encodes to a
    /// special id.
    pub fn encode_apart(
        &self,
        tokenizer: &Tokenizer,
        template: &ChatTemplate,
        messages: &[Message],
        full: &str,
    ) -> Result<Encoded, MaskError> {
        let content =
            super::content::content_ranges(template, messages, full).ok_or_else(|| {
                MaskError::new(
                    SkipReason::SpecialTokenInContent,
                    "a message holds the text of a special token, and the template does not \
                 reproduce message content verbatim, so that text cannot be encoded apart \
                 from the template's markers",
                )
            })?;
        let whole = encode(tokenizer, full)?;
        let mut out = Encoded {
            ids: Vec::with_capacity(whole.ids.len()),
            offsets: Vec::with_capacity(whole.ids.len()),
            apart: true,
        };
        let mut from = 0;
        for (&id, &(start, end)) in whole.ids.iter().zip(&whole.offsets) {
            if !self.is_special(id) {
                continue;
            }
            let core = self.core(id, full, start, end);
            match content
                .iter()
                .find(|c| c.start < core.end && core.start < c.end)
            {
                // In content: left in the text, encoded as ordinary tokens below.
                Some(c) if c.start <= core.start && core.end <= c.end => continue,
                Some(_) => {
                    return Err(MaskError::new(
                        SkipReason::SpecialTokenInContent,
                        format!(
                            "special token {:?} (bytes {start}..{end}) straddles message \
                             content and template text",
                            &full[core.clone()]
                        ),
                    ))
                }
                None => {}
            }
            self.push_plain(full, from, start, &content, &mut out)?;
            out.ids.push(id);
            out.offsets.push((start, end));
            from = end;
        }
        self.push_plain(full, from, full.len(), &content, &mut out)?;
        Ok(out)
    }

    /// Appends the tokens of `full[from..to]` (no special token of the template in it)
    /// with special-token matching off.
    fn push_plain(
        &self,
        full: &str,
        from: usize,
        to: usize,
        content: &[Range<usize>],
        out: &mut Encoded,
    ) -> Result<(), MaskError> {
        if from >= to {
            return Ok(());
        }
        let enc = encode(&self.plain, &full[from..to])?;
        for (&id, &(s, e)) in enc.ids.iter().zip(&enc.offsets) {
            let (s, e) = (s + from, e + from);
            if self.is_special(id) {
                let at = content.iter().position(|c| c.start < e && s < c.end);
                return Err(MaskError::new(
                    SkipReason::SpecialTokenInContent,
                    format!(
                        "{:?} (bytes {s}..{e}{}) encodes to special token {id} even with \
                         special-token matching off",
                        &full[s..e],
                        at.map(|_| ", in message content").unwrap_or_default()
                    ),
                ));
            }
            out.ids.push(id);
            out.offsets.push((s, e));
        }
        Ok(())
    }
}

/// The error of a record whose message `index` holds the text of special token `text`.
pub(super) fn in_content(index: usize, text: &str) -> MaskError {
    MaskError::new(
        SkipReason::SpecialTokenInContent,
        format!(
            "messages[{index}].content contains the text {text:?} of a special token: the \
             tokenizer would read it as that token (an end-of-turn inside a reply, or a \
             forged turn), not as text"
        ),
    )
}

/// Tokenizes `text` without adding anything.
pub(super) fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Encoded, MaskError> {
    let enc = tokenizer
        .encode(text, false)
        .map_err(|e| MaskError::new(SkipReason::TemplateError, format!("tokenizer: {e}")))?;
    Ok(Encoded {
        ids: enc.get_ids().to_vec(),
        offsets: enc.get_offsets().to_vec(),
        apart: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &v in SpecialText::ALL {
            assert_eq!(v.to_string().parse::<SpecialText>(), Ok(v));
        }
        assert_eq!(SpecialText::default(), SpecialText::Refuse);
    }
}
