//! Adherence statistics over scored turns, as polars DataFrames.
//!
//! The unit is a dialogue at a turn. A dialogue's turn passes when no constraint failed
//! and at least one was decided, fails when any constraint failed, and is undetermined
//! otherwise: adherence means keeping the whole instruction, and several checks of one
//! reply are not independent samples. Per-kind tables apply the same rule to the
//! constraints of one kind.
//!
//! Rates count decided turns only: `rate = pass / (pass + fail)`, with a 95% Wilson
//! interval, which stays inside [0, 1] and behaves at 0% and 100% where the normal
//! approximation collapses to a zero-width interval.

use crate::checks::Verdict;
use crate::protocol::ScoredTurn;
use gatt::Result;
use polars::prelude::*;
use std::collections::HashMap;

/// The normal quantile of a two-sided 95% interval.
pub const Z95: f64 = 1.96;

/// The 95% Wilson score interval of `pass` successes in `n` trials. With no trials the
/// interval is all of [0, 1].
pub fn wilson(pass: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n) = (pass.min(n) as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let denominator = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denominator;
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// One row per check: `model`, `dialogue`, `turn`, `kind`, and 0/1 indicator columns
/// `pass`, `fail`, `undetermined` (indicators sum where verdicts would need decoding).
pub fn frame(rows: &[ScoredTurn]) -> Result<DataFrame> {
    let is = |v: Verdict| -> Vec<u32> { rows.iter().map(|r| u32::from(r.verdict == v)).collect() };
    let df = DataFrame::new_infer_height(vec![
        Column::new(
            "model".into(),
            rows.iter().map(|r| r.model.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "dialogue".into(),
            rows.iter().map(|r| r.dialogue.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "turn".into(),
            rows.iter().map(|r| r.turn as u32).collect::<Vec<_>>(),
        ),
        Column::new(
            "kind".into(),
            rows.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(),
        ),
        Column::new("pass".into(), is(Verdict::Pass)),
        Column::new("fail".into(), is(Verdict::Fail)),
        Column::new("undetermined".into(), is(Verdict::Undetermined)),
    ])?;
    Ok(df)
}

const INDICATORS: [&str; 3] = ["pass", "fail", "undetermined"];

/// Sums of the indicator columns per group of `keys`, renamed back to the indicators.
#[allow(deprecated)] // eager aggregation: the lazy engine is not compiled into this workspace
fn sum_by(df: &DataFrame, keys: &[&str]) -> Result<DataFrame> {
    let mut sums = df.group_by_stable(keys)?.select(INDICATORS).sum()?;
    for name in INDICATORS {
        sums.rename(&format!("{name}_sum"), name.into())?;
    }
    Ok(sums)
}

/// One verdict per (`keys`, dialogue): fail if any check failed, else pass if any
/// passed, else undetermined. Same columns as [`frame`], restricted to the keys.
pub fn dialogue_verdicts(scored: &DataFrame, keys: &[&str]) -> Result<DataFrame> {
    let mut by = keys.to_vec();
    by.push("dialogue");
    let mut df = sum_by(scored, &by)?;
    let (pass, fail) = (counts(&df, "pass")?, counts(&df, "fail")?);
    let verdict: Vec<Verdict> = pass
        .iter()
        .zip(&fail)
        .map(|(&p, &f)| match (p, f) {
            (_, f) if f > 0 => Verdict::Fail,
            (p, _) if p > 0 => Verdict::Pass,
            _ => Verdict::Undetermined,
        })
        .collect();
    for (name, v) in
        INDICATORS
            .into_iter()
            .zip([Verdict::Pass, Verdict::Fail, Verdict::Undetermined])
    {
        let column: Vec<u32> = verdict.iter().map(|x| u32::from(*x == v)).collect();
        df.with_column(Column::new(name.into(), column))?;
    }
    Ok(df)
}

/// Adherence per model and turn (and kind, when `by_kind`): `n_pass`, `n_fail`,
/// `n_undetermined` dialogues, `rate` (null when none was decided), Wilson `lo` and `hi`.
/// Sorted by model, then kind (when `by_kind`), then turn.
pub fn adherence(scored: &DataFrame, by_kind: bool) -> Result<DataFrame> {
    let keys: &[&str] = if by_kind {
        &["model", "kind", "turn"]
    } else {
        &["model", "turn"]
    };
    let mut df = sum_by(&dialogue_verdicts(scored, keys)?, keys)?;
    for name in INDICATORS {
        df.rename(name, format!("n_{name}").into())?;
    }
    let (pass, fail) = (counts(&df, "n_pass")?, counts(&df, "n_fail")?);
    let mut rate = Vec::with_capacity(pass.len());
    let (mut lo, mut hi) = (
        Vec::with_capacity(pass.len()),
        Vec::with_capacity(pass.len()),
    );
    for (&p, &f) in pass.iter().zip(&fail) {
        let n = (p + f) as usize;
        rate.push((n > 0).then(|| p as f64 / n as f64));
        let (l, h) = wilson(p as usize, n);
        lo.push(l);
        hi.push(h);
    }
    df.with_column(Column::new("rate".into(), rate))?;
    df.with_column(Column::new("lo".into(), lo))?;
    df.with_column(Column::new("hi".into(), hi))?;
    Ok(df.sort(keys.iter().copied(), SortMultipleOptions::default())?)
}

/// How long each dialogue kept its instruction: `model`, `dialogue`, `first_failure`
/// (the first turn whose verdict is fail; null when none, i.e. censored) and `last_turn`
/// (the last turn observed).
pub fn first_failures(scored: &DataFrame) -> Result<DataFrame> {
    let turns = dialogue_verdicts(scored, &["model", "turn"])?;
    let models = strings(&turns, "model")?;
    let dialogues = strings(&turns, "dialogue")?;
    let turn = counts(&turns, "turn")?;
    let fail = counts(&turns, "fail")?;
    // (model, dialogue) -> (first failure, last turn), in order of first appearance.
    let mut order: Vec<(String, String)> = Vec::new();
    let mut seen: HashMap<(String, String), (Option<u32>, u32)> = HashMap::new();
    for i in 0..turns.height() {
        let key = (models[i].clone(), dialogues[i].clone());
        let entry = seen.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            (None, 0)
        });
        if fail[i] > 0 {
            entry.0 = Some(entry.0.map_or(turn[i], |f| f.min(turn[i])));
        }
        entry.1 = entry.1.max(turn[i]);
    }
    let first: Vec<Option<u32>> = order.iter().map(|k| seen[k].0).collect();
    let last: Vec<u32> = order.iter().map(|k| seen[k].1).collect();
    let df = DataFrame::new_infer_height(vec![
        Column::new(
            "model".into(),
            order.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "dialogue".into(),
            order.iter().map(|k| k.1.as_str()).collect::<Vec<_>>(),
        ),
        Column::new("first_failure".into(), first),
        Column::new("last_turn".into(), last),
    ])?;
    Ok(df)
}

/// The survival curve per model: at each observed turn, `at_risk` (dialogues observed
/// this far without a failure before), `failed` (first failures at this turn) and
/// `adherent`, the Kaplan-Meier estimate of the fraction of dialogues with no failure
/// up to and including the turn. With dialogues of equal length this is simply the
/// fraction that has not failed yet; shorter dialogues leave the risk set uncounted
/// instead of counting as adherent.
pub fn survival(scored: &DataFrame) -> Result<DataFrame> {
    let dialogues = first_failures(scored)?;
    let models = strings(&dialogues, "model")?;
    let first: Vec<Option<u32>> = dialogues.column("first_failure")?.u32()?.iter().collect();
    let last = counts(&dialogues, "last_turn")?;
    let mut turns_seen: Vec<u32> = counts(scored, "turn")?;
    turns_seen.sort_unstable();
    turns_seen.dedup();

    let mut model_names: Vec<&str> = Vec::new();
    for m in &models {
        if !model_names.contains(&m.as_str()) {
            model_names.push(m);
        }
    }
    let (mut out_model, mut out_turn) = (Vec::new(), Vec::new());
    let (mut out_risk, mut out_failed, mut out_adherent) = (Vec::new(), Vec::new(), Vec::new());
    for model in model_names {
        let mine: Vec<usize> = (0..models.len()).filter(|&i| models[i] == model).collect();
        let mut adherent = 1.0;
        for &t in &turns_seen {
            let at_risk = mine
                .iter()
                .filter(|&&i| last[i] >= t && first[i].is_none_or(|f| f >= t))
                .count();
            let failed = mine.iter().filter(|&&i| first[i] == Some(t)).count();
            if at_risk > 0 {
                adherent *= 1.0 - failed as f64 / at_risk as f64;
            }
            out_model.push(model);
            out_turn.push(t);
            out_risk.push(at_risk as u32);
            out_failed.push(failed as u32);
            out_adherent.push(adherent);
        }
    }
    let df = DataFrame::new_infer_height(vec![
        Column::new("model".into(), out_model),
        Column::new("turn".into(), out_turn),
        Column::new("at_risk".into(), out_risk),
        Column::new("failed".into(), out_failed),
        Column::new("adherent".into(), out_adherent),
    ])?;
    Ok(df)
}

/// A count column as `u32`s (nulls as 0).
pub fn counts(df: &DataFrame, name: &str) -> Result<Vec<u32>> {
    let column = df.column(name)?.cast(&DataType::UInt32)?;
    Ok(column.u32()?.iter().map(|v| v.unwrap_or(0)).collect())
}

/// A string column (nulls as "").
pub fn strings(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    Ok(df
        .column(name)?
        .str()?
        .iter()
        .map(|v| v.unwrap_or_default().to_string())
        .collect())
}

/// A float column (nulls as `None`).
pub fn floats(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>> {
    Ok(df.column(name)?.f64()?.iter().collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::checks::Undecided;
    use gatt::ConstraintKind;

    fn close(a: (f64, f64), b: (f64, f64)) -> bool {
        (a.0 - b.0).abs() < 5e-5 && (a.1 - b.1).abs() < 5e-5
    }

    /// Values worked by hand from the formula with z = 1.96 (z^2 = 3.8416):
    /// 8/10: center (0.8 + 0.19208) / 1.38416 = 0.71673,
    ///       half 1.96 * sqrt(0.016 + 0.009604) / 1.38416 = 0.22658.
    /// 0/10: center = half = 0.19208 / 1.38416 = 0.13877.
    /// 5/10: half 1.96 * sqrt(0.025 + 0.009604) / 1.38416 = 0.26341 around 0.5.
    /// 1/1:  center 2.9208 / 4.8416 = 0.60327, half 1.96 * 0.98 / 4.8416 = 0.39673.
    #[test]
    fn wilson_matches_hand_computed_values() {
        assert!(
            close(wilson(8, 10), (0.4902, 0.9433)),
            "{:?}",
            wilson(8, 10)
        );
        assert!(close(wilson(0, 10), (0.0, 0.2775)), "{:?}", wilson(0, 10));
        assert!(close(wilson(10, 10), (0.7225, 1.0)), "{:?}", wilson(10, 10));
        assert!(
            close(wilson(5, 10), (0.2366, 0.7634)),
            "{:?}",
            wilson(5, 10)
        );
        assert!(close(wilson(1, 1), (0.2065, 1.0)), "{:?}", wilson(1, 1));
        assert_eq!(wilson(0, 0), (0.0, 1.0));
    }

    pub(crate) fn row(
        model: &str,
        d: &str,
        turn: usize,
        kind: ConstraintKind,
        v: Verdict,
    ) -> ScoredTurn {
        ScoredTurn {
            model: model.into(),
            dialogue: d.into(),
            turn,
            kind,
            value: String::new(),
            verdict: v,
            evidence: String::new(),
            undecided: (v == Verdict::Undetermined).then_some(Undecided::Unclear),
            judge: false,
        }
    }

    #[test]
    fn a_dialogue_turn_fails_when_any_constraint_fails() {
        use ConstraintKind::*;
        use Verdict::*;
        let rows = [
            row("m", "a", 1, Hobby, Pass),
            row("m", "a", 1, Language, Fail),
            row("m", "b", 1, Hobby, Pass),
            row("m", "b", 1, Language, Undetermined),
            row("m", "c", 1, Hobby, Undetermined),
        ];
        let df = adherence(&frame(&rows).unwrap(), false).unwrap();
        assert_eq!(counts(&df, "n_pass").unwrap(), [1]);
        assert_eq!(counts(&df, "n_fail").unwrap(), [1]);
        assert_eq!(counts(&df, "n_undetermined").unwrap(), [1]);
        assert_eq!(floats(&df, "rate").unwrap(), [Some(0.5)]);

        let by_kind = adherence(&frame(&rows).unwrap(), true).unwrap();
        assert_eq!(strings(&by_kind, "kind").unwrap(), ["hobby", "language"]);
        assert_eq!(floats(&by_kind, "rate").unwrap(), [Some(1.0), Some(0.0)]);
    }

    #[test]
    fn survival_follows_first_failures() {
        use Verdict::*;
        let k = ConstraintKind::Figure;
        // a fails at 2; b never fails; c fails at 3; d is observed for one turn only.
        let mut rows = Vec::new();
        for t in 1..=3 {
            rows.push(row(
                "m",
                "a",
                t,
                k.clone(),
                if t == 2 { Fail } else { Pass },
            ));
            rows.push(row("m", "b", t, k.clone(), Pass));
            rows.push(row(
                "m",
                "c",
                t,
                k.clone(),
                if t == 3 { Fail } else { Undetermined },
            ));
        }
        rows.push(row("m", "d", 1, k.clone(), Pass));
        let scored = frame(&rows).unwrap();

        let ff = first_failures(&scored).unwrap();
        let first: Vec<Option<u32>> = ff
            .column("first_failure")
            .unwrap()
            .u32()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(first, [Some(2), None, Some(3), None]);
        assert_eq!(counts(&ff, "last_turn").unwrap(), [3, 3, 3, 1]);

        let s = survival(&scored).unwrap();
        assert_eq!(counts(&s, "turn").unwrap(), [1, 2, 3]);
        assert_eq!(counts(&s, "at_risk").unwrap(), [4, 3, 2]);
        assert_eq!(counts(&s, "failed").unwrap(), [0, 1, 1]);
        // 1, then 1 * (1 - 1/3), then 2/3 * (1 - 1/2).
        let adherent: Vec<f64> = floats(&s, "adherent")
            .unwrap()
            .into_iter()
            .flatten()
            .collect();
        let expected = [1.0, 2.0 / 3.0, 1.0 / 3.0];
        assert!(
            adherent
                .iter()
                .zip(expected)
                .all(|(a, e)| (a - e).abs() < 1e-12),
            "{adherent:?}"
        );
    }

    #[test]
    fn no_rows_give_empty_tables() {
        let scored = frame(&[]).unwrap();
        assert_eq!(adherence(&scored, true).unwrap().height(), 0);
        assert_eq!(survival(&scored).unwrap().height(), 0);
    }
}
