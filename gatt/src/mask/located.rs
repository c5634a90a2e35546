//! Where each message of a dialogue lies in its rendered, tokenized conversation: the
//! token spans that attention analyses (`gatt attention`) read, found the way the masker
//! finds replies (by rendering the conversation up to each message), exact or refused.

use super::{align, special, MaskError, Masker, SkipReason, SpecialText};
use crate::dialogue::Message;
use std::ops::Range;

/// One message in the rendered conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagePlace {
    /// Bytes of the message as rendered, template text included: from the end of the
    /// rendering of the messages before it to the end of the rendering that ends with it.
    pub bytes: Range<usize>,
    /// Bytes of its content.
    pub content: Range<usize>,
    /// Tokens that start within `bytes`.
    pub tokens: Range<usize>,
    /// The tokens that exactly cover `content`.
    pub content_tokens: Range<usize>,
}

/// A conversation rendered with the chat template (no generation prompt) and tokenized
/// once, with the place of every message.
#[derive(Debug, Clone)]
pub struct Located {
    /// The rendered text.
    pub text: String,
    /// Its tokens.
    pub ids: Vec<u32>,
    /// Byte range of each token in `text`.
    pub offsets: Vec<(usize, usize)>,
    /// One entry per message, in order.
    pub messages: Vec<MessagePlace>,
}

impl Masker {
    /// Renders `messages` and finds every message in the text and the tokens.
    ///
    /// Message `i` is looked for in the text that rendering `messages[..=i]` adds to the
    /// rendering of `messages[..i]`; both must be prefixes of the whole conversation's
    /// rendering, and the content must occur there exactly once, verbatim.
    ///
    /// # Errors
    ///
    /// A [`MaskError`]: the template fails, rewrites earlier turns
    /// ([`SkipReason::TemplateRewritesHistory`]), changes a message's text or makes
    /// it ambiguous ([`SkipReason::TemplateAltersReply`]), merges a content token with
    /// template text ([`SkipReason::SeamMerge`]), or a content holds a special token's
    /// text ([`SkipReason::SpecialTokenInContent`], unless the options encode it).
    pub fn locate(&self, messages: &[Message]) -> Result<Located, MaskError> {
        let found = self.specials.find(messages);
        if let Some((i, text)) = found {
            if self.opts.special_text == SpecialText::Refuse {
                return Err(special::in_content(i, text));
            }
        }
        let full = self.render(messages, false)?;
        let enc = match found {
            None => special::encode(&self.tokenizer, &full)?,
            Some(_) => {
                self.specials
                    .encode_apart(&self.tokenizer, &self.template, messages, &full)?
            }
        };
        let mut places = Vec::with_capacity(messages.len());
        let mut before = 0;
        for (i, m) in messages.iter().enumerate() {
            let upto = if i + 1 == messages.len() {
                full.clone()
            } else {
                self.render(&messages[..=i], false)?
            };
            if !full.starts_with(&upto) || upto.len() < before {
                return Err(MaskError::new(
                    SkipReason::TemplateRewritesHistory,
                    format!(
                        "messages[{i}]: the conversation rendered up to this message is not \
                         a prefix of the whole rendered conversation: the template renders \
                         earlier turns differently once later turns follow"
                    ),
                ));
            }
            let block = &full[before..upto.len()];
            let hits: Vec<usize> = (0..block.len())
                .filter(|&p| block.is_char_boundary(p) && block[p..].starts_with(&m.content))
                .collect();
            let at = match hits.as_slice() {
                [at] => before + at,
                [] => {
                    return Err(MaskError::new(
                        SkipReason::TemplateAltersReply,
                        format!(
                            "messages[{i}]: its content is not in its rendering verbatim (the \
                             template changes it)"
                        ),
                    ))
                }
                _ => {
                    return Err(MaskError::new(
                        SkipReason::TemplateAltersReply,
                        format!(
                            "messages[{i}]: its content occurs {} times in its rendering \
                             (template text holds it too), so its place is ambiguous",
                            hits.len()
                        ),
                    ))
                }
            };
            let content = at..at + m.content.len();
            let content_tokens = align::token_span(
                &enc.offsets,
                (&full, &enc.ids, &self.specials.ids),
                content.start,
                content.end,
                i,
            )?;
            let first = enc.offsets.partition_point(|o| o.0 < before);
            let last = enc.offsets.partition_point(|o| o.0 < upto.len());
            places.push(MessagePlace {
                bytes: before..upto.len(),
                content,
                tokens: first..last,
                content_tokens,
            });
            before = upto.len();
        }
        Ok(Located {
            text: full,
            ids: enc.ids,
            offsets: enc.offsets,
            messages: places,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::MaskOptions;

    fn masker() -> Masker {
        crate::mask::tests::smollm2(MaskOptions::default())
    }

    #[test]
    fn every_message_is_found_in_text_and_tokens() {
        let m = masker();
        let messages = vec![
            Message::system("Always answer in French."),
            Message::user("Hi there"),
            Message::assistant("Bonjour !"),
            Message::user("What is your name?"),
            Message::assistant("Je m'appelle Claude."),
        ];
        let l = m.locate(&messages).unwrap();
        assert_eq!(l.messages.len(), messages.len());
        let mut end = 0;
        for (place, msg) in l.messages.iter().zip(&messages) {
            assert_eq!(&l.text[place.content.clone()], msg.content);
            assert_eq!(place.bytes.start, end);
            end = place.bytes.end;
            let t = &place.content_tokens;
            assert_eq!(
                (l.offsets[t.start].0, l.offsets[t.end - 1].1),
                (place.content.start, place.content.end)
            );
            assert!(place.tokens.start <= t.start && t.end <= place.tokens.end);
        }
        assert_eq!(end, l.text.len());
        assert_eq!(l.messages.last().unwrap().tokens.end, l.ids.len());
    }

    #[test]
    fn content_that_template_text_also_holds_is_ambiguous() {
        // "user" is in the ChatML header of its own message.
        let e = masker()
            .locate(&[Message::user("user"), Message::assistant("ok")])
            .unwrap_err();
        assert_eq!(e.reason, SkipReason::TemplateAltersReply);
        assert!(
            e.detail.contains("messages[0]") && e.detail.contains("2 times"),
            "{e}"
        );
    }
}
