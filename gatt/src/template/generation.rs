//! `{% generation %}` ... `{% endgeneration %}` blocks (transformers' extension, used by
//! TRL's training templates and some model templates) mark the text the assistant
//! writes. minijinja cannot add tags, so the source is rewritten before it is compiled:
//! each tag becomes an empty `{% if %}` block whose condition calls a function that notes
//! the output's length at that point. The body renders as it is; whitespace control
//! (`{%-`, `-%}`, `trim_blocks`, `lstrip_blocks`) acts as it does on the original tags.
//!
//! The byte ranges are known only for text written straight to the output (not inside
//! `{% set %}` captures, macros or filter blocks); a range noted elsewhere is wrong, which
//! the masker's check then refuses rather than trusts.

use std::cell::RefCell;
use std::ops::Range;

/// The function the rewritten tags call.
pub const MARK_FUNCTION: &str = "__gatt_generation_mark";

/// A mark: whether it opens a block, and the output length where it was noted.
type Mark = (bool, usize);

thread_local! {
    /// Bytes written so far by the render in progress on this thread, and the marks
    /// noted at those lengths.
    static STATE: RefCell<Option<(usize, Vec<Mark>)>> = const { RefCell::new(None) };
}

/// `source` with its generation tags rewritten, or `None` when it has none.
pub fn rewrite(source: &str) -> Option<String> {
    let mut out = String::with_capacity(source.len() + 64);
    let mut rest = source;
    let mut found = false;
    while let Some(at) = rest.find("{%") {
        out.push_str(&rest[..at]);
        let tag = &rest[at..];
        match parse_tag(tag) {
            Some((len, left, start, right)) => {
                found = true;
                out.push_str(&format!(
                    "{{%{left} if {MARK_FUNCTION}({start}) %}}{{% endif {right}%}}"
                ));
                rest = &tag[len..];
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    found.then_some(out)
}

/// `{%[-+] generation|endgeneration [-+]%}` at the start of `tag`: its length, left and
/// right whitespace control, and whether it opens a block.
fn parse_tag(tag: &str) -> Option<(usize, &str, bool, &str)> {
    let body = &tag[2..];
    let (left, body) = match body.chars().next()? {
        c @ ('-' | '+') => (&tag[2..2 + c.len_utf8()], &body[1..]),
        _ => ("", body),
    };
    let trimmed = body.trim_start();
    let (start, after) = if let Some(a) = trimmed.strip_prefix("endgeneration") {
        (false, a)
    } else if let Some(a) = trimmed.strip_prefix("generation") {
        (true, a)
    } else {
        return None;
    };
    let after_ws = after.trim_start();
    if after_ws.len() == after.len() && !after.starts_with(['-', '+', '%']) {
        return None; // `generations`, `generation_prompt`, ...
    }
    let (right, end) = match after_ws.chars().next()? {
        c @ ('-' | '+') => (&after_ws[..1], &after_ws[c.len_utf8()..]),
        _ => ("", after_ws),
    };
    let rest = end.strip_prefix("%}")?;
    Some((tag.len() - rest.len(), left, start, right))
}

/// Called by the rewritten tags: notes the output length; always true.
pub fn mark(start: bool) -> bool {
    STATE.with(|s| {
        if let Some((len, marks)) = s.borrow_mut().as_mut() {
            marks.push((start, *len));
        }
    });
    true
}

/// The writer a render with generation marks writes to: counts what it is given.
#[derive(Default)]
pub struct Counting(pub Vec<u8>);

impl std::io::Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        STATE.with(|s| {
            if let Some((len, _)) = s.borrow_mut().as_mut() {
                *len += buf.len();
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `render` with marks noted on this thread; returns its result and the marks.
pub fn with_marks<T>(render: impl FnOnce() -> T) -> (T, Vec<(bool, usize)>) {
    STATE.with(|s| *s.borrow_mut() = Some((0, Vec::new())));
    let out = render();
    let marks = STATE
        .with(|s| s.borrow_mut().take())
        .map(|(_, m)| m)
        .unwrap_or_default();
    (out, marks)
}

/// The ranges the marks enclose, in order; `None` when they do not pair up (a block
/// opened inside another, or not closed).
pub fn ranges(marks: &[(bool, usize)]) -> Option<Vec<Range<usize>>> {
    let mut out = Vec::new();
    let mut open = None;
    for &(start, at) in marks {
        match (start, open) {
            (true, None) => open = Some(at),
            (false, Some(s)) => {
                out.push(s..at);
                open = None;
            }
            _ => return None,
        }
    }
    open.is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_rewritten_with_their_whitespace_control() {
        assert_eq!(rewrite("{{ x }}"), None);
        assert_eq!(rewrite("{% if generation_prompt %}{% endif %}"), None);
        let r = rewrite("a{%- generation -%}b{% endgeneration %}c").unwrap();
        assert_eq!(
            r,
            format!(
                "a{{%- if {MARK_FUNCTION}(true) %}}{{% endif -%}}b{{% if {MARK_FUNCTION}(false) %}}{{% endif %}}c"
            )
        );
    }

    #[test]
    fn marks_pair_into_ranges() {
        assert_eq!(
            ranges(&[(true, 1), (false, 3), (true, 5), (false, 9)]),
            Some(vec![1..3, 5..9])
        );
        assert_eq!(ranges(&[(true, 1)]), None);
        assert_eq!(ranges(&[(true, 1), (true, 2)]), None);
    }
}
