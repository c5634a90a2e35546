//! `gatt constraints`: look at and grow the constraint catalogs.

use super::backend::BackendArgs;
use crate::out::outln;
use crate::progress;
use gatt::catalog::Catalog;
use gatt::{ConstraintKind, Error, Result};
use std::path::PathBuf;

/// List or grow the constraint catalogs (hobbies, figures, personas, languages, format
/// rules) that `gatt synth` samples from.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: ConstraintsCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ConstraintsCommand {
    /// Print the entries of one kind.
    List {
        #[arg(long)]
        kind: String,
    },
    /// Ask the chat model for new entries (as the paper did, so the model is only asked to
    /// play what it knows), deduplicate them against the catalog, and write a catalog file
    /// for `gatt synth --catalog KIND=FILE`.
    ///
    /// Example: gatt constraints expand --kind hobby --n 50 --out hobbies.json
    Expand {
        /// hobby, figure or persona.
        #[arg(long)]
        kind: String,
        /// New entries wanted.
        #[arg(long, default_value_t = 50)]
        n: usize,
        #[arg(long, short)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        backend: Box<BackendArgs>,
    },
}

pub fn run(args: Args) -> Result<()> {
    let catalog = Catalog::builtin();
    match args.command {
        ConstraintsCommand::List { kind } => {
            let kind = ConstraintKind::from(kind);
            let values = catalog.values(&kind);
            if values.is_empty() {
                return Err(Error::input(format!("--kind {kind}: no such catalog")));
            }
            for v in values {
                outln!("{v}")?;
            }
        }
        ConstraintsCommand::Expand {
            kind,
            n,
            out,
            seed,
            backend,
        } => {
            let kind = ConstraintKind::from(kind);
            gatt_synth::expand::check_expandable(&kind).map_err(|e| e.context("--kind"))?;
            let backend = backend.load()?;
            let pb = progress::bar(Some(n as u64), "new entries");
            let new =
                gatt_synth::expand::expand(backend.as_ref(), &catalog, &kind, n, seed, &|k| {
                    pb.set_position(k as u64)
                })?;
            pb.finish_and_clear();
            let json = gatt_synth::expand::catalog_json(&catalog, &kind, &new)?;
            let mut f = gatt::dataset::AtomicFile::create(&out)?;
            serde_json::to_writer_pretty(f.writer(), &json)
                .map_err(|e| Error::runtime(format!("{}: {e}", out.display())))?;
            f.commit()?;
            eprintln!(
                "gatt constraints: {} new {kind} entries (of {n} wanted) -> {}",
                new.len(),
                out.display()
            );
            for name in &new {
                outln!("{name}")?;
            }
        }
    }
    Ok(())
}
