//! Where each message's content lies in a rendered conversation.

use crate::dialogue::Message;
use crate::template::ChatTemplate;
use std::ops::Range;

/// Byte ranges of every message content in `full`, the rendering of `messages`; `None`
/// when the template does not reproduce the contents verbatim.
///
/// The messages are rendered again with each content replaced by a marker of its own;
/// the text around the markers is the template's, and `full` must be exactly that text
/// with the contents in place of the markers.
pub(super) fn content_ranges(
    template: &ChatTemplate,
    messages: &[Message],
    full: &str,
) -> Option<Vec<Range<usize>>> {
    let marked: Vec<Message> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| Message::new(m.role, marker(i)))
        .collect();
    let skeleton = template.render(&marked, false).ok()?;
    let mut ranges = Vec::new();
    let (mut at, mut rest) = (0, skeleton.as_str());
    while let Some(open) = rest.find(MARK_OPEN) {
        let (text, after) = rest.split_at(open);
        let after = &after[MARK_OPEN.len_utf8()..];
        let close = after.find(MARK_CLOSE)?;
        let i: usize = after[..close].parse().ok()?;
        let content = &messages.get(i)?.content;
        at = expect(full, at, text)?;
        let end = expect(full, at, content)?;
        ranges.push(at..end);
        at = end;
        rest = &after[close + MARK_CLOSE.len_utf8()..];
    }
    at = expect(full, at, rest)?;
    (at == full.len()).then_some(ranges)
}

/// Opens and closes the marker of a message in [`content_ranges`] (private-use code
/// points, which templates do not write).
const MARK_OPEN: char = '\u{F8F0}';
const MARK_CLOSE: char = '\u{F8F1}';

fn marker(i: usize) -> String {
    format!("{MARK_OPEN}{i}{MARK_CLOSE}")
}

/// Where `text` ends if `full` continues with it at `at`.
fn expect(full: &str, at: usize, text: &str) -> Option<usize> {
    full[at..].starts_with(text).then_some(at + text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chatml() -> ChatTemplate {
        ChatTemplate::builtin("chatml").unwrap()
    }

    #[test]
    fn content_ranges_cover_each_message_verbatim() {
        let msgs = vec![
            Message::user("Hi <|im_end|> there"),
            Message::assistant("Hello!"),
        ];
        let t = chatml();
        let full = t.render(&msgs, false).unwrap();
        let r = content_ranges(&t, &msgs, &full).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(&full[r[0].clone()], "Hi <|im_end|> there");
        assert_eq!(&full[r[1].clone()], "Hello!");
    }

    #[test]
    fn content_ranges_are_none_when_the_template_rewrites_content() {
        let t = ChatTemplate::new(
            "upper",
            "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | upper }}<|im_end|>\n{% endfor %}",
            "",
            "",
            vec![],
        )
        .unwrap();
        let msgs = vec![Message::user("hi"), Message::assistant("ok")];
        let full = t.render(&msgs, false).unwrap();
        assert_eq!(content_ranges(&t, &msgs, &full), None);
    }
}
