//! One error type for the whole toolkit, split by who must act on it.

use std::path::Path;

/// Errors carry a message written for the person running the tool.
///
/// `Input` means the user's input (a file, a flag, a template) is at fault and the
/// tool exits with status 2; everything else exits with status 1.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: the message names the file, line/row and field, and what to do.
    #[error("{0}")]
    Input(String),
    /// A failure that is not the input's fault (I/O, model runtime, network).
    #[error("{0}")]
    Runtime(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }

    pub fn runtime(msg: impl Into<String>) -> Self {
        Error::Runtime(msg.into())
    }

    /// An I/O failure on `path`, worded for the user.
    pub fn io(path: &Path, action: &str, err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::NotFound {
            Error::Input(format!(
                "{}: cannot {action}: file not found",
                path.display()
            ))
        } else {
            Error::Runtime(format!("{}: cannot {action}: {err}", path.display()))
        }
    }

    pub fn is_input(&self) -> bool {
        matches!(self, Error::Input(_))
    }

    /// Prefix the message with where it happened (a file, a record id).
    pub fn context(self, ctx: impl std::fmt::Display) -> Self {
        match self {
            Error::Input(m) => Error::Input(format!("{ctx}: {m}")),
            Error::Runtime(m) => Error::Runtime(format!("{ctx}: {m}")),
        }
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Runtime(format!("model runtime: {e}"))
    }
}

impl From<polars::error::PolarsError> for Error {
    fn from(e: polars::error::PolarsError) -> Self {
        Error::Runtime(format!("dataset: {e}"))
    }
}
