//! The report's tables as plain text cells, shared by the Markdown and HTML renderers:
//! rows are turns, columns are models (the layout of the paper's Table 30).

use super::Report;

pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

fn header(r: &Report) -> Vec<String> {
    std::iter::once("turn".to_string())
        .chain(r.models.iter().cloned())
        .collect()
}

/// Adherence with 95% intervals, for the whole instruction (`kind` None) or one kind.
pub fn adherence(r: &Report, kind: Option<&str>) -> Table {
    let rows = r
        .turns
        .iter()
        .map(|&turn| {
            std::iter::once(turn.to_string())
                .chain(r.models.iter().map(|m| {
                    r.cell(m, turn, kind)
                        .map_or_else(|| "–".to_string(), |c| c.summary())
                }))
                .collect()
        })
        .collect();
    Table {
        header: header(r),
        rows,
    }
}

/// Fraction of dialogues still adherent, and how many were at risk.
pub fn survival(r: &Report) -> Table {
    let rows = r
        .turns
        .iter()
        .map(|&turn| {
            std::iter::once(turn.to_string())
                .chain(r.models.iter().map(|m| {
                    r.survival_at(m, turn).map_or_else(
                        || "–".to_string(),
                        |p| format!("{:.0}% ({} at risk)", p.adherent * 100.0, p.at_risk),
                    )
                }))
                .collect()
        })
        .collect();
    Table {
        header: header(r),
        rows,
    }
}

/// Under "All constraints" when instructed and instruction-free dialogues are mixed:
/// the latter's `user_language` rows have their own table.
pub fn pooling_note(r: &Report) -> Option<String> {
    let kind = crate::checks::user_language::KIND;
    (r.kinds.len() > 1 && r.kinds.iter().any(|k| k == kind)).then(|| {
        format!(
            "Instruction-free dialogues are not pooled here: their replies are checked \
             against the user's language in the `{kind}` table."
        )
    })
}

/// One sentence on what the report covers.
pub fn summary(r: &Report) -> String {
    let c = &r.counts;
    if c.checks == 0 {
        return "No checks were scored.".to_string();
    }
    let turns = match (r.turns.first(), r.turns.last()) {
        (Some(a), Some(b)) if a != b => format!("turns {a}–{b}"),
        (Some(a), _) => format!("turn {a}"),
        _ => String::new(),
    };
    format!(
        "{} model(s), {} dialogue(s), {turns}: {} checks ({} pass, {} fail, {} undetermined{}).",
        r.models.len(),
        c.dialogues,
        c.checks,
        c.pass,
        c.fail,
        c.undetermined,
        if c.judged > 0 {
            format!(", {} by a judge model", c.judged)
        } else {
            String::new()
        }
    )
}

/// How to read an adherence cell.
pub const ADHERENCE_LEGEND: &str = "Each cell: share of dialogues whose reply at this turn \
    kept the instruction, among those a check could decide; [95% Wilson interval]; n = \
    decided dialogues. A turn fails when any constraint failed.";

/// How to read an adherence cell of a control run (only instruction-free dialogues).
pub const CONTROL_LEGEND: &str = "Each cell: share of instruction-free dialogues whose reply \
    at this turn was in the language of the user's messages, among those whose reply and \
    messages were long enough to tell; [95% Wilson interval]; n = decided dialogues.";

/// The legend of the adherence tables of `r`.
pub fn adherence_legend(r: &Report) -> &'static str {
    if r.kinds == [crate::checks::user_language::KIND] {
        CONTROL_LEGEND
    } else {
        ADHERENCE_LEGEND
    }
}

pub const SURVIVAL_LEGEND: &str = "Share of dialogues with no failure up to and including \
    the turn (Kaplan-Meier), and how many dialogues were still observed without a failure.";
