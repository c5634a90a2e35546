//! A synthesis run on disk: chunk files (the unit of resumption), the merged dataset and
//! the `run.json` manifest.
//!
//! Each chunk holds a fixed set of dialogues and is written atomically, so after a crash
//! at any point the chunks on disk are exactly those that finished; `--resume` skips
//! them and the merged output equals a clean run's.

use crate::pipeline::Synthesizer;
use gatt::dataset::{read_all, DialogueWriter, Format};
use gatt::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Counts reported after each chunk (for progress bars).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    pub dialogues_done: usize,
    pub dialogues_total: usize,
    pub dialogues_resumed: usize,
    pub tokens_generated: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub progress: Progress,
    pub output: PathBuf,
    pub seconds: f64,
}

fn chunk_path(dir: &Path, k: usize) -> PathBuf {
    dir.join("chunks").join(format!("chunk-{k:06}.jsonl"))
}

/// The settings a resumed run must share with the interrupted one.
fn fingerprint(s: &Synthesizer, provenance: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "options": s.opts,
        "model": s.backend.describe(),
        "provenance": provenance,
    })
}

fn write_manifest(dir: &Path, manifest: &serde_json::Value) -> Result<()> {
    let path = dir.join("run.json");
    let mut f = gatt::dataset::AtomicFile::create(&path)?;
    serde_json::to_writer_pretty(f.writer(), manifest)
        .map_err(|e| Error::runtime(format!("{}: {e}", path.display())))?;
    f.commit()
}

/// Runs (or resumes) the synthesis into `dir`, writing `dir/dialogues.<format>`.
pub fn run(
    s: &Synthesizer,
    dir: &Path,
    resume: bool,
    format: Format,
    provenance: serde_json::Value,
    on_progress: &dyn Fn(&Progress),
) -> Result<RunSummary> {
    let start = Instant::now();
    let manifest_path = dir.join("run.json");
    let fp = fingerprint(s, &provenance);
    if manifest_path.exists() {
        let old: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&manifest_path)
                .map_err(|e| Error::io(&manifest_path, "read", e))?,
        )
        .map_err(|e| Error::input(format!("{}: invalid JSON: {e}", manifest_path.display())))?;
        if !resume {
            return Err(Error::input(format!(
                "{} already holds a run; pass --resume to continue it, or choose another --out",
                dir.display()
            )));
        }
        if old.get("fingerprint") != Some(&fp) {
            return Err(Error::input(format!(
                "{}: --resume with different settings than the interrupted run (see its run.json); \
                 rerun with the same arguments",
                dir.display()
            )));
        }
    }
    std::fs::create_dir_all(dir.join("chunks")).map_err(|e| Error::io(dir, "create folder", e))?;
    let mut manifest = serde_json::json!({
        "status": "running",
        "gatt_version": env!("CARGO_PKG_VERSION"),
        "fingerprint": fp,
    });
    write_manifest(dir, &manifest)?;

    let plans = s.plans();
    let chunk = s.opts.chunk.max(1);
    let mut progress = Progress {
        dialogues_total: plans.len(),
        ..Default::default()
    };
    for (k, group) in plans.chunks(chunk).enumerate() {
        let path = chunk_path(dir, k);
        if path.exists() {
            progress.dialogues_done += group.len();
            progress.dialogues_resumed += group.len();
            on_progress(&progress);
            continue;
        }
        let records = s.run_chunk(group)?;
        let mut w = DialogueWriter::create(&path, Format::Jsonl)?;
        for r in &records {
            progress.tokens_generated += r.meta.tokens_generated();
            w.write(r)?;
        }
        w.finish()?;
        progress.dialogues_done += group.len();
        on_progress(&progress);
    }

    let output = dir.join(format!("dialogues.{}", format.extension()));
    let mut w = DialogueWriter::create(&output, format)?;
    let n_chunks = plans.len().div_ceil(chunk);
    for k in 0..n_chunks {
        for d in read_all(&chunk_path(dir, k))? {
            w.write(&d)?;
        }
    }
    w.finish()?;
    let seconds = start.elapsed().as_secs_f64();
    manifest["status"] = "done".into();
    manifest["counts"] = serde_json::to_value(&progress).unwrap_or_default();
    manifest["seconds"] = seconds.into();
    manifest["output"] = output.display().to_string().into();
    write_manifest(dir, &manifest)?;
    Ok(RunSummary {
        progress,
        output,
        seconds,
    })
}
