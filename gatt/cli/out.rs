//! Results on standard output, for the person or the pipe that reads them.
//!
//! A reader may stop early (`gatt inspect FILE --row 0 | head -1`): writing then fails
//! with a broken pipe. That is not an error: the reader has what it wanted, so the
//! process ends at once, quietly, with status 0. Every command prints its results with
//! [`outln!`] or [`out!`] for this; `println!` would panic instead.

use std::io::Write;

/// Writes `args` to standard output and flushes it.
///
/// A closed reader ends the process with status 0 and no message; any other write
/// failure is a runtime error.
pub fn write(args: std::fmt::Arguments) -> gatt::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(
            gatt::Error::runtime(format!("cannot write to standard output: {e}")).with_source(e),
        ),
    }
}

/// `println!` for results: `outln!("{x}")?` (see the module documentation).
macro_rules! outln {
    () => {
        $crate::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for results: `out!("{x}")?` (see the module documentation).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*))
    };
}

pub(crate) use {out, outln};
