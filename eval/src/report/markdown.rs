//! `report.md`: the adherence tables in Markdown, readable in a terminal and on GitHub.

use super::tables::{self, Table};
use super::Report;
use std::fmt::Write;

/// A table cell: pipes and line breaks would break the row.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn table(t: &Table) -> String {
    let mut s = String::new();
    let header: Vec<String> = t.header.iter().map(|h| cell(h)).collect();
    let _ = writeln!(s, "| {} |", header.join(" | "));
    let align: Vec<&str> = (0..t.header.len())
        .map(|i| if i == 0 { "---:" } else { ":---" })
        .collect();
    let _ = writeln!(s, "| {} |", align.join(" | "));
    for row in &t.rows {
        let row: Vec<String> = row.iter().map(|c| cell(c)).collect();
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    s
}

pub fn render(r: &Report) -> String {
    let mut s = String::from("# Instruction adherence per turn\n\n");
    let _ = writeln!(s, "{}\n", tables::summary(r));
    if r.counts.checks > 0 {
        let _ = writeln!(s, "{}\n", tables::adherence_legend(r));
        s.push_str("## All constraints\n\n");
        if let Some(note) = tables::pooling_note(r) {
            let _ = writeln!(s, "{note}\n");
        }
        let _ = writeln!(s, "{}", table(&tables::adherence(r, None)));
        for kind in &r.kinds {
            let _ = writeln!(
                s,
                "## {}\n\n{}",
                cell(kind),
                table(&tables::adherence(r, Some(kind)))
            );
        }
        let _ = writeln!(
            s,
            "## Survival\n\n{}\n\n{}",
            tables::SURVIVAL_LEGEND,
            table(&tables::survival(r))
        );
    }
    s.push_str("## Undetermined checks and problems\n\n");
    let undetermined: Vec<String> = r
        .counts
        .undetermined_by_kind
        .iter()
        .map(|(k, n)| format!("{} {n}", cell(k)))
        .collect();
    let _ = writeln!(
        s,
        "Undetermined checks: {} ({}).\n",
        r.counts.undetermined,
        if undetermined.is_empty() {
            "none".to_string()
        } else {
            undetermined.join(", ")
        }
    );
    if let Some(n) = r.meta["not_scored"]["instruction_without_constraints"].as_u64() {
        let ids: Vec<String> = r.meta["not_scored"]["ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(cell))
            .collect();
        let _ = writeln!(
            s,
            "Records not scored: {n} with an instruction (the `instruction` field or a system \
             message) but no `constraints` to check it by (e.g. {}).\n",
            ids.join(", ")
        );
    }
    if r.counts.problems.is_empty() {
        s.push_str(
            "No problems: every check could run (a check that ran may still be undetermined, \
             counted above).\n",
        );
    } else {
        s.push_str("Constraints that could not be checked:\n\n");
        for (problem, n) in &r.counts.problems {
            let _ = writeln!(s, "- {} ({n}×)", cell(problem));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample;

    #[test]
    fn table_30_layout() {
        let md = render(&sample(3));
        assert!(md.contains("| turn | base | gatt |"), "{md}");
        assert!(
            md.contains("| 3 | 0% [0–66] n=2 | 100% [34–100] n=2 |"),
            "{md}"
        );
        assert!(md.contains("## hobby") && md.contains("## language") && md.contains("## mood"));
        assert!(md.contains("unknown constraint kind `mood` (1×)"), "{md}");
    }

    #[test]
    fn pipes_in_names_are_escaped() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }
}
