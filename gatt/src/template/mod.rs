//! Chat templates: the model's own Jinja template, rendered as Hugging Face renders it.
//!
//! Templates are untrusted input (they ship inside model files): the environment has no
//! loader (no file access), a fuel limit bounds execution, and errors name the template.

mod builtin;
mod generation;
pub mod memory;
mod pyjson;
mod pynone;

use crate::dialogue::Message;
use crate::error::{Error, Result};
use minijinja::{Environment, ErrorKind, Value};

pub use builtin::{builtin_names, builtins, Builtin};

/// Upper bound on template instructions per render: far above what a real template
/// needs for a long conversation, low enough that a runaway loop fails in well under
/// a second.
const FUEL: u64 = 20_000_000;

/// A compiled chat template with the special tokens it refers to.
///
/// Rendered as `transformers`' `apply_chat_template(..., tokenize=False)` renders it:
/// Jinja with `trim_blocks` and `lstrip_blocks`, the variables `messages`,
/// `add_generation_prompt`, `bos_token`, `eos_token` (and `tools`, `documents` as none),
/// Python string methods, `raise_exception`, `strftime_now` and a `tojson` that writes
/// what Python's `json.dumps` writes. The golden tests compare the built-in templates
/// with `transformers` byte for byte.
pub struct ChatTemplate {
    /// Where the template came from, for error messages (`builtin:chatml`, a path, ...).
    pub origin: String,
    /// The Jinja source, as compiled.
    pub source: String,
    /// What the template's `bos_token` variable holds (may be empty).
    pub bos_token: String,
    /// What the template's `eos_token` variable holds (may be empty).
    pub eos_token: String,
    /// Markers that close an assistant reply (e.g. `<|im_end|>`); the loss of a reply
    /// covers its content and the first of these that follows it.
    pub end_of_turn: Vec<String>,
    /// Whether the source has `{% generation %}` blocks (see
    /// [`ChatTemplate::render_generation`]).
    has_generation: bool,
    /// Extra variables of the template context, as keyword arguments of `transformers`'
    /// `apply_chat_template(**kwargs)` (e.g. `enable_thinking = false` for Qwen3); see
    /// [`ChatTemplate::set_args`].
    args: TemplateArgs,
    env: Environment<'static>,
}

/// Keyword arguments of a chat template, by name (JSON values).
pub type TemplateArgs = std::collections::BTreeMap<String, serde_json::Value>;

/// The context variables gatt sets itself; a template argument cannot replace them.
const RESERVED_ARGS: [&str; 4] = ["messages", "add_generation_prompt", "tools", "documents"];

/// Parses `KEY=VALUE` (the `--template-arg` form): the value as JSON (`false`, `3`,
/// `"text"`, `[1, 2]`), or as a plain string when it is not JSON (`name=Bob`).
///
/// # Errors
///
/// A message when there is no `=`, the key is empty or not a variable name (letters,
/// digits and `_`, not starting with a digit), or the key is one gatt sets itself
/// (`messages`, `add_generation_prompt`, `tools`, `documents`).
pub fn parse_template_arg(text: &str) -> std::result::Result<(String, serde_json::Value), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected KEY=VALUE (e.g. enable_thinking=false)"))?;
    let key = key.trim();
    let is_name = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !is_name {
        return Err(format!(
            "`{text}`: `{key}` is not a template variable name (letters, digits, _)"
        ));
    }
    if RESERVED_ARGS.contains(&key) {
        return Err(format!(
            "`{text}`: `{key}` is set by gatt itself ({} are)",
            RESERVED_ARGS.join(", ")
        ));
    }
    let value = serde_json::from_str(value)
        .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
    Ok((key.to_string(), value))
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("end_of_turn", &self.end_of_turn)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is reported with the template's origin and line.
    /// Empty `end_of_turn` markers are dropped.
    ///
    /// # Errors
    ///
    /// An input error when `source` is not a valid template.
    pub fn new(
        origin: impl Into<String>,
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
        end_of_turn: Vec<String>,
    ) -> Result<Self> {
        let origin = origin.into();
        let source = source.into();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(100);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", pyjson::tojson);
        env.add_test("none", pynone::test_none);
        env.add_test("iterable", pynone::test_iterable);
        env.add_filter("select", pynone::filters::select);
        env.add_filter("reject", pynone::filters::reject);
        env.add_filter("selectattr", pynone::filters::selectattr);
        env.add_filter("rejectattr", pynone::filters::rejectattr);
        env.add_filter("map", pynone::filters::map);
        env.add_function(generation::MARK_FUNCTION, generation::mark);
        let rewritten = generation::rewrite(&source);
        let has_generation = rewritten.is_some();
        env.add_template_owned("chat", rewritten.unwrap_or_else(|| source.clone()))
            .map_err(|e| Error::input(format!("chat template {origin}: {}", describe(&e))))?;
        let mut end_of_turn = end_of_turn;
        end_of_turn.retain(|m| !m.is_empty());
        Ok(ChatTemplate {
            origin,
            source,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            end_of_turn,
            has_generation,
            args: TemplateArgs::new(),
            env,
        })
    }

    /// One of the templates shipped in `templates/chat/` (see [`builtin_names`]), with its
    /// family's BOS, EOS and end-of-turn marker.
    ///
    /// # Errors
    ///
    /// An input error for an unknown name, listing the built-in ones.
    pub fn builtin(name: &str) -> Result<Self> {
        let b = builtins().iter().find(|b| b.name == name).ok_or_else(|| {
            Error::input(format!(
                "unknown chat template `{name}`; built-in templates are: {}. \
                 Pass a path to a .jinja file or a tokenizer_config.json to use another one",
                builtin_names().join(", ")
            ))
        })?;
        ChatTemplate::new(
            format!("builtin:{}", b.name),
            b.source,
            b.bos_token.as_str(),
            b.eos_token.as_str(),
            vec![b.end_of_turn.clone()],
        )
    }

    /// Fixes the day `strftime_now` prints (days since 1970-01-01, UTC) instead of today's:
    /// for renderings compared with references made on a known day.
    pub fn set_today(&mut self, days_since_epoch: u64) {
        self.env.add_function("strftime_now", move |fmt: String| {
            format_date(days_since_epoch, &fmt)
        });
    }

    /// Sets the template's keyword arguments (replacing earlier ones): each is a variable
    /// of the context, as `apply_chat_template(**kwargs)` passes them; `bos_token` and
    /// `eos_token` may be given to override the tokens.
    ///
    /// # Errors
    ///
    /// An input error for a name gatt sets itself (`messages`, `add_generation_prompt`,
    /// `tools`, `documents`).
    pub fn set_args(&mut self, args: TemplateArgs) -> Result<()> {
        if let Some(k) = args.keys().find(|k| RESERVED_ARGS.contains(&k.as_str())) {
            return Err(Error::input(format!(
                "template argument `{k}` is set by gatt itself ({} are)",
                RESERVED_ARGS.join(", ")
            )));
        }
        self.args = args;
        Ok(())
    }

    /// The template's keyword arguments ([`ChatTemplate::set_args`]).
    pub fn args(&self) -> &TemplateArgs {
        &self.args
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the model
    /// starts writing its reply.
    ///
    /// # Errors
    ///
    /// An input error naming the template when it calls `raise_exception` (many refuse
    /// role orders or system messages they do not support), fails at run time, or runs
    /// out of fuel (an endless loop).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        if self.has_generation {
            return Ok(self.render_generation(messages, add_generation_prompt)?.0);
        }
        let tmpl = self.env.get_template("chat").expect("compiled in new()");
        self.render_capped(&tmpl, self.context(messages, add_generation_prompt))
    }

    /// Renders `tmpl` with `ctx` under the limits on untrusted templates: the rendered
    /// text at most [`MAX_RENDERED_BYTES`], everything the render allocates within
    /// [`memory::RENDER_BUDGET_BYTES`] (where the program's allocator keeps it).
    fn render_capped(&self, tmpl: &minijinja::Template<'_, '_>, ctx: Value) -> Result<String> {
        let _budget = memory::Budget::start(&self.origin);
        let mut out = CappedText::default();
        match tmpl.render_captured_to(ctx, &mut out) {
            Ok(_) => Ok(out.text),
            Err(_) if out.over => Err(Error::input(format!(
                "chat template {}: the rendered conversation grew past {} MiB (millions of \
                 tokens, beyond any model's context): the template writes too much, or the \
                 record is far too long; it is refused before tokenizing it exhausts memory",
                self.origin,
                MAX_RENDERED_BYTES >> 20
            ))),
            Err(e) => Err(self.error(&e)),
        }
    }

    /// Whether the template marks the assistant's text with `{% generation %}` ...
    /// `{% endgeneration %}` blocks.
    pub fn has_generation(&self) -> bool {
        self.has_generation
    }

    /// Renders as [`ChatTemplate::render`] does, with the byte ranges of the rendered
    /// text that `{% generation %}` blocks enclose, in order: `None` when the template
    /// has no such blocks.
    ///
    /// # Errors
    ///
    /// As [`ChatTemplate::render`]; also an input error when the blocks do not pair up
    /// (one opened inside another).
    pub fn render_generation(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<(String, Option<Vec<std::ops::Range<usize>>>)> {
        let tmpl = self.env.get_template("chat").expect("compiled in new()");
        if !self.has_generation {
            let text = self.render_capped(&tmpl, self.context(messages, add_generation_prompt))?;
            return Ok((text, None));
        }
        let _budget = memory::Budget::start(&self.origin);
        let mut out = generation::Counting::default();
        let (result, marks) = generation::with_marks(|| {
            tmpl.render_captured_to(self.context(messages, add_generation_prompt), &mut out)
                .map(|_| ())
        });
        result.map_err(|e| self.error(&e))?;
        let text = String::from_utf8(out.0)
            .map_err(|e| Error::input(format!("chat template {}: {e}", self.origin)))?;
        let ranges = generation::ranges(&marks).ok_or_else(|| {
            Error::input(format!(
                "chat template {}: its {{% generation %}} blocks do not pair up",
                self.origin
            ))
        })?;
        Ok((text, Some(ranges)))
    }

    fn error(&self, e: &minijinja::Error) -> Error {
        Error::input(format!("chat template {}: {}", self.origin, describe(e)))
    }

    fn context(&self, messages: &[Message], add_generation_prompt: bool) -> Value {
        let mut vars: std::collections::BTreeMap<&str, Value> = std::collections::BTreeMap::new();
        vars.insert("bos_token", Value::from(self.bos_token.as_str()));
        vars.insert("eos_token", Value::from(self.eos_token.as_str()));
        for (k, v) in &self.args {
            vars.insert(k.as_str(), pynone::from_json(v));
        }
        vars.insert("messages", Value::from_serialize(messages));
        vars.insert("add_generation_prompt", Value::from(add_generation_prompt));
        // Python's None, as transformers passes them: not iterable.
        vars.insert("tools", pynone::none());
        vars.insert("documents", pynone::none());
        Value::from_iter(vars)
    }
}

/// Upper bound on a rendered conversation, in bytes: 8 MiB, some 2 million tokens, beyond
/// any model's context (the runtime allows 2^20). A template or record that renders more
/// is refused before it, or tokenizing it (about 100 bytes of memory per byte of text),
/// can exhaust memory. (Values a template builds without writing them
/// are bounded by [`memory::RENDER_BUDGET_BYTES`], where the program's allocator keeps
/// that budget.)
pub const MAX_RENDERED_BYTES: usize = 8 << 20;

/// The rendered text, refusing to grow past [`MAX_RENDERED_BYTES`].
#[derive(Default)]
struct CappedText {
    text: String,
    /// Set when a write was refused for size.
    over: bool,
}

impl std::io::Write for CappedText {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > MAX_RENDERED_BYTES {
            self.over = true;
            return Err(std::io::Error::other("rendered text too long"));
        }
        // minijinja writes whole UTF-8 strings, never split characters.
        let piece = std::str::from_utf8(buf).map_err(std::io::Error::other)?;
        self.text.push_str(piece);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn describe(e: &minijinja::Error) -> String {
    let mut s = match e.kind() {
        ErrorKind::OutOfFuel => "the template ran too long (endless loop?)".to_string(),
        _ => e.to_string(),
    };
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("the template refused the conversation: {msg}"),
    ))
}

/// `strftime_now(fmt)` as Hugging Face provides it (Llama 3.1+ templates print the date):
/// today's date (UTC), or the day of `SOURCE_DATE_EPOCH` (seconds since 1970, the
/// reproducible-builds convention) when that is set, so that data rendered on different
/// days can be made byte for byte the same.
///
/// # Errors
///
/// When `SOURCE_DATE_EPOCH` is set but not a whole number of seconds (a render error
/// that names it, rather than a silent fall-back to today).
fn strftime_now(fmt: String) -> std::result::Result<String, minijinja::Error> {
    let secs = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) => text.trim().parse::<u64>().map_err(|_| {
            minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "strftime_now: SOURCE_DATE_EPOCH={text:?} is not a whole number of seconds since 1970"
                ),
            )
        })?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    Ok(format_date(secs / 86_400, &fmt))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Formats days since 1970-01-01 with the strftime codes templates use (%d %m %Y %b %B).
fn format_date(days: u64, fmt: &str) -> String {
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let name = MONTHS[(month - 1) as usize];
    fmt.replace("%d", &format!("{day:02}"))
        .replace("%m", &format!("{month:02}"))
        .replace("%Y", &year.to_string())
        .replace("%B", name)
        .replace("%b", &name[..3])
}

#[cfg(test)]
pub(crate) mod llamacpp_tests;
#[cfg(test)]
mod tests {
    use super::*;

    fn convo() -> Vec<Message> {
        vec![Message::user("Hi"), Message::assistant("Hello!")]
    }

    #[test]
    fn chatml_renders_with_generation_prompt() {
        let t = ChatTemplate::builtin("chatml").unwrap();
        let full = t.render(&convo(), false).unwrap();
        assert_eq!(
            full,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
        );
        let prompt = t.render(&convo()[..1], true).unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn every_builtin_compiles_and_renders() {
        for name in builtin_names() {
            let t = ChatTemplate::builtin(name).unwrap();
            let text = t.render(&convo(), false).unwrap();
            assert!(text.contains("Hello!"), "{name}: {text}");
        }
    }

    #[test]
    fn raise_exception_is_a_clear_error() {
        let t = ChatTemplate::new(
            "test",
            "{{ raise_exception('roles must alternate') }}",
            "",
            "",
            vec![],
        )
        .unwrap();
        let e = t.render(&convo(), false).unwrap_err().to_string();
        assert!(e.contains("roles must alternate"), "{e}");
        assert!(e.contains("test"), "{e}");
    }

    #[test]
    fn a_template_writing_more_than_the_cap_is_refused_naming_it() {
        // 100 writes of 1 MB each: 100 MB of output, past the 8 MiB cap.
        let t = ChatTemplate::new(
            "hostile.jinja",
            "{% for i in range(100) %}{{ 'x' * 1000000 }}{% endfor %}",
            "",
            "",
            vec![],
        )
        .unwrap();
        let e = t.render(&[Message::user("hi")], true).unwrap_err();
        assert!(e.is_input(), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("hostile.jinja") && text.contains("8 MiB"),
            "{text}"
        );
        // minijinja's own limit on one repetition: an error too, not an abort.
        let t = ChatTemplate::new("big.jinja", "{{ 'x' * 1000000000 }}", "", "", vec![]).unwrap();
        let e = t.render(&[Message::user("hi")], true).unwrap_err();
        assert!(e.is_input() && e.to_string().contains("big.jinja"), "{e}");
    }

    #[test]
    fn endless_template_runs_out_of_fuel() {
        let t = ChatTemplate::new(
            "loop",
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            "",
            "",
            vec![],
        )
        .unwrap();
        let e = t.render(&convo(), false).unwrap_err().to_string();
        assert!(e.contains("too long"), "{e}");
    }

    #[test]
    fn syntax_error_names_origin() {
        let e = ChatTemplate::new("my.jinja", "{% if %}", "", "", vec![]).unwrap_err();
        assert!(e.to_string().contains("my.jinja"), "{e}");
        assert!(e.is_input());
    }

    #[test]
    fn no_filesystem_access() {
        let t = ChatTemplate::new("inc", "{% include '/etc/passwd' %}", "", "", vec![]).unwrap();
        assert!(t.render(&convo(), false).is_err());
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new(
            "py",
            "{% for m in messages %}{{ m['content'].strip().upper() }}|{% endfor %}",
            "",
            "",
            vec![],
        )
        .unwrap();
        let msgs = vec![Message::user("  hi  ")];
        assert_eq!(t.render(&msgs, false).unwrap(), "HI|");
    }

    #[test]
    fn template_args_are_context_variables() {
        let mut t = ChatTemplate::new(
            "args",
            "{% if enable_thinking is defined and enable_thinking is false %}no-think{% endif %}|{{ name }}|{{ n + 1 }}|{{ bos_token }}",
            "<s>",
            "",
            vec![],
        )
        .unwrap();
        let args: TemplateArgs = [
            "enable_thinking=false",
            "name=Bob",
            "n=41",
            "bos_token=[BOS]",
        ]
        .iter()
        .map(|a| parse_template_arg(a).unwrap())
        .collect();
        t.set_args(args).unwrap();
        assert_eq!(t.render(&convo(), false).unwrap(), "no-think|Bob|42|[BOS]");
    }

    #[test]
    fn template_arg_values_are_json_or_plain_strings() {
        let p = |s: &str| parse_template_arg(s).unwrap().1;
        assert_eq!(p("a=false"), serde_json::json!(false));
        assert_eq!(p("a=\"false\""), serde_json::json!("false"));
        assert_eq!(p("a=[1, 2]"), serde_json::json!([1, 2]));
        assert_eq!(p("a=hello world"), serde_json::json!("hello world"));
        assert_eq!(p("a="), serde_json::json!(""));
        assert_eq!(p("a=x=y"), serde_json::json!("x=y"));
        for bad in [
            "nokey",
            "=1",
            "1a=2",
            "messages=[]",
            "add_generation_prompt=true",
        ] {
            assert!(parse_template_arg(bad).is_err(), "{bad}");
        }
    }

    fn template(source: &str) -> ChatTemplate {
        ChatTemplate::new("t", source, "", "", vec![]).unwrap()
    }

    #[test]
    fn none_is_not_iterable_as_in_jinja2() {
        let t = template(
            "{{ tools is iterable }}|{{ tools is none }}|{{ tools is not none }}|{% if tools %}T{% else %}F{% endif %}|{{ tools|tojson }}|{{ tools }}|{{ none is iterable }}|{{ messages is iterable }}",
        );
        assert_eq!(
            t.render(&convo(), false).unwrap(),
            "False|True|False|F|null|None|False|True"
        );
        // Looping over None raises in Python; a template that does so fails here too.
        let t = template("{% for t in tools %}{{ t }}{% endfor %}");
        let e = t.render(&convo(), false).unwrap_err().to_string();
        assert!(e.contains("not iterable"), "{e}");
        let t = template("{{ tools | length }}");
        assert!(t.render(&convo(), false).is_err());
    }

    #[test]
    fn select_and_map_give_nothing_for_none_as_in_jinja2() {
        // Jinja2's filters check `if value:` before iterating (functionary's templates
        // rely on it); over a list they still select and map.
        let t = template(
            "{{ tools | selectattr('type', 'equalto', 'x') | list | length }}|{{ tools | rejectattr('type') | list }}|{{ tools | select | list }}|{{ tools | reject | list }}|{{ tools | map(attribute='a') | list }}|{{ messages | map(attribute='role') | join(',') }}|{{ messages | selectattr('role', 'equalto', 'user') | list | length }}",
        );
        assert_eq!(
            t.render(&convo(), false).unwrap(),
            "0|[]|[]|[]|[]|user,assistant|1"
        );
    }

    #[test]
    fn generation_blocks_render_their_body_and_give_its_bytes() {
        let t = template(
            "{% for m in messages %}<{{ m.role }}>\n{% if m.role == 'assistant' %}\n  {%- generation -%}\n  {{ m.content }}</s>\n  {%- endgeneration %}\n{% else %}{{ m.content }}\n{% endif %}{% endfor %}",
        );
        assert!(t.has_generation());
        let (text, ranges) = t.render_generation(&convo(), false).unwrap();
        assert_eq!(text, "<user>\nHi\n<assistant>\nHello!</s>");
        let ranges = ranges.unwrap();
        assert_eq!(ranges.len(), 1);
        assert_eq!(&text[ranges[0].clone()], "Hello!</s>");
        assert_eq!(t.render(&convo(), false).unwrap(), text);
        let (_, none) = template("{{ 1 }}")
            .render_generation(&convo(), false)
            .unwrap();
        assert_eq!(none, None);
    }

    #[test]
    fn dates_format() {
        assert_eq!(format_date(0, "%d %b %Y"), "01 Jan 1970");
        assert_eq!(format_date(20_454, "%d %B %Y"), "01 January 2026");
    }

    #[test]
    fn a_fixed_day_is_what_strftime_now_prints() {
        let mut t = template("{{ strftime_now('%d %b %Y') }}");
        t.set_today(20_787);
        assert_eq!(t.render(&convo(), false).unwrap(), "30 Nov 2026");
    }
}
