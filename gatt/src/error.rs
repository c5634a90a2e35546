//! One error type for the whole toolkit, split by who must act on it.

mod location;

pub use location::Location;

use std::path::Path;

/// Who must act on an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The user's input (a file, a flag, a template) is at fault: exit status 2.
    Input,
    /// A failure that is not the input's fault (I/O, model runtime, network): status 1.
    Runtime,
}

/// The cause of an error: the library error it came from.
type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error written for the person running the tool.
///
/// It displays as one line, `CONTEXT: LOCATION: MESSAGE`, where the location names the
/// file, line or row, record and field at fault (see [`Location`]) and the message says
/// what is wrong and, for input errors, what to do. The library error it came from (an
/// I/O, Parquet, model runtime or JSON error) is kept as its [`std::error::Error::source`];
/// the message already says what that cause said, so printing the chain is not needed.
///
/// One pointer wide: the details live on the heap, so `Result`s stay small.
pub struct Error(Box<Inner>);

struct Inner {
    kind: ErrorKind,
    message: String,
    location: Location,
    /// Prefixes added by [`Error::context`], innermost first.
    context: Vec<String>,
    source: Option<Cause>,
}

/// `Result` with this crate's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    fn new(kind: ErrorKind, message: String) -> Self {
        Error(Box::new(Inner {
            kind,
            message,
            location: Location::default(),
            context: Vec::new(),
            source: None,
        }))
    }

    /// Bad input; the message should say what to do about it.
    pub fn input(msg: impl Into<String>) -> Self {
        Error::new(ErrorKind::Input, msg.into())
    }

    /// A failure that is not the input's fault.
    pub fn runtime(msg: impl Into<String>) -> Self {
        Error::new(ErrorKind::Runtime, msg.into())
    }

    /// An I/O failure on `path`, worded for the user. The input's fault (exit 2): a
    /// missing file, a folder where a file is expected and a file where a folder is
    /// expected. Anything else is a runtime failure; a full disk or quota says so in
    /// words. Keeps `err` as the source.
    pub fn io(path: &Path, action: &str, err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let e = match err.kind() {
            K::NotFound => Error::input(format!("cannot {action}: file not found")),
            // What `read_to_string` says of bytes that are not UTF-8 text.
            K::InvalidData => Error::input(format!("cannot {action}: {err} (not UTF-8 text?)")),
            // Bad input found while reading (a line past the reader's limit).
            K::InvalidInput => Error::input(format!("cannot {action}: {err}")),
            K::AlreadyExists if action.contains("folder") => Error::input(format!(
                "cannot {action}: a file of this name is there, and a folder is expected"
            )),
            K::IsADirectory => Error::input(format!(
                "cannot {action}: this is a folder, and a file is expected here"
            )),
            K::NotADirectory => Error::input(format!(
                "cannot {action}: a part of this path is a file, and a folder is expected there"
            )),
            K::StorageFull | K::QuotaExceeded => Error::runtime(format!(
                "cannot {action}: the disk is full ({err}); free space or write elsewhere"
            )),
            K::FileTooLarge => Error::runtime(format!(
                "cannot {action}: the file outgrew the file-size limit ({err}; see `ulimit -f`)"
            )),
            _ => Error::runtime(format!("cannot {action}: {err}")),
        };
        e.at(Location::in_file(path)).with_source(err)
    }

    /// Keeps `cause` as this error's source (the message is left as it is).
    pub fn with_source(mut self, cause: impl Into<Cause>) -> Self {
        self.0.source = Some(cause.into());
        self
    }

    /// Places the error at `loc`; what the error already knows of its place (a field
    /// found by a parser) wins over what `loc` says.
    pub fn at(mut self, loc: Location) -> Self {
        self.0.location = std::mem::take(&mut self.0.location).or(loc);
        self
    }

    /// Prefixes the message with where it happened (a file, a record id), outside the
    /// location.
    pub fn context(mut self, ctx: impl std::fmt::Display) -> Self {
        self.0.context.push(ctx.to_string());
        self
    }

    /// Who must act on it; the CLI exits with 2 for [`ErrorKind::Input`], 1 otherwise.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// True for [`ErrorKind::Input`]: the user can fix it by changing a file or flag.
    pub fn is_input(&self) -> bool {
        self.0.kind == ErrorKind::Input
    }

    /// Where the error is, when known.
    pub fn location(&self) -> Option<&Location> {
        (!self.0.location.is_empty()).then_some(&self.0.location)
    }

    /// The message without its context and location.
    pub fn message(&self) -> &str {
        &self.0.message
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for ctx in self.0.context.iter().rev() {
            write!(f, "{ctx}: ")?;
        }
        if let Some(loc) = self.location() {
            write!(f, "{loc}: ")?;
        }
        f.write_str(&self.0.message)
    }
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.0.kind)
            .field("text", &self.to_string());
        if let Some(s) = &self.0.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::runtime(format!("model runtime: {e}")).with_source(e)
    }
}

impl From<polars::error::PolarsError> for Error {
    fn from(e: polars::error::PolarsError) -> Self {
        Error::runtime(format!("dataset: {e}")).with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn io_errors_keep_their_cause_and_file() {
        let e = Error::io(
            Path::new("/x/d.jsonl"),
            "open",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert!(e.is_input());
        assert_eq!(e.to_string(), "/x/d.jsonl: cannot open: file not found");
        assert_eq!(
            e.location().and_then(|l| l.file.as_deref()),
            Some(Path::new("/x/d.jsonl"))
        );
        let cause = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(cause.map(|c| c.kind()), Some(std::io::ErrorKind::NotFound));

        let denied = Error::io(
            Path::new("o"),
            "write",
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert_eq!(denied.kind(), ErrorKind::Runtime);
        assert!(denied.to_string().starts_with("o: cannot write: "));
    }

    #[test]
    fn io_errors_say_a_full_disk_and_folder_mixups_in_words() {
        let full = Error::io(
            Path::new("out/m.parquet"),
            "write",
            std::io::Error::from_raw_os_error(28), // ENOSPC
        );
        assert_eq!(full.kind(), ErrorKind::Runtime);
        assert!(
            full.to_string()
                .starts_with("out/m.parquet: cannot write: the disk is full"),
            "{full}"
        );
        // EISDIR and ENOTDIR: the user named a folder for a file or the other way round.
        for (code, says) in [(21, "this is a folder"), (20, "a folder is expected")] {
            let e = Error::io(
                Path::new("x"),
                "open",
                std::io::Error::from_raw_os_error(code),
            );
            assert!(e.is_input(), "{e}");
            assert!(e.to_string().contains(says), "{e}");
        }
    }

    #[test]
    fn context_goes_outside_the_location() {
        let e = Error::input("expected a number")
            .at(Location::default().with_field("seed"))
            .at(Location::in_file(Path::new("d.jsonl")).at_line(3).at_row(2))
            .context("users file");
        assert_eq!(
            e.to_string(),
            "users file: d.jsonl:3 (row 2): field `seed`: expected a number"
        );
        assert_eq!(e.message(), "expected a number");
        assert_eq!(e.location().and_then(|l| l.row), Some(2));
        assert!(Error::runtime("x").location().is_none());
    }

    #[test]
    fn library_errors_become_runtime_errors_with_a_source() {
        let e = Error::from(polars::error::PolarsError::NoData("empty".into()));
        assert_eq!(e.kind(), ErrorKind::Runtime);
        assert!(e.to_string().starts_with("dataset: "), "{e}");
        assert!(e.source().is_some());
    }

    #[test]
    fn errors_cross_threads_and_stay_small() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Error>();
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }
}
