//! `gatt report`: work with evaluation reports.

use crate::out::out;
use gatt::Result;
use gatt_eval::{compare, read_report, write_report};
use std::path::PathBuf;

/// Compare evaluation reports.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: ReportCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ReportCommand {
    /// Put two runs side by side (e.g. baseline and fine-tuned) in one report.
    Compare {
        /// report.json of run A (or its folder).
        a: PathBuf,
        /// report.json of run B (or its folder).
        b: PathBuf,
        #[arg(long, short)]
        out: PathBuf,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        ReportCommand::Compare { a, b, out } => {
            let r = compare(&read_report(&a)?, &read_report(&b)?);
            write_report(&r, &out)?;
            out!(
                "{}",
                std::fs::read_to_string(out.join("report.md")).unwrap_or_default()
            )?;
        }
    }
    Ok(())
}
