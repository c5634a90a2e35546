//! A synthesis run on disk: chunk files (the unit of resumption), the merged dataset and
//! the `run.json` manifest.
//!
//! Each chunk holds a fixed set of dialogues and is written atomically, so after a crash
//! at any point the chunks on disk are exactly those that finished; a resumed run skips
//! them and the merged output equals a clean run's.

mod manifest;

pub use manifest::{Fingerprint, Provenance, RunManifest, RunStatus};

use crate::gate::GateCounts;
use crate::pipeline::Synthesizer;
use gatt::dataset::{read_all, read_json, write_json, DialogueWriter, Format};
use gatt::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Counts reported after each chunk (for progress bars), and recorded in `run.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Dialogues written to chunks so far, resumed ones included.
    pub dialogues_done: usize,
    /// Dialogues of this shard.
    pub dialogues_total: usize,
    /// Dialogues found in chunks of an interrupted run and not sampled again.
    pub dialogues_resumed: usize,
    /// Tokens of the kept replies sampled by this run (resumed chunks add none).
    pub tokens_generated: usize,
    /// Tokens the model sampled in this run: every candidate of every request, those
    /// the gate rejected, resampled turns and dropped dialogues included (what the
    /// backend's speed applies to; resumed chunks add none). Left out of `run.json`
    /// when 0, as older versions wrote it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tokens_sampled: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What a finished run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The final counts.
    pub progress: Progress,
    /// The merged dataset, `dir/dialogues.<format>`.
    pub output: PathBuf,
    /// Wall time of this invocation, in seconds.
    pub seconds: f64,
    /// What the quality gate rejected (resumed chunks included).
    pub gate: GateCounts,
}

fn chunk_path(dir: &Path, k: usize) -> PathBuf {
    dir.join("chunks").join(format!("chunk-{k:06}.jsonl"))
}

/// The gate counts of chunk `k`, written just before the chunk itself (so a chunk on
/// disk always has its counts; a chunk of an older version has none: zero).
fn gate_path(dir: &Path, k: usize) -> PathBuf {
    dir.join("chunks").join(format!("chunk-{k:06}.gate.json"))
}

/// The settings a resumed run must share with the interrupted one.
fn fingerprint(s: &Synthesizer, provenance: Provenance) -> Fingerprint {
    Fingerprint {
        options: serde_json::to_value(&s.opts).expect("options serialize to JSON"),
        model: s.backend.describe(),
        judge: s.judge.map(|j| j.describe()),
        provenance,
    }
}

/// The settings that differ between two fingerprints (as JSON), as `path: was -> now`
/// (`options.seed: 1 -> 2`), a value cut at 60 characters; a setting one side lacks
/// (left out at its default, e.g. `plain_share` 0) shows as `(not set)`.
fn differences(was: Option<&Value>, now: Option<&Value>, path: &str, out: &mut Vec<String>) {
    match (was, now) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                differences(a.get(k), b.get(k), &sub, out);
            }
        }
        (a, b) if a != b => {
            let show = |v: Option<&Value>| {
                let Some(v) = v else {
                    return "(not set)".to_string();
                };
                let s = v.to_string();
                match s.char_indices().nth(60) {
                    Some((i, _)) => format!("{}...", &s[..i]),
                    None => s,
                }
            };
            out.push(format!("{path}: {} -> {}", show(a), show(b)));
        }
        _ => {}
    }
}

/// What [`differences`] finds between two fingerprints, joined; when the JSON forms agree
/// though the settings differ, a pointer to `run.json`.
fn changed_settings(was: &Value, now: &Value) -> String {
    let mut changed = Vec::new();
    differences(Some(was), Some(now), "", &mut changed);
    if changed.is_empty() {
        return "see its `fingerprint`".to_string();
    }
    changed.join(", ")
}

/// True when `dir` holds a run (its `run.json`): only a resumed run may use it.
pub fn holds_run(dir: &Path) -> bool {
    dir.join("run.json").exists()
}

/// Runs (or resumes) the synthesis into `dir`, writing `dir/dialogues.<format>` and
/// `dir/run.json` ([`RunManifest`]). Chunks go to `dir/chunks/chunk-NNNNNN.jsonl`;
/// `on_progress` is called after each.
///
/// # Errors
///
/// Input errors: `dir` already holds a run and `resume` is false, or it holds one with
/// another [`Fingerprint`] (options, model or provenance). Otherwise the backend's, or
/// I/O, errors; the chunks finished so far stay for a resume.
pub fn run(
    s: &Synthesizer,
    dir: &Path,
    resume: bool,
    format: Format,
    provenance: Provenance,
    on_progress: &dyn Fn(&Progress),
) -> Result<RunSummary> {
    let start = Instant::now();
    let _lock = gatt::dataset::FolderLock::acquire(dir)?;
    let manifest_path = dir.join("run.json");
    let fp = fingerprint(s, provenance);
    if holds_run(dir) {
        let old: RunManifest = read_json(&manifest_path)?;
        if !resume {
            return Err(Error::input(format!(
                "{} already holds a run; resume it, or choose another folder",
                dir.display()
            )));
        }
        if old.fingerprint != fp {
            let was = serde_json::to_value(&old.fingerprint).unwrap_or_default();
            let now = serde_json::to_value(&fp).unwrap_or_default();
            return Err(Error::input(format!(
                "{}: resuming with different settings than the interrupted run (its \
                 run.json): {}; rerun with the same settings",
                dir.display(),
                changed_settings(&was, &now)
            )));
        }
    }
    std::fs::create_dir_all(dir.join("chunks")).map_err(|e| Error::io(dir, "create folder", e))?;
    let mut manifest = RunManifest::running(fp);
    write_json(&manifest_path, &manifest)?;

    let plans = s.plans();
    let chunk = s.opts.chunk.max(1);
    let mut progress = Progress {
        dialogues_total: plans.len(),
        ..Default::default()
    };
    let mut gate = GateCounts::default();
    // Chunks finished by an interrupted run count as done; the others are sampled
    // together, dialogues advancing independently, each chunk written once all its
    // dialogues are done.
    let mut todo: Vec<(usize, &[crate::plan::DialoguePlan])> = Vec::new();
    for (k, group) in plans.chunks(chunk).enumerate() {
        let path = chunk_path(dir, k);
        if path.exists() {
            progress.dialogues_done += group.len();
            progress.dialogues_resumed += group.len();
            if gate_path(dir, k).exists() {
                gate.add(&read_json(&gate_path(dir, k))?);
            }
            on_progress(&progress);
            continue;
        }
        todo.push((k, group));
    }
    s.run_chunks(&todo, &mut |k, out| {
        write_json(&gate_path(dir, k), &out.gate)?;
        gate.add(&out.gate);
        progress.tokens_sampled += out.tokens_sampled;
        let mut w = DialogueWriter::create(&chunk_path(dir, k), Format::Jsonl)?;
        for r in &out.records {
            progress.tokens_generated += r.meta.tokens_generated();
            w.write(r)?;
        }
        w.finish()?;
        progress.dialogues_done += plans.chunks(chunk).nth(k).map_or(0, <[_]>::len);
        on_progress(&progress);
        Ok(())
    })?;

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
    manifest.status = RunStatus::Done;
    manifest.counts = Some(progress.clone());
    manifest.seconds = Some(seconds);
    manifest.output = Some(output.clone());
    manifest.gate = Some(gate.clone());
    write_json(&manifest_path, &manifest)?;
    Ok(RunSummary {
        progress,
        output,
        seconds,
        gate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_settings_name_each_path_and_settings_left_out() {
        let was = json!({"options": {"seed": 1, "plain_share": 0.5, "kinds": ["language"]}});
        let now = json!({"options": {"seed": 2, "kinds": ["language"], "terse": 0.1}});
        assert_eq!(
            changed_settings(&was, &now),
            "options.plain_share: 0.5 -> (not set), options.seed: 1 -> 2, \
             options.terse: (not set) -> 0.1"
        );
        // An explicit null is not a setting left out.
        let was = json!({"judge": null});
        assert_eq!(
            changed_settings(&was, &json!({})),
            "judge: null -> (not set)"
        );
        // Equal JSON (settings that differ only where JSON cannot say): no empty list.
        assert_eq!(
            changed_settings(&json!({"a": 1}), &json!({"a": 1})),
            "see its `fingerprint`"
        );
    }
}
