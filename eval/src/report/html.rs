//! `report.html`: the Markdown report's tables plus charts, in one self-contained file
//! (inline CSS and SVG; no script, no external resource).
//!
//! Charts: adherence to the whole instruction, then adherence per constraint kind (one
//! chart each, with element id `chart-<kind>`), then survival.

use super::svg::{self, escape, Series};
use super::tables::{self, Table};
use super::Report;
use std::fmt::Write;

const STYLE: &str = "body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}\
td:first-child,th:first-child{text-align:right}th{background:#f4f4f4}\
.legend{color:#555;font-size:.9rem}pre{background:#f8f8f8;padding:.5rem;overflow:auto}";

fn table(t: &Table) -> String {
    let mut s = String::from("<table>\n<tr>");
    for h in &t.header {
        let _ = write!(s, "<th>{}</th>", escape(h));
    }
    s.push_str("</tr>\n");
    for row in &t.rows {
        s.push_str("<tr>");
        for c in row {
            let _ = write!(s, "<td>{}</td>", escape(c));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    s
}

/// One line per model through its adherence cells (`kind` None: the whole instruction).
fn adherence_series(r: &Report, kind: Option<&str>) -> Vec<Series> {
    r.models
        .iter()
        .map(|m| Series {
            name: m.clone(),
            points: r
                .turns
                .iter()
                .filter_map(|&t| {
                    let c = r.cell(m, t, kind)?;
                    Some((t, c.rate?, format!("{m}, turn {t}: {}", c.summary())))
                })
                .collect(),
        })
        .collect()
}

fn survival_series(r: &Report) -> Vec<Series> {
    r.models
        .iter()
        .map(|m| Series {
            name: m.clone(),
            points: r
                .turns
                .iter()
                .filter_map(|&t| {
                    let p = r.survival_at(m, t)?;
                    let hover = format!("{m}, turn {t}: {:.0}% adherent", p.adherent * 100.0);
                    Some((t, p.adherent, hover))
                })
                .collect(),
        })
        .collect()
}

/// A chart id: the kind with anything but letters, digits and `-` replaced.
fn chart_id(kind: &str) -> String {
    let safe: String = kind
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("chart-{safe}")
}

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n");
    let _ = writeln!(
        s,
        "<title>Instruction adherence per turn</title>\n<style>{STYLE}</style>\n</head>\n<body>"
    );
    s.push_str("<h1>Instruction adherence per turn</h1>\n");
    let _ = writeln!(s, "<p>{}</p>", escape(&tables::summary(r)));
    if r.counts.checks > 0 {
        let _ = writeln!(
            s,
            "<p class=\"legend\">{}</p>",
            escape(tables::adherence_legend(r))
        );
        s.push_str("<h2>All constraints</h2>\n");
        if let Some(note) = tables::pooling_note(r) {
            let _ = writeln!(s, "<p>{}</p>", escape(&note));
        }
        s.push_str(&svg::line_chart(
            "chart-all",
            "All constraints",
            "adherence",
            &r.turns,
            &adherence_series(r, None),
        ));
        s.push_str(&table(&tables::adherence(r, None)));
        for kind in &r.kinds {
            let _ = writeln!(s, "<h2>{}</h2>", escape(kind));
            s.push_str(&svg::line_chart(
                &chart_id(kind),
                kind,
                "adherence",
                &r.turns,
                &adherence_series(r, Some(kind)),
            ));
            s.push_str(&table(&tables::adherence(r, Some(kind))));
        }
        s.push_str("<h2>Survival</h2>\n");
        let _ = writeln!(
            s,
            "<p class=\"legend\">{}</p>",
            escape(tables::SURVIVAL_LEGEND)
        );
        s.push_str(&svg::line_chart(
            "chart-survival",
            "Dialogues with no failure yet",
            "adherent",
            &r.turns,
            &survival_series(r),
        ));
        s.push_str(&table(&tables::survival(r)));
    }
    s.push_str("<h2>Undetermined checks and problems</h2>\n<ul>\n");
    let _ = writeln!(s, "<li>Undetermined checks: {}</li>", r.counts.undetermined);
    for (kind, n) in &r.counts.undetermined_by_kind {
        let _ = writeln!(s, "<li>undetermined {}: {n}</li>", escape(kind));
    }
    for (problem, n) in &r.counts.problems {
        let _ = writeln!(s, "<li>problem: {} ({n}×)</li>", escape(problem));
    }
    s.push_str("</ul>\n");
    let meta = serde_json::to_string_pretty(&r.meta).unwrap_or_default();
    let _ = writeln!(
        s,
        "<details><summary>Run metadata</summary><pre>{}</pre></details>",
        escape(&meta)
    );
    s.push_str("</body>\n</html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample;

    /// Checks that every tag is closed in order; returns the element names opened.
    fn balanced(html: &str) -> Result<Vec<String>, String> {
        let mut stack: Vec<String> = Vec::new();
        let mut opened = Vec::new();
        let mut rest = html;
        while let Some(start) = rest.find('<') {
            rest = &rest[start + 1..];
            let end = rest.find('>').ok_or("unterminated tag")?;
            let tag = &rest[..end];
            rest = &rest[end + 1..];
            if tag.starts_with('!') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                match stack.pop() {
                    Some(open) if open == name.trim() => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
                continue;
            }
            let name: String = tag
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '/')
                .collect();
            opened.push(name.clone());
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        if stack.is_empty() {
            Ok(opened)
        } else {
            Err(format!("unclosed: {stack:?}"))
        }
    }

    #[test]
    fn well_formed_with_one_chart_per_kind() {
        let turns = 5;
        let r = sample(turns);
        let html = render(&r);
        let opened = balanced(&html).unwrap();
        let svgs = opened.iter().filter(|n| *n == "svg").count();
        // The whole instruction, each kind, survival.
        assert_eq!(svgs, r.kinds.len() + 2);
        for kind in &r.kinds {
            assert!(
                html.contains(&format!("id=\"{}\"", chart_id(kind))),
                "{kind}"
            );
        }
        // Every decided turn is a point: hobby's line for "gatt" has one per turn.
        let hobby = &html[html.find("id=\"chart-hobby\"").unwrap()..];
        let hobby = &hobby[..hobby.find("</svg>").unwrap()];
        for points in hobby.split("points=\"").skip(1) {
            let points = &points[..points.find('"').unwrap()];
            assert_eq!(points.split(' ').count(), turns, "{points}");
        }
        // Self-contained: no script, no linked resource.
        assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
    }

    #[test]
    fn names_are_escaped() {
        let mut r = sample(2);
        r.models[0] = "<script>alert(1)</script>".into();
        let html = render(&r);
        assert!(!html.contains("<script>"));
        assert!(balanced(&html).is_ok());
    }

    /// Renders a report in headless Chromium when it is installed (Debian: `chromium`):
    /// the page loads without console errors, every chart survives into the rendered
    /// DOM, and a screenshot is drawn. Without Chromium only the structural checks above
    /// run, and this test says so on stderr.
    #[test]
    fn renders_in_headless_chromium() {
        let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|b| {
                std::process::Command::new(b)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
        else {
            eprintln!(
                "headless Chromium not installed: rendering not checked (structural checks only)"
            );
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("report.html");
        let html = render(&sample(6));
        std::fs::write(&page, &html).unwrap();
        let url = format!("file://{}", page.display());
        let run = |extra: &[&str]| {
            std::process::Command::new(chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--enable-logging=stderr",
                    "--v=0",
                ])
                .args(extra)
                .arg(&url)
                .output()
                .unwrap()
        };
        let dom = run(&["--dump-dom"]);
        assert!(
            dom.status.success(),
            "{}",
            String::from_utf8_lossy(&dom.stderr)
        );
        let rendered = String::from_utf8_lossy(&dom.stdout);
        assert_eq!(
            rendered.matches("<svg").count(),
            html.matches("<svg").count()
        );
        assert!(rendered.contains("<polyline"));
        let log = String::from_utf8_lossy(&dom.stderr);
        assert!(
            !log.contains("CONSOLE") && !log.contains("Uncaught"),
            "{log}"
        );
        let png = dir.path().join("shot.png");
        let shot = run(&[
            &format!("--screenshot={}", png.display()),
            "--window-size=1000,2400",
        ]);
        assert!(
            shot.status.success(),
            "{}",
            String::from_utf8_lossy(&shot.stderr)
        );
        let bytes = std::fs::read(&png).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{} bytes",
            bytes.len()
        );
    }
}
