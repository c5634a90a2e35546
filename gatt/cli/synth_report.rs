//! The human- and machine-readable report of a synthesis run (`report.md`, `report.json`).

use gatt::catalog::Catalog;
use gatt::dataset::read_all;
use gatt::mask::pipeline::Summary as MaskSummary;
use gatt::{Error, Result};
use gatt_synth::run::RunSummary;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Serialize)]
struct Report<'a> {
    schema_version: u32,
    run: &'a RunSummary,
    dialogues: usize,
    turns: BTreeMap<usize, usize>,
    constraints_by_kind: BTreeMap<String, usize>,
    terse_share: f64,
    tokens_generated: usize,
    mask: Option<&'a MaskSummary>,
}

pub fn write(
    dir: &Path,
    run: &RunSummary,
    mask: Option<&MaskSummary>,
    catalog: &Catalog,
) -> Result<()> {
    let records = read_all(&run.output)?;
    let adherence = adherence_report(&records, catalog, &dir.join("adherence"))?;
    let mut turns = BTreeMap::new();
    let mut kinds = BTreeMap::new();
    let mut terse = 0;
    let mut tokens = 0usize;
    for d in &records {
        *turns.entry(d.turns()).or_insert(0) += 1;
        for c in &d.constraints {
            *kinds.entry(c.kind.to_string()).or_insert(0) += 1;
        }
        terse += usize::from(d.meta.terse == Some(true));
        tokens += d.meta.tokens_generated();
    }
    let report = Report {
        schema_version: 1,
        run,
        dialogues: records.len(),
        turns,
        constraints_by_kind: kinds,
        terse_share: terse as f64 / records.len().max(1) as f64,
        tokens_generated: tokens,
        mask,
    };
    let json_path = dir.join("report.json");
    let mut f = gatt::dataset::AtomicFile::create(&json_path)?;
    serde_json::to_writer_pretty(f.writer(), &report)
        .map_err(|e| Error::runtime(format!("{}: {e}", json_path.display())))?;
    f.commit()?;

    let mut md = String::new();
    md.push_str("# GAtt synthesis report\n\n");
    md.push_str(&format!(
        "- dialogues: {} ({} resumed), written to `{}`\n- wall time: {:.1} s; reply tokens: {} ({:.1} tokens/s)\n- terse instructions: {:.0}%\n",
        report.dialogues,
        run.progress.dialogues_resumed,
        run.output.file_name().unwrap_or_default().to_string_lossy(),
        run.seconds,
        tokens,
        tokens as f64 / run.seconds.max(1e-3),
        100.0 * report.terse_share
    ));
    md.push_str("\n| constraint kind | dialogues |\n|---|---|\n");
    for (k, n) in &report.constraints_by_kind {
        md.push_str(&format!("| {k} | {n} |\n"));
    }
    md.push_str(&gate_section(&run.gate));
    if let Some(m) = mask {
        md.push_str(&format!(
            "\n## Masks\n\n- samples: {} from {} records\n- tokens: {}, with loss: {} ({:.1}%)\n",
            m.samples,
            m.records,
            m.tokens,
            m.loss_tokens,
            100.0 * m.loss_tokens as f64 / m.tokens.max(1) as f64
        ));
        for (reason, n) in &m.skipped {
            md.push_str(&format!("- skipped ({reason}): {n}\n"));
        }
    }
    md.push_str(
        "\n## Adherence of the sampled replies\n\nHow often the model kept the instruction while \
         it was attached to every user turn (the replies this dataset trains on); details in \
         `adherence/report.html`.\n\n",
    );
    md.push_str(&adherence);
    if let Some(d) = records.first() {
        md.push_str("\n## First dialogue\n\n");
        md.push_str(&format!(
            "Instruction: `{}`\n\n",
            d.instruction.replace('`', "'")
        ));
        for m in &d.messages {
            md.push_str(&format!(
                "- **{}**: {}\n",
                m.role.as_str(),
                m.content.replace('\n', " ")
            ));
        }
    }
    let md_path = dir.join("report.md");
    let mut f = gatt::dataset::AtomicFile::create(&md_path)?;
    std::io::Write::write_all(f.writer(), md.as_bytes())
        .map_err(|e| Error::io(&md_path, "write", e))?;
    f.commit()
}

/// What the quality gate rejected, as Markdown.
fn gate_section(g: &gatt_synth::GateCounts) -> String {
    let mut md = format!(
        "\n## Quality gate\n\nEvery sampled reply is checked: cut at the token limit, empty, \
         repetitive, or in the wrong script are rejected; a turn whose candidates are all \
         rejected is sampled again, then its dialogue is dropped.\n\n\
         - dialogues kept: {} of {}; dropped: {}\n- turns sampled again: {}\n",
        g.kept,
        g.dialogues,
        g.dropped_total(),
        g.resampled_turns
    );
    if g.resampled_for_adherence > 0 {
        md.push_str(&format!(
            "- turns sampled again because the kept reply fell below `--min-adherence`: {}\n",
            g.resampled_for_adherence
        ));
    }
    if g.kept_without_end_of_turn > 0 {
        md.push_str(&format!(
            "- kept with a cut final reply trained without its end-of-turn token: {}\n",
            g.kept_without_end_of_turn
        ));
    }
    if g.kept_cut > 0 {
        md.push_str(&format!(
            "- kept with a cut reply as it is (`--cut-replies keep`): {}\n",
            g.kept_cut
        ));
    }
    let j = &g.judge;
    if j.questions > 0 {
        md.push_str(&format!(
            "- judge model (hobby, figure, persona): {} candidates judged, {} rejected (a no \
             on at least one); {} questions: {} yes, {} no, {} neither; it changed the kept \
             reply of {} turns\n",
            j.candidates_judged,
            j.candidates_rejected,
            j.questions,
            j.yes,
            j.no,
            j.neither,
            j.picks_changed
        ));
    }
    md.push_str("\n| reason | candidates rejected | dialogues dropped |\n|---|---|---|\n");
    for r in [
        gatt_synth::Rejection::Cut,
        gatt_synth::Rejection::Empty,
        gatt_synth::Rejection::Repetitive,
        gatt_synth::Rejection::WrongScript,
        gatt_synth::Rejection::WrongLanguage,
        gatt_synth::Rejection::BreaksCharacter,
        gatt_synth::Rejection::LowAdherence,
    ] {
        let n = |m: &std::collections::BTreeMap<gatt_synth::Rejection, usize>| {
            m.get(&r).copied().unwrap_or(0)
        };
        md.push_str(&format!(
            "| {} | {} | {} |\n",
            r.as_str(),
            n(&g.candidates_rejected),
            n(&g.dropped)
        ));
    }
    md
}

/// Scores the replies as they were sampled (the augmented conversation) and writes the
/// evaluator's report; returns its Markdown for inclusion.
fn adherence_report(records: &[gatt::Dialogue], catalog: &Catalog, out: &Path) -> Result<String> {
    let mut rows = Vec::new();
    for d in records {
        let mut sampled = d.clone();
        if let Some(aug) = &d.meta.augmented {
            sampled.messages = aug.clone();
        }
        rows.extend(gatt_eval::score_dialogue(&sampled, catalog));
    }
    let report = gatt_eval::Report::from_scored(&rows, serde_json::json!({"source": "gatt synth"}));
    gatt_eval::write_report(&report, out)?;
    Ok(std::fs::read_to_string(out.join("report.md")).unwrap_or_default())
}
