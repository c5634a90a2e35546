//! `gatt`: the command-line front end. Each subcommand lives in `cmd/` and is a thin
//! layer over the library crates (`gatt`, `gatt-runtime`, `gatt-synth`, `gatt-eval`):
//! it parses flags, loads what they name, shows progress, and turns a library error into
//! a message that names the flag at fault (exit 2 for bad input, 1 otherwise). Nothing
//! depends on this crate.

mod alloc;
mod cmd;
mod out;
mod progress;
mod scoring;
mod synth_report;
mod values;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Keeps the memory budget of chat-template renders (see `alloc.rs`).
#[global_allocator]
static ALLOCATOR: alloc::Guarded = alloc::Guarded;

/// Ghost Attention (GAtt) toolkit: synthesize multi-turn dialogues under an instruction,
/// build last-turn loss masks for fine-tuning, and measure how long a chat model keeps an
/// instruction.
///
/// Typical flow:
///   gatt synth --out run --dialogues 100 --turns 4 --mask   # sample dialogues + masks
///   gatt mask --input dialogues.parquet --out masked.parquet --model default
///   gatt inspect masked.parquet --row 0 --model default
///
/// Exit status: 0 success, 1 runtime failure, 2 bad input or arguments. A reader that
/// stops reading the output early (`gatt inspect m.parquet | head -1`) ends the command
/// quietly with status 0.
#[derive(Parser)]
#[command(name = "gatt", version, verbatim_doc_comment, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Synth(cmd::synth::Args),
    Mask(cmd::mask::Args),
    Inspect(cmd::inspect::Args),
    Eval(cmd::eval::Args),
    Report(cmd::report::Args),
    Generate(cmd::generate::Args),
    Constraints(cmd::constraints::Args),
    Model(cmd::model::Args),
    Templates(cmd::templates::Args),
    Train(cmd::train::Args),
    Score(cmd::score::Args),
    Attention(cmd::attention::Args),
}

fn main() -> ExitCode {
    // Library errors (candle's) capture a backtrace when RUST_BACKTRACE is set and print
    // it inside their message; messages are for users, so only panics keep backtraces.
    // Set before any other thread exists.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    gatt_runtime::allocator::tune();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Mask(a) => cmd::mask::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Templates(a) => cmd::templates::run(a),
        Command::Constraints(a) => cmd::constraints::run(a),
        Command::Model(a) => cmd::model::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::Synth(a) => cmd::synth::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Report(a) => cmd::report::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Score(a) => cmd::score::run(a),
        Command::Attention(a) => cmd::attention::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatt: error: {e}");
            ExitCode::from(if e.is_input() { 2 } else { 1 })
        }
    }
}
