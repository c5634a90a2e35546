//! Python's `None` as Jinja2 sees it, where minijinja's `none` differs.
//!
//! In minijinja `none is iterable` is true and `{% for x in none %}` loops zero times; in
//! Jinja2 (so in `transformers`) `None is iterable` is false and looping over it raises
//! `TypeError: 'NoneType' object is not iterable`. minijinja offers no option for this
//! (its undefined behaviours cover undefined values, not `none`), so:
//!
//! * the `iterable` test is replaced by one that is false for `none`;
//! * the `none` values gatt puts into the context (`tools`, `documents`, template
//!   arguments that are JSON `null`) are [`PyNone`]: an object that is `none` to the
//!   `none` test, false in conditions, prints `None`, writes `null` with `tojson`, and
//!   cannot be iterated (nor measured with `length`), as in Python.
//!
//! `x == none` is false for a [`PyNone`] (no chat template of llama.cpp's collection
//! compares `tools` or `documents` that way; they use `is none`).

use minijinja::value::{Enumerator, Object, ObjectRepr};
use minijinja::Value;
use std::sync::Arc;

/// Python's `None` (see the module documentation).
#[derive(Debug)]
pub struct PyNone;

impl Object for PyNone {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::NonEnumerable
    }

    fn is_true(self: &Arc<Self>) -> bool {
        false
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("None")
    }
}

/// A [`PyNone`] value.
pub fn none() -> Value {
    Value::from_object(PyNone)
}

/// Whether `v` is `none` (minijinja's or a [`PyNone`]).
pub fn is_none(v: &Value) -> bool {
    v.is_none() || v.downcast_object_ref::<PyNone>().is_some()
}

/// The `none` test: true for minijinja's `none` and for [`PyNone`].
pub fn test_none(v: &Value) -> bool {
    is_none(v)
}

/// The `iterable` test as Jinja2 has it: false for `none`.
pub fn test_iterable(v: &Value) -> bool {
    !is_none(v) && v.try_iter().is_ok()
}

/// A template argument's JSON value in the context, with `null` as [`PyNone`].
pub fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => none(),
        other => Value::from_serialize(other),
    }
}

/// Jinja2's `select`, `reject`, `selectattr`, `rejectattr` and `map` yield nothing for a
/// false value (`None`, `[]`, `""`) without iterating it (`if value:` in
/// `jinja2.filters.select_or_reject` and `sync_do_map`); minijinja's iterate it, so
/// `tools | selectattr("type", "equalto", "code_interpreter")` fails on `tools = None`
/// where `transformers` renders (functionary's templates). These wrap minijinja's.
pub mod filters {
    use minijinja::value::Rest;
    use minijinja::{Error, State, Value};
    use std::borrow::Cow;

    /// `select` (see the module documentation).
    pub fn select(
        state: &State,
        value: Value,
        test: Option<Cow<'_, str>>,
        args: Rest<Value>,
    ) -> Result<Vec<Value>, Error> {
        if !value.is_true() {
            return Ok(Vec::new());
        }
        minijinja::filters::select(state, value, test, args)
    }

    /// `reject` (see the module documentation).
    pub fn reject(
        state: &State,
        value: Value,
        test: Option<Cow<'_, str>>,
        args: Rest<Value>,
    ) -> Result<Vec<Value>, Error> {
        if !value.is_true() {
            return Ok(Vec::new());
        }
        minijinja::filters::reject(state, value, test, args)
    }

    /// `selectattr` (see the module documentation).
    pub fn selectattr(
        state: &State,
        value: Value,
        attr: Cow<'_, str>,
        test: Option<Cow<'_, str>>,
        args: Rest<Value>,
    ) -> Result<Vec<Value>, Error> {
        if !value.is_true() {
            return Ok(Vec::new());
        }
        minijinja::filters::selectattr(state, value, attr, test, args)
    }

    /// `rejectattr` (see the module documentation).
    pub fn rejectattr(
        state: &State,
        value: Value,
        attr: Cow<'_, str>,
        test: Option<Cow<'_, str>>,
        args: Rest<Value>,
    ) -> Result<Vec<Value>, Error> {
        if !value.is_true() {
            return Ok(Vec::new());
        }
        minijinja::filters::rejectattr(state, value, attr, test, args)
    }

    /// `map` (see the module documentation).
    pub fn map(state: &State, value: Value, args: Rest<Value>) -> Result<Vec<Value>, Error> {
        if !value.is_true() {
            return Ok(Vec::new());
        }
        minijinja::filters::map(state, value, args)
    }
}
