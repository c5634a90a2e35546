//! A memory budget for one render of an untrusted chat template.
//!
//! minijinja bounds a template's steps (fuel) and its string repetition, but not the
//! size of the values it builds: `{% set ns.s = ns.s ~ ns.s %}` in a loop doubles a
//! string each step, and 40 steps exhaust any machine. The engine cannot be asked to stop
//! there, so the budget is kept by the allocator: a program that installs one (the
//! `gatt` binary does) calls [`charge`] for every allocation, and while a render is
//! under way on that thread, allocations past [`RENDER_BUDGET_BYTES`] end the process
//! with exit status 2 and a message naming the template, instead of an abort when
//! memory runs out. Without such an allocator (tests, other programs) nothing is
//! counted.

use std::cell::{Cell, RefCell};

/// Bytes one render may allocate in all (counted as requested, frees not subtracted):
/// 512 MiB, hundreds of times what rendering a long conversation takes.
pub const RENDER_BUDGET_BYTES: usize = 512 << 20;

thread_local! {
    /// Bytes the render under way on this thread may still allocate; `None` outside a
    /// render.
    static LEFT: Cell<Option<usize>> = const { Cell::new(None) };
    /// The template being rendered, for the message.
    static ORIGIN: RefCell<String> = const { RefCell::new(String::new()) };
    /// The id of the record being rendered, if a caller said ([`record_scope`]).
    static RECORD: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Names the record whose renders follow on this thread, until the guard is dropped, so
/// that [`exceeded_message`] says which record was being rendered.
pub fn record_scope(id: &str) -> RecordScope {
    let _ = RECORD.try_with(|r| {
        if let Ok(mut r) = r.try_borrow_mut() {
            r.clear();
            r.push_str(id);
        }
    });
    RecordScope(())
}

/// Guard of [`record_scope`].
pub struct RecordScope(());

impl Drop for RecordScope {
    fn drop(&mut self) {
        let _ = RECORD.try_with(|r| r.try_borrow_mut().map(|mut r| r.clear()));
    }
}

/// Counts an allocation of `bytes` against the render under way on this thread, if
/// any. Returns the template's origin when the budget is exceeded (the render is then
/// no longer counted); the allocator should end the process with
/// [`exceeded_message`].
pub fn charge(bytes: usize) -> Option<String> {
    let over = LEFT
        .try_with(|left| match left.get() {
            Some(n) if bytes > n => {
                left.set(None);
                true
            }
            Some(n) => {
                left.set(Some(n - bytes));
                false
            }
            None => false,
        })
        .unwrap_or(false);
    over.then(|| {
        ORIGIN
            .try_with(|o| o.try_borrow().map(|o| o.clone()).unwrap_or_default())
            .unwrap_or_default()
    })
}

/// What the allocator prints before it ends the process: the template and, when a
/// caller named it ([`record_scope`]), the record.
pub fn exceeded_message(origin: &str) -> String {
    let record = RECORD
        .try_with(|r| r.try_borrow().map(|r| r.clone()).unwrap_or_default())
        .unwrap_or_default();
    let what = if record.is_empty() {
        "rendering it".to_string()
    } else {
        format!("rendering record `{record}` with it")
    };
    format!(
        "gatt: error: chat template {origin}: {what} allocated more than {} MiB; a chat \
         template never needs that much, so it is refused\n",
        RENDER_BUDGET_BYTES >> 20
    )
}

/// Counts this thread's allocations against the budget until dropped.
pub(super) struct Budget(());

impl Budget {
    /// Starts counting for a render of the template from `origin`.
    pub(super) fn start(origin: &str) -> Budget {
        let _ = ORIGIN.try_with(|o| {
            if let Ok(mut o) = o.try_borrow_mut() {
                o.clear();
                o.push_str(origin);
            }
        });
        let _ = LEFT.try_with(|l| l.set(Some(RENDER_BUDGET_BYTES)));
        Budget(())
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        let _ = LEFT.try_with(|l| l.set(None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allocations_during_a_render_are_counted() {
        assert_eq!(charge(usize::MAX), None, "no render under way");
        {
            let _b = Budget::start("hostile.jinja");
            assert_eq!(charge(RENDER_BUDGET_BYTES - 10), None);
            assert_eq!(charge(11).as_deref(), Some("hostile.jinja"));
            // Once exceeded, nothing more is counted (the allocator ends the process).
            assert_eq!(charge(usize::MAX), None);
        }
        let _b = Budget::start("next.jinja");
        assert_eq!(charge(RENDER_BUDGET_BYTES), None);
        drop(_b);
        assert_eq!(charge(usize::MAX), None);
        assert!(exceeded_message("x.jinja").contains("chat template x.jinja"));
        {
            let _r = record_scope("row-7");
            assert!(exceeded_message("x.jinja").contains("record `row-7`"));
        }
        assert!(!exceeded_message("x.jinja").contains("record"));
    }
}
