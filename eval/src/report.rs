//! The evaluation report: adherence tables, survival and counts, written as
//! `report.json` (for programs and for [`compare`]), `report.md` (a Table-30-style
//! summary) and `report.html` (the same with charts, one self-contained file).
//!
//! `report.json` is [`Report`] serialized; `eval/REPORT_SCHEMA.md` documents every
//! field. Readers check `schema_version`, which changes whenever a field changes meaning
//! or is removed (adding a field does not change it).

mod html;
pub(crate) mod markdown;
pub(crate) mod svg;
mod tables;

use crate::checks::{user_language, Undecided, Verdict};
use crate::protocol::ScoredTurn;
use crate::stats;
use gatt::{ConstraintKind, Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The version of the `report.json` layout this code writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// An evaluation report: what `report.json` holds (every field documented in
/// `eval/REPORT_SCHEMA.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The layout version, [`SCHEMA_VERSION`] when written by this code.
    pub schema_version: u32,
    /// Free-form run description (backend, options, dataset), passed through.
    pub meta: Value,
    /// In order of first appearance (the order of the table columns).
    pub models: Vec<String>,
    /// Every turn that was scored, ascending.
    pub turns: Vec<usize>,
    /// Constraint kinds, in catalog order (hobby, language, figure, persona, format,
    /// then unknown kinds alphabetically).
    pub kinds: Vec<String>,
    /// Adherence to the whole instruction per model and turn.
    pub adherence: Vec<Cell>,
    /// Adherence per model, kind and turn.
    pub by_kind: Vec<Cell>,
    /// Survival curve points, one per model and turn.
    pub survival: Vec<SurvivalPoint>,
    /// Totals over all scored rows.
    pub counts: Counts,
    /// The scored rows the tables were built from (one per dialogue, turn and
    /// constraint): written to `scores.jsonl` beside `report.json`, for statistics the
    /// tables do not give (intervals over dialogues when turns are pooled). Empty for a
    /// report read back or built by [`compare`].
    #[serde(skip)]
    pub scores: Vec<ScoredTurn>,
}

/// Adherence of one model at one turn (for one kind, in [`Report::by_kind`]); the unit
/// is a dialogue's turn (see [`crate::stats`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The model (table column).
    pub model: String,
    /// The constraint kind; only in [`Report::by_kind`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// 1-based turn.
    pub turn: usize,
    /// Dialogues whose turn passed: no constraint failed, at least one passed.
    pub n_pass: usize,
    /// Dialogues whose turn failed: some constraint failed.
    pub n_fail: usize,
    /// Dialogues whose turn no check decided.
    pub n_undetermined: usize,
    /// `n_pass / (n_pass + n_fail)`; `None` when no dialogue was decided.
    pub rate: Option<f64>,
    /// Lower bound of the 95% Wilson score interval of the rate (0 when nothing was
    /// decided).
    pub lo: f64,
    /// Upper bound of that interval (1 when nothing was decided).
    pub hi: f64,
}

impl Cell {
    /// "80% [49–94] n=10", or "– n=0" when nothing was decided.
    pub fn summary(&self) -> String {
        let n = self.n_pass + self.n_fail;
        match self.rate {
            Some(rate) => format!(
                "{:.0}% [{:.0}–{:.0}] n={n}",
                rate * 100.0,
                self.lo * 100.0,
                self.hi * 100.0
            ),
            None => format!("– n={n}"),
        }
    }
}

/// The survival curve of one model at one turn (see [`stats::survival`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurvivalPoint {
    /// The model.
    pub model: String,
    /// The turn (1-based).
    pub turn: usize,
    /// Dialogues observed at this turn with no failure before it.
    pub at_risk: usize,
    /// Dialogues whose first failure (whole instruction) is this turn.
    pub failed: usize,
    /// Kaplan-Meier estimate of the fraction of dialogues with no failure up to and
    /// including this turn.
    pub adherent: f64,
}

/// Totals over the scored rows of a report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Scored (turn, constraint) rows.
    pub checks: usize,
    /// Distinct (model, dialogue) pairs.
    pub dialogues: usize,
    /// Rows that passed.
    pub pass: usize,
    /// Rows that failed.
    pub fail: usize,
    /// Rows left undetermined (problems included).
    pub undetermined: usize,
    /// Rows decided by a judge model rather than code.
    pub judged: usize,
    /// Undetermined rows per constraint kind.
    pub undetermined_by_kind: BTreeMap<String, usize>,
    /// Constraints that could not be checked at all (unknown kinds, values missing from
    /// the catalog, bad format parameters), by evidence, with how often each occurred.
    pub problems: BTreeMap<String, usize>,
}

impl Counts {
    fn of(rows: &[ScoredTurn]) -> Counts {
        let mut counts = Counts {
            checks: rows.len(),
            ..Counts::default()
        };
        let mut dialogues: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.model.as_str(), r.dialogue.as_str()))
            .collect();
        dialogues.sort_unstable();
        dialogues.dedup();
        counts.dialogues = dialogues.len();
        for r in rows {
            match r.verdict {
                Verdict::Pass => counts.pass += 1,
                Verdict::Fail => counts.fail += 1,
                Verdict::Undetermined => {
                    counts.undetermined += 1;
                    *counts
                        .undetermined_by_kind
                        .entry(r.kind.to_string())
                        .or_default() += 1;
                }
            }
            counts.judged += usize::from(r.judge);
            if r.undecided == Some(Undecided::Problem) {
                *counts.problems.entry(r.evidence.clone()).or_default() += 1;
            }
        }
        counts
    }

    fn add(&mut self, other: &Counts) {
        self.checks += other.checks;
        self.dialogues += other.dialogues;
        self.pass += other.pass;
        self.fail += other.fail;
        self.undetermined += other.undetermined;
        self.judged += other.judged;
        for (k, n) in &other.undetermined_by_kind {
            *self.undetermined_by_kind.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &other.problems {
            *self.problems.entry(k.clone()).or_default() += n;
        }
    }
}

impl Report {
    /// Builds the report of scored rows; `meta` is stored as given.
    pub fn from_scored(rows: &[ScoredTurn], meta: Value) -> Report {
        let mut models: Vec<String> = Vec::new();
        for r in rows {
            if !models.contains(&r.model) {
                models.push(r.model.clone());
            }
        }
        let mut turns: Vec<usize> = rows.iter().map(|r| r.turn).collect();
        turns.sort_unstable();
        turns.dedup();
        let mut report = Report {
            schema_version: SCHEMA_VERSION,
            meta,
            models,
            turns,
            kinds: sorted_kinds(rows.iter().map(|r| r.kind.to_string())),
            adherence: Vec::new(),
            by_kind: Vec::new(),
            survival: Vec::new(),
            counts: Counts::of(rows),
            scores: rows.to_vec(),
        };
        // The frames are built here from well-formed rows; should polars still fail,
        // the report says so instead of losing the counts.
        if let Err(e) = report.fill_tables(rows) {
            report
                .counts
                .problems
                .insert(format!("statistics failed: {e}"), 1);
        }
        report
    }

    /// "All constraints" and survival cover the instructed dialogues; the control rows
    /// ([`user_language::KIND`], instruction-free dialogues) count there only when they
    /// are all there is (a `--no-instruction` run). Mixed data (`--plain-share`) shows
    /// them in their own table, never pooled with the instruction's verdicts.
    fn fill_tables(&mut self, rows: &[ScoredTurn]) -> Result<()> {
        let instructed: Vec<ScoredTurn> = rows
            .iter()
            .filter(|r| r.kind.as_str() != user_language::KIND)
            .cloned()
            .collect();
        let whole = if instructed.is_empty() {
            stats::frame(rows)?
        } else {
            stats::frame(&instructed)?
        };
        let scored = stats::frame(rows)?;
        self.adherence = cells(&stats::adherence(&whole, false)?, false)?;
        self.by_kind = cells(&stats::adherence(&scored, true)?, true)?;
        let s = stats::survival(&whole)?;
        let (models, turns) = (stats::strings(&s, "model")?, stats::counts(&s, "turn")?);
        let (at_risk, failed) = (stats::counts(&s, "at_risk")?, stats::counts(&s, "failed")?);
        let adherent = stats::floats(&s, "adherent")?;
        self.survival = (0..s.height())
            .map(|i| SurvivalPoint {
                model: models[i].clone(),
                turn: turns[i] as usize,
                at_risk: at_risk[i] as usize,
                failed: failed[i] as usize,
                adherent: adherent[i].unwrap_or(0.0),
            })
            .collect();
        Ok(())
    }

    /// The adherence cell of `model` at `turn`: for the whole instruction when `kind` is
    /// `None`, else for that kind.
    pub fn cell(&self, model: &str, turn: usize, kind: Option<&str>) -> Option<&Cell> {
        let table = if kind.is_some() {
            &self.by_kind
        } else {
            &self.adherence
        };
        table
            .iter()
            .find(|c| c.model == model && c.turn == turn && c.kind.as_deref() == kind)
    }

    /// The survival point of `model` at `turn`; `None` for a model or turn the report
    /// does not have.
    pub fn survival_at(&self, model: &str, turn: usize) -> Option<&SurvivalPoint> {
        self.survival
            .iter()
            .find(|p| p.model == model && p.turn == turn)
    }
}

/// Kinds in catalog order, then unknown ones alphabetically, each once.
fn sorted_kinds(kinds: impl Iterator<Item = String>) -> Vec<String> {
    let rank = |k: &String| {
        let known = ConstraintKind::KNOWN.iter().position(|c| c.as_str() == k);
        (known.unwrap_or(usize::MAX), k.clone())
    };
    let mut kinds: Vec<String> = kinds.collect();
    kinds.sort_by_key(rank);
    kinds.dedup();
    kinds
}

/// The rows of an adherence frame as cells.
fn cells(df: &polars::prelude::DataFrame, by_kind: bool) -> Result<Vec<Cell>> {
    let models = stats::strings(df, "model")?;
    let kinds = if by_kind {
        Some(stats::strings(df, "kind")?)
    } else {
        None
    };
    let turns = stats::counts(df, "turn")?;
    let (pass, fail) = (stats::counts(df, "n_pass")?, stats::counts(df, "n_fail")?);
    let undetermined = stats::counts(df, "n_undetermined")?;
    let rate = stats::floats(df, "rate")?;
    let (lo, hi) = (stats::floats(df, "lo")?, stats::floats(df, "hi")?);
    Ok((0..df.height())
        .map(|i| Cell {
            model: models[i].clone(),
            kind: kinds.as_ref().map(|k| k[i].clone()),
            turn: turns[i] as usize,
            n_pass: pass[i] as usize,
            n_fail: fail[i] as usize,
            n_undetermined: undetermined[i] as usize,
            rate: rate[i],
            lo: lo[i].unwrap_or(0.0),
            hi: hi[i].unwrap_or(1.0),
        })
        .collect())
}

/// Two runs side by side: the models of `a` then those of `b`, both runs' tables, summed
/// counts. A model name present in both runs becomes "A:name" and "B:name".
pub fn compare(a: &Report, b: &Report) -> Report {
    let clash = |m: &String| a.models.contains(m) && b.models.contains(m);
    let rename = |side: &str, m: &String| {
        if clash(m) {
            format!("{side}:{m}")
        } else {
            m.clone()
        }
    };
    let side = |r: &Report, tag: &str| {
        let mut r = r.clone();
        r.models = r.models.iter().map(|m| rename(tag, m)).collect();
        for c in r.adherence.iter_mut().chain(r.by_kind.iter_mut()) {
            c.model = rename(tag, &c.model);
        }
        for p in &mut r.survival {
            p.model = rename(tag, &p.model);
        }
        r
    };
    let (a2, b2) = (side(a, "A"), side(b, "B"));
    let mut turns: Vec<usize> = a.turns.iter().chain(&b.turns).copied().collect();
    turns.sort_unstable();
    turns.dedup();
    let mut counts = a.counts.clone();
    counts.add(&b.counts);
    Report {
        schema_version: SCHEMA_VERSION,
        meta: serde_json::json!({ "compare": { "A": a.meta, "B": b.meta } }),
        models: a2.models.into_iter().chain(b2.models).collect(),
        turns,
        kinds: sorted_kinds(a.kinds.iter().chain(&b.kinds).cloned()),
        adherence: a2.adherence.into_iter().chain(b2.adherence).collect(),
        by_kind: a2.by_kind.into_iter().chain(b2.by_kind).collect(),
        survival: a2.survival.into_iter().chain(b2.survival).collect(),
        counts,
        scores: Vec::new(),
    }
}

/// Writes `report.json`, `report.md` and `report.html` into `dir` (created if needed),
/// and `scores.jsonl` (one [`ScoredTurn`] per line) when the report holds its rows;
/// each atomically: a failed write (a full disk) leaves the previous file or none, never
/// a partial one.
///
/// # Errors
///
/// An error naming the path when the folder or a file cannot be written.
pub fn write_report(report: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create directory", e))?;
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| Error::runtime(format!("cannot serialize the report: {e}")))?;
    for (name, text) in [
        ("report.json", json + "\n"),
        ("report.md", markdown::render(report)),
        ("report.html", html::render(report)),
    ] {
        let path = dir.join(name);
        gatt::dataset::write_file(&path, text.as_bytes())?;
    }
    if !report.scores.is_empty() {
        let mut lines = String::new();
        for row in &report.scores {
            let line = serde_json::to_string(row)
                .map_err(|e| Error::runtime(format!("cannot serialize a scored row: {e}")))?;
            lines.push_str(&line);
            lines.push('\n');
        }
        gatt::dataset::write_file(&dir.join("scores.jsonl"), lines.as_bytes())?;
    }
    Ok(())
}

/// Reads a `report.json`, given its path or the directory holding it.
///
/// # Errors
///
/// An input error for a missing file, or one that is not JSON, has no `schema_version`
/// or a newer one than [`SCHEMA_VERSION`], or does not fit [`Report`]; a runtime error
/// when an existing file cannot be read.
pub fn read_report(path: &Path) -> Result<Report> {
    let path: PathBuf = if path.is_dir() {
        path.join("report.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, "read", e))?;
    let at = path.display();
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| Error::input(format!("{at}: not valid JSON: {e}")))?;
    match value.get("schema_version").and_then(Value::as_u64) {
        Some(v) if v <= u64::from(SCHEMA_VERSION) => {}
        Some(v) => {
            return Err(Error::input(format!(
                "{at}: report schema_version {v} is newer than this tool reads \
                 ({SCHEMA_VERSION}); update gatt"
            )))
        }
        None => {
            return Err(Error::input(format!(
                "{at}: no `schema_version`: not a gatt report"
            )))
        }
    }
    serde_json::from_value(value).map_err(|e| Error::input(format!("{at}: {e}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ConstraintKind::*;
    use Verdict::*;

    pub(crate) use crate::stats::tests::row as scored;

    /// Two models, two dialogues each, `turns` turns, hobby and language constraints.
    pub(crate) fn sample(turns: usize) -> Report {
        let mut rows = Vec::new();
        for model in ["base", "gatt"] {
            for d in ["d1", "d2"] {
                for t in 1..=turns {
                    let drift = model == "base" && t > 2;
                    rows.push(scored(model, d, t, Hobby, if drift { Fail } else { Pass }));
                    rows.push(scored(model, d, t, Language, Pass));
                }
            }
        }
        let mut odd = scored("gatt", "d1", 1, Other("mood".into()), Undetermined);
        odd.evidence = "cannot check: unknown constraint kind `mood`".into();
        odd.undecided = Some(Undecided::Problem);
        rows.push(odd);
        Report::from_scored(&rows, serde_json::json!({"run": "test"}))
    }

    #[test]
    fn control_rows_are_not_pooled_with_instructed_ones() {
        let control = || Other(user_language::KIND.into());
        let rows = vec![
            scored("m", "d1", 1, Hobby, Pass),
            scored("m", "plain", 1, control(), Fail),
        ];
        let r = Report::from_scored(&rows, serde_json::json!({}));
        assert_eq!(r.cell("m", 1, None).unwrap().rate, Some(1.0));
        assert_eq!(
            r.cell("m", 1, Some(user_language::KIND)).unwrap().rate,
            Some(0.0)
        );
        assert_eq!(r.survival_at("m", 1).unwrap().at_risk, 1);
        let md = markdown::render(&r);
        assert!(
            md.contains("Instruction-free dialogues are not pooled here"),
            "{md}"
        );
        // A control run alone: its rows are the whole table, read as such.
        let r = Report::from_scored(&rows[1..], serde_json::json!({}));
        assert_eq!(r.cell("m", 1, None).unwrap().rate, Some(0.0));
        let md = markdown::render(&r);
        assert!(
            md.contains("in the language of the user's messages"),
            "{md}"
        );
        assert!(!md.contains("kept the instruction"), "{md}");
    }

    #[test]
    fn tables_and_counts() {
        let r = sample(4);
        assert_eq!(r.models, ["base", "gatt"]);
        assert_eq!(r.turns, [1, 2, 3, 4]);
        assert_eq!(r.kinds, ["hobby", "language", "mood"]);
        assert_eq!(r.cell("base", 3, None).unwrap().rate, Some(0.0));
        assert_eq!(r.cell("gatt", 3, Some("hobby")).unwrap().rate, Some(1.0));
        assert_eq!(r.cell("gatt", 1, Some("mood")).unwrap().rate, None);
        assert_eq!(r.survival_at("base", 4).unwrap().adherent, 0.0);
        assert_eq!(r.survival_at("gatt", 4).unwrap().adherent, 1.0);
        assert_eq!(r.counts.checks, 33);
        assert_eq!(r.counts.dialogues, 4);
        assert_eq!(r.counts.undetermined_by_kind["mood"], 1);
        assert_eq!(r.counts.problems.values().sum::<usize>(), 1);
    }

    #[test]
    fn problems_are_counted_by_reason_not_by_text() {
        let mut problem = scored("m", "d", 1, Hobby, Undetermined);
        problem.evidence = "no such hobby".into();
        problem.undecided = Some(Undecided::Problem);
        let mut unclear = scored("m", "d", 1, Language, Undetermined);
        unclear.evidence = "cannot check: looks like a problem, is not one".into();
        let r = Report::from_scored(&[problem, unclear], Value::Null);
        assert_eq!(
            r.counts.problems.keys().collect::<Vec<_>>(),
            ["no such hobby"]
        );
        assert_eq!(r.counts.undetermined, 2);
    }

    #[test]
    fn round_trips_through_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let r = sample(3);
        write_report(&r, dir.path()).unwrap();
        // The rows go to scores.jsonl, one per line, not into report.json.
        let lines = std::fs::read_to_string(dir.path().join("scores.jsonl")).unwrap();
        let rows: Vec<ScoredTurn> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows, r.scores);
        let tables = Report {
            scores: Vec::new(),
            ..r.clone()
        };
        assert_eq!(read_report(dir.path()).unwrap(), tables);
        assert_eq!(
            read_report(&dir.path().join("report.json")).unwrap(),
            tables
        );
        for name in ["report.md", "report.html"] {
            assert!(dir.path().join(name).is_file());
        }
    }

    #[test]
    fn newer_or_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, r#"{"schema_version": 99}"#).unwrap();
        assert!(read_report(&path).unwrap_err().is_input());
        std::fs::write(&path, r#"{"models": []}"#).unwrap();
        assert!(read_report(&path).unwrap_err().is_input());
        assert!(read_report(&dir.path().join("missing.json"))
            .unwrap_err()
            .is_input());
    }

    #[test]
    fn compare_renames_clashing_models() {
        let a = sample(2);
        let mut b = Report::from_scored(
            &[
                scored("gatt", "d1", 1, Hobby, Pass),
                scored("other", "d1", 1, Hobby, Fail),
            ],
            Value::Null,
        );
        b.turns.push(5);
        let c = compare(&a, &b);
        assert_eq!(c.models, ["base", "A:gatt", "B:gatt", "other"]);
        assert_eq!(c.turns, [1, 2, 5]);
        assert_eq!(c.cell("B:gatt", 1, None).unwrap().rate, Some(1.0));
        assert_eq!(c.cell("other", 1, Some("hobby")).unwrap().rate, Some(0.0));
        assert!(c.cell("gatt", 1, None).is_none());
        assert_eq!(c.counts.checks, a.counts.checks + 2);
        assert_eq!(c.meta["compare"]["A"]["run"], "test");
    }

    #[test]
    fn an_empty_run_gives_an_empty_report() {
        let r = Report::from_scored(&[], Value::Null);
        assert!(r.models.is_empty() && r.adherence.is_empty() && r.counts.problems.is_empty());
        assert!(markdown::render(&r).contains("No checks"));
        assert!(html::render(&r).contains("No checks"));
    }
}
