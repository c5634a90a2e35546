//! A whole evaluation: the protocol for one or more models (or dialogues read from a
//! file), code checks on every reply, a judge's verdicts when one is given, and one
//! [`Report`] over all of it.
//!
//! Progress goes through [`Progress`], phase by phase, so that a caller can show bars.

use crate::judge::{judge_dialogues, verdict_params};
use crate::protocol::{has_instruction, run_protocol, score_dialogue, ProtocolOptions, ScoredTurn};
use crate::report::Report;
use gatt::backend::ChatBackend;
use gatt::catalog::Catalog;
use gatt::dataset::{read_all, DialogueWriter, Format};
use gatt::{Dialogue, Error, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Receives the progress of an evaluation, on the calling thread: each phase (one
/// model's replies, then the judge's verdicts) begins, advances and ends. Every method
/// does nothing by default; `()` is the silent implementation.
pub trait Progress {
    /// A phase begins: `what` names it (`replies (MODEL)`, `judge verdicts (MODEL)`);
    /// `total` is its number of steps when known.
    fn begin(&self, _what: &str, _total: Option<usize>) {}

    /// `done` steps of the current phase are finished.
    fn advance(&self, _done: usize) {}

    /// The current phase is over (also when it failed).
    fn end(&self) {}
}

impl Progress for () {}

/// Runs the protocol with each backend in turn and reports on all of them.
///
/// Backends are taken one at a time from `backends` (so a caller that loads each one in
/// the iterator holds one model at a time). Each model's dialogues are written to
/// `out/dialogues-<model>.jsonl` ([`model_slug`]); every reply is checked; `judge`, when
/// given, adds its verdicts. The report's `meta` records the version, the protocol and
/// the judge. The report itself is not written (see [`crate::write_report`]).
///
/// # Errors
///
/// The first backend that fails to load or generate, an invalid protocol (no turn, no
/// kind), or a dialogue file that cannot be written.
pub fn evaluate_models<I>(
    backends: I,
    judge: Option<&dyn ChatBackend>,
    catalog: &Catalog,
    opts: &ProtocolOptions,
    out: &Path,
    progress: &dyn Progress,
) -> Result<Report>
where
    I: IntoIterator<Item = Result<Box<dyn ChatBackend>>>,
{
    let mut rows: Vec<ScoredTurn> = Vec::new();
    let mut judged: Vec<Dialogue> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for backend in backends {
        let backend = backend?;
        let model = backend.describe();
        // Dialogue files and report columns are keyed by the model's name: two models of
        // one name would overwrite each other's dialogues and merge into one column.
        if !seen.insert(model_slug(&model)) {
            return Err(Error::input(format!(
                "two models are both named `{model}`: their dialogues and report columns \
                 would mix; give the files distinct names"
            )));
        }
        progress.begin(
            &format!("replies ({model})"),
            Some(opts.turns * opts.dialogues),
        );
        let dialogues = run_protocol(backend.as_ref(), catalog, opts, &|n| progress.advance(n));
        progress.end();
        let dialogues = dialogues?;
        let mut w = DialogueWriter::create(&dialogues_path(out, &model), Format::Jsonl)?;
        for d in &dialogues {
            w.write(d)?;
            rows.extend(score_dialogue(d, catalog));
        }
        w.finish()?;
        if judge.is_some() {
            judged.extend(dialogues);
        }
    }
    let kinds: Vec<&str> = opts.kinds.iter().map(|k| k.as_str()).collect();
    let mut meta = json!({
        "gatt_version": env!("CARGO_PKG_VERSION"),
        "protocol": {
            "turns": opts.turns, "dialogues": opts.dialogues, "constraints": kinds,
            "probe_every": opts.probe_every, "seed": opts.seed,
        },
    });
    add_judge(judge, &judged, catalog, &mut rows, &mut meta, progress)?;
    Ok(Report::from_scored(&rows, meta))
}

/// Checks the replies of existing dialogues (e.g. `gatt synth` output) and reports on
/// them; `judge`, when given, adds its verdicts. The report's `meta` records the version,
/// the input and the judge.
///
/// Records with an instruction (the `instruction` field or a system message) but no
/// `constraints` cannot be checked: they are left out, counted in the report's
/// `meta.not_scored.instruction_without_constraints` with their first ids in
/// `meta.not_scored.ids`.
///
/// # Errors
///
/// An input error when the file cannot be read or gives nothing to check (no record
/// with `constraints`, or an instruction-free one, and an answered turn); a failing
/// judge.
pub fn evaluate_file(
    input: &Path,
    judge: Option<&dyn ChatBackend>,
    catalog: &Catalog,
    progress: &dyn Progress,
) -> Result<Report> {
    let dialogues = read_all(input)?;
    let mut rows: Vec<ScoredTurn> = dialogues
        .iter()
        .flat_map(|d| score_dialogue(d, catalog))
        .collect();
    if rows.is_empty() {
        return Err(Error::input(format!(
            "{}: nothing to check: no record has `constraints` and an answered turn \
             (records with neither constraints nor an instruction, in the `instruction` \
             field or a system message, are checked for answering in the user's language)",
            input.display()
        )));
    }
    let mut meta = json!({
        "gatt_version": env!("CARGO_PKG_VERSION"),
        "input": input.display().to_string(),
    });
    let unscorable: Vec<&str> = dialogues
        .iter()
        .filter(|d| d.constraints.is_empty() && has_instruction(d))
        .map(|d| d.id.as_str())
        .collect();
    if !unscorable.is_empty() {
        meta["not_scored"] = json!({
            "instruction_without_constraints": unscorable.len(),
            "ids": unscorable.iter().take(NOT_SCORED_IDS).collect::<Vec<_>>(),
        });
    }
    add_judge(judge, &dialogues, catalog, &mut rows, &mut meta, progress)?;
    Ok(Report::from_scored(&rows, meta))
}

/// How many ids of records left out [`evaluate_file`] names in `meta.not_scored.ids`.
pub const NOT_SCORED_IDS: usize = 5;

/// Adds `judge`'s verdicts on `dialogues` to `rows` and names the judge in `meta`.
fn add_judge(
    judge: Option<&dyn ChatBackend>,
    dialogues: &[Dialogue],
    catalog: &Catalog,
    rows: &mut Vec<ScoredTurn>,
    meta: &mut Value,
    progress: &dyn Progress,
) -> Result<()> {
    let Some(j) = judge else {
        return Ok(());
    };
    progress.begin(&format!("judge verdicts ({})", j.describe()), None);
    let verdicts = judge_dialogues(j, dialogues, catalog, &verdict_params(), &|n| {
        progress.advance(n)
    });
    progress.end();
    meta["judge"] = j.describe().into();
    rows.extend(verdicts?);
    Ok(())
}

/// Where [`evaluate_models`] writes the dialogues of `model` (a backend's description).
pub fn dialogues_path(out: &Path, model: &str) -> PathBuf {
    out.join(format!("dialogues-{}.jsonl", model_slug(model)))
}

/// A file-name-safe form of a model's description: its last path segment, with every
/// character but ASCII letters, digits, `.` and `-` replaced by `_`. An endpoint's
/// description, `NAME (URL)`, gives NAME's (not the URL's, which would name every
/// endpoint `completions_`).
pub fn model_slug(model: &str) -> String {
    let name = match model.strip_suffix(')').and_then(|m| m.split_once(" (")) {
        Some((name, url)) if url.contains("://") => name,
        _ => model,
    };
    let base = name.rsplit('/').next().unwrap_or(name);
    base.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatt::backend::{Reply, Request, SamplingParams};
    use gatt::ConstraintKind;
    use std::cell::RefCell;

    /// Answers every request with `reply`, under the name `name`.
    struct Fixed {
        name: &'static str,
        reply: &'static str,
    }

    impl ChatBackend for Fixed {
        fn describe(&self) -> String {
            self.name.into()
        }
        fn generate(&self, requests: &[Request], _: &SamplingParams) -> Result<Vec<Vec<Reply>>> {
            let reply = Reply {
                text: self.reply.into(),
                prompt_tokens: 1,
                completion_tokens: 1,
                finished: true,
            };
            Ok(requests.iter().map(|_| vec![reply.clone()]).collect())
        }
        fn preferred_batch(&self) -> usize {
            2
        }
    }

    fn backend(name: &'static str) -> Result<Box<dyn ChatBackend>> {
        Ok(Box::new(Fixed {
            name,
            reply: "Hello there.",
        }))
    }

    /// Records the phases it sees.
    #[derive(Default)]
    struct Phases(RefCell<Vec<String>>);

    impl Progress for Phases {
        fn begin(&self, what: &str, total: Option<usize>) {
            self.0.borrow_mut().push(format!("{what} {total:?}"));
        }
    }

    fn options() -> ProtocolOptions {
        ProtocolOptions {
            turns: 2,
            dialogues: 3,
            kinds: vec![ConstraintKind::Hobby],
            ..ProtocolOptions::default()
        }
    }

    /// Evaluates `backends` with the test protocol into `out`, without progress.
    fn evaluate_in<const N: usize>(
        out: &Path,
        backends: [Result<Box<dyn ChatBackend>>; N],
        judge: Option<&dyn ChatBackend>,
    ) -> Result<Report> {
        evaluate_models(backends, judge, &Catalog::builtin(), &options(), out, &())
    }

    #[test]
    fn every_model_gets_its_dialogues_file_and_its_column() {
        let dir = tempfile::tempdir().unwrap();
        let judge = Fixed {
            name: "judge",
            reply: "yes",
        };
        let phases = Phases::default();
        let report = evaluate_models(
            [backend("dir/m1"), backend("m2")],
            Some(&judge),
            &Catalog::builtin(),
            &options(),
            dir.path(),
            &phases,
        )
        .unwrap();
        for m in ["m1", "m2"] {
            let d = read_all(&dir.path().join(format!("dialogues-{m}.jsonl"))).unwrap();
            assert_eq!(d.len(), 3);
        }
        assert_eq!(
            report.models,
            ["dir/m1", "m2", "dir/m1 (judge)", "m2 (judge)"]
        );
        assert_eq!(report.meta["protocol"]["constraints"], json!(["hobby"]));
        assert_eq!(report.meta["judge"], "judge");
        assert_eq!(
            *phases.0.borrow(),
            [
                "replies (dir/m1) Some(6)",
                "replies (m2) Some(6)",
                "judge verdicts (judge) None"
            ]
        );
    }

    #[test]
    fn two_models_of_one_file_name_are_refused_before_one_overwrites_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let e = evaluate_in(
            dir.path(),
            [backend("a/model.gguf"), backend("b/model.gguf")],
            None,
        )
        .unwrap_err();
        assert!(e.is_input(), "{e}");
        assert!(e.to_string().contains("both named `b/model.gguf`"), "{e}");
    }

    /// A judge that answers only the first question of every batch.
    struct Forgetful;

    impl ChatBackend for Forgetful {
        fn describe(&self) -> String {
            "forgetful".into()
        }
        fn generate(&self, requests: &[Request], p: &SamplingParams) -> Result<Vec<Vec<Reply>>> {
            let mut all = Fixed {
                name: "x",
                reply: "yes",
            }
            .generate(requests, p)?;
            all.truncate(1);
            Ok(all)
        }
        fn preferred_batch(&self) -> usize {
            4
        }
    }

    #[test]
    fn a_judge_that_drops_replies_is_an_error_not_missing_rows() {
        let dir = tempfile::tempdir().unwrap();
        let e = evaluate_in(dir.path(), [backend("m1")], Some(&Forgetful)).unwrap_err();
        assert!(e.to_string().contains("1 replies for"), "{e}");
    }

    #[test]
    fn a_backend_that_fails_to_load_stops_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let failed: Result<Box<dyn ChatBackend>> = Err(Error::input("no such model"));
        let e = evaluate_in(dir.path(), [backend("m1"), failed], None).unwrap_err();
        assert_eq!(e.to_string(), "no such model");
    }

    #[test]
    fn a_file_without_constraints_has_nothing_to_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::write(
            &path,
            r#"{"id":"a","instruction":"Always answer in French.","messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello."}]}"#,
        )
        .unwrap();
        let e = evaluate_file(&path, None, &Catalog::builtin(), &()).unwrap_err();
        assert!(e.is_input() && e.to_string().contains("no record has `constraints`"));
    }

    #[test]
    fn an_instruction_free_file_is_checked_for_the_users_language() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::write(
            &path,
            r#"{"id":"a","messages":[{"role":"user","content":"How do plants turn sunlight into food? Please explain it to me in simple words."},{"role":"assistant","content":"Plants use photosynthesis to turn light, water and air into sugar."}]}"#,
        )
        .unwrap();
        let r = evaluate_file(&path, None, &Catalog::builtin(), &()).unwrap();
        assert_eq!(r.kinds, ["user_language"]);
        assert_eq!((r.counts.pass, r.counts.fail), (1, 0), "{:?}", r.counts);
    }

    /// A mixed file: a GAtt record, an instruction-free one, and two with an instruction
    /// but no constraints (in the field, in a system message only). The system message's
    /// French must not be checked against the user's English; both are left out, named.
    #[test]
    fn records_with_an_instruction_but_no_constraints_are_left_out_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let q = "Why is the sky blue during the day, and why does it turn red at sunset?";
        let en = "The sky is blue because the air scatters blue sunlight more than red light.";
        let fr =
            "Le ciel est bleu parce que l'air diffuse la lumière bleue bien plus que la rouge.";
        let lines = [
            json!({"id": "gatt", "constraints": [{"kind": "language", "value": "French"}],
                   "instruction": "Always answer in French.",
                   "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": fr}]}),
            json!({"id": "plain", "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": en}]}),
            json!({"id": "field", "instruction": "Always answer in French.",
                   "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": fr}]}),
            json!({"id": "system", "messages": [{"role": "system", "content": "Always answer in French."},
                   {"role": "user", "content": q}, {"role": "assistant", "content": fr}]}),
        ];
        let text: Vec<String> = lines.iter().map(Value::to_string).collect();
        std::fs::write(&path, text.join("\n")).unwrap();
        let r = evaluate_file(&path, None, &Catalog::builtin(), &()).unwrap();
        assert_eq!((r.counts.pass, r.counts.fail), (2, 0), "{:?}", r.counts);
        assert_eq!(r.counts.dialogues, 2);
        assert_eq!(r.meta["not_scored"]["instruction_without_constraints"], 2);
        assert_eq!(r.meta["not_scored"]["ids"], json!(["field", "system"]));
        let md = crate::report::markdown::render(&r);
        assert!(
            md.contains("Records not scored: 2") && md.contains("field, system"),
            "{md}"
        );
        // Only such records: nothing to check, said so.
        std::fs::write(&path, &text[3]).unwrap();
        let e = evaluate_file(&path, None, &Catalog::builtin(), &()).unwrap_err();
        assert!(
            e.is_input() && e.to_string().contains("system message"),
            "{e}"
        );
    }

    #[test]
    fn slugs_keep_the_last_segment_and_safe_characters() {
        assert_eq!(
            model_slug("/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
            "SmolLM2-135M-Instruct.Q4_1.gguf"
        );
        // An endpoint: its model's name, not the URL's last segment.
        let endpoint = |model: &str| {
            gatt::backend::HttpBackend::new(gatt::backend::HttpOptions::new(
                "http://h:8000/v1",
                model,
            ))
            .describe()
        };
        assert_eq!(model_slug(&endpoint("my model")), "my_model");
        assert_eq!(model_slug(&endpoint("/srv/SmolLM2-hf")), "SmolLM2-hf");
        assert_ne!(
            model_slug(&endpoint("a")),
            model_slug(&endpoint("b")),
            "two endpoint models get two files"
        );
        // A folder whose name has parentheses is still a path.
        assert_eq!(model_slug("/m/model (copy)"), "model__copy_");
    }
}
