//! Writes a dialogue file (JSONL or Parquet) as a Parquet dialogue file, as
//! `gatt synth --format parquet` writes one: for checking the files with other readers
//! (`scripts/compat/check_parquet.py`) without a model to synthesize them.
//!
//! Usage:
//!   cargo run -p gatt --example dialogues_to_parquet -- IN.jsonl OUT.parquet

use gatt::dataset::{read_dialogues, DialogueWriter, Format};
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: dialogues_to_parquet IN.jsonl OUT.parquet");
        std::process::exit(2);
    };
    if let Err(e) = convert(Path::new(input), Path::new(output)) {
        eprintln!("error: {e}");
        std::process::exit(if e.is_input() { 2 } else { 1 });
    }
}

/// Copies every record of `input` to `output`; the first unreadable record stops it.
fn convert(input: &Path, output: &Path) -> gatt::Result<()> {
    let mut w = DialogueWriter::create(output, Format::Parquet)?;
    for record in read_dialogues(input)? {
        w.write(&record?.1)?;
    }
    w.finish()
}
