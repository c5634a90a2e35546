//! `run.json`: what a synthesis run was asked to do, and how far it got.
//!
//! The file is [`RunManifest`] as pretty JSON. Fields are declared in sorted order, so
//! the file has its keys in the order the untyped writer before it wrote them (sorted,
//! as `serde_json::Map` keeps them); keys a newer version adds are ignored on reading.

use super::Progress;
use crate::gate::GateCounts;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// Whether the run finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Started, or interrupted: a resumed run continues it.
    Running,
    /// The merged dataset is written.
    Done,
}

/// Where the chat model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The backend's description of itself (model file or endpoint and model name).
    pub backend: String,
    /// SHA-256 of the model file, for an in-process model (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
    /// Keys this version does not know, kept so that fingerprints compare them too.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Provenance {
    /// Provenance with only the backend's description.
    pub fn new(backend: impl Into<String>) -> Self {
        Provenance {
            backend: backend.into(),
            model_sha256: None,
            other: Map::new(),
        }
    }
}

/// The settings a resumed run must share with the interrupted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The judge model's description (`--judge-model`), when one weighs the candidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<String>,
    /// The backend's description.
    pub model: String,
    /// The synthesis options ([`crate::SynthOptions`]) as JSON, compared as written.
    pub options: Value,
    /// Where the model came from (its hash, for a local file).
    pub provenance: Provenance,
}

/// The content of `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    /// Dialogue and token counts, once done.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "sorted"
    )]
    pub counts: Option<Progress>,
    /// The settings, which a resume must repeat.
    pub fingerprint: Fingerprint,
    /// What the quality gate rejected, once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateCounts>,
    /// The version of the toolkit that wrote the file.
    pub gatt_version: String,
    /// The merged dataset, once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<PathBuf>,
    /// Wall time of the run that finished it, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Running (or interrupted) until the merged dataset is written.
    pub status: RunStatus,
}

/// Writes `value` with its keys sorted, as the untyped writer did ([`Progress`] declares
/// its fields in another order, which `report.json` keeps).
fn sorted<S: serde::Serializer, T: Serialize>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    serde_json::to_value(value)
        .map_err(serde::ser::Error::custom)?
        .serialize(s)
}

impl RunManifest {
    /// A run that has just started.
    pub fn running(fingerprint: Fingerprint) -> Self {
        RunManifest {
            status: RunStatus::Running,
            gatt_version: env!("CARGO_PKG_VERSION").to_string(),
            fingerprint,
            counts: None,
            gate: None,
            seconds: None,
            output: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `run.json` as the untyped writer before this type wrote it.
    fn old_file() -> Value {
        json!({
            "status": "done",
            "gatt_version": "0.1.0",
            "fingerprint": {
                "options": {"dialogues": 3, "terse": 0.5},
                "model": "embedded:m.gguf",
                "provenance": {"backend": "embedded:m.gguf", "model_sha256": "ab12"}
            },
            "counts": {
                "dialogues_done": 3,
                "dialogues_total": 3,
                "dialogues_resumed": 1,
                "tokens_generated": 36
            },
            "seconds": 1.5,
            "output": "run/dialogues.jsonl"
        })
    }

    #[test]
    fn reads_and_writes_the_same_json_as_before() {
        let m: RunManifest = serde_json::from_value(old_file()).unwrap();
        assert_eq!(m.status, RunStatus::Done);
        assert_eq!(
            m.fingerprint.provenance.model_sha256.as_deref(),
            Some("ab12")
        );
        assert_eq!(m.counts.as_ref().map(|c| c.dialogues_resumed), Some(1));
        assert_eq!(serde_json::to_value(&m).unwrap(), old_file());
        // Byte for byte: the untyped writer's maps kept their keys sorted.
        assert_eq!(
            serde_json::to_string_pretty(&m).unwrap(),
            serde_json::to_string_pretty(&old_file()).unwrap()
        );
    }

    #[test]
    fn a_running_manifest_has_no_counts() {
        let fp = Fingerprint {
            judge: None,
            options: json!({}),
            model: "m".into(),
            provenance: Provenance::new("m"),
        };
        let v = serde_json::to_value(RunManifest::running(fp)).unwrap();
        assert_eq!(v["status"], "running");
        assert!(
            v.get("counts").is_none()
                && v["fingerprint"]["provenance"].get("model_sha256").is_none()
        );
    }
}
