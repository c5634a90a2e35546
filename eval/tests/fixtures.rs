//! Runs the hand-labelled fixtures in `tests/fixtures/checks.jsonl`: one JSON object per
//! line with a constraint, a reply, whether the turn was a probe, the expected verdict
//! and a note saying what the case is about; optionally `language`, the language the
//! same instruction asks for (a hobby is then looked for in that language too). All
//! mismatches are reported at once.

use gatt::catalog::Catalog;
use gatt::{Constraint, ConstraintKind};
use gatt_eval::{check, Verdict};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
struct Fixture {
    constraint: Constraint,
    reply: String,
    probe: bool,
    #[serde(default)]
    language: Option<String>,
    expected: Verdict,
    note: String,
}

fn fixtures() -> Vec<(usize, Fixture)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/checks.jsonl");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let f = serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
            (i + 1, f)
        })
        .collect()
}

#[test]
fn every_fixture_gets_its_hand_label() {
    let catalog = Catalog::builtin();
    let mut wrong = Vec::new();
    for (line, f) in fixtures() {
        let all: Vec<Constraint> = f
            .language
            .iter()
            .map(|l| Constraint::new(ConstraintKind::Language, l))
            .collect();
        let got = check(&f.constraint, &all, &f.reply, &catalog, f.probe);
        if got.verdict != f.expected {
            wrong.push(format!(
                "line {line} ({} {}: {}): expected {}, got {} ({})",
                f.constraint.kind,
                f.constraint.value,
                f.note,
                f.expected,
                got.verdict,
                got.evidence
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} mismatches:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn fixtures_cover_every_kind_and_rule() {
    let mut per_kind: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_rule: BTreeMap<String, usize> = BTreeMap::new();
    for (_, f) in fixtures() {
        *per_kind.entry(f.constraint.kind.to_string()).or_default() += 1;
        if f.constraint.kind == gatt::ConstraintKind::Format {
            *per_rule.entry(f.constraint.value.clone()).or_default() += 1;
        }
    }
    for kind in ["language", "format", "figure", "hobby"] {
        assert!(
            per_kind.get(kind).copied().unwrap_or(0) >= 15,
            "{kind}: {per_kind:?}"
        );
    }
    for rule in Catalog::builtin().formats {
        assert!(
            per_rule.get(&rule.id).copied().unwrap_or(0) >= 2,
            "{}: {per_rule:?}",
            rule.id
        );
    }
}
