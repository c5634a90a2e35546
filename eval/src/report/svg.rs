//! Line charts as inline SVG: a value in [0, 1] against the turn, one line per model.
//!
//! Plain SVG with no script, so the HTML report opens anywhere, offline, and survives
//! being mailed around. Hovering a point shows its exact value (an SVG `<title>`).

use std::fmt::Write;

/// Line colours (the Tableau 10 palette, distinguishable in print and by most
/// colour-blind readers), reused in turn when there are more models.
const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

const WIDTH: f64 = 640.0;
const PLOT_TOP: f64 = 36.0;
const PLOT_HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 20.0;
const LEGEND_ROW: f64 = 18.0;

/// One model's line: `(turn, value, hover text)`; turns without a value are left out.
pub struct Series {
    pub name: String,
    pub points: Vec<(usize, f64, String)>,
}

/// Text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A chart with the given element `id`, `title` and y-axis label, over `turns` (the
/// x axis spans the first to the last), values drawn as percentages.
pub fn line_chart(
    id: &str,
    title: &str,
    y_label: &str,
    turns: &[usize],
    series: &[Series],
) -> String {
    let height = PLOT_TOP + PLOT_HEIGHT + 44.0 + LEGEND_ROW * series.len() as f64;
    let plot_width = WIDTH - LEFT - RIGHT;
    let (first, last) = (
        turns.first().copied().unwrap_or(1),
        turns.last().copied().unwrap_or(1),
    );
    let x = |turn: usize| {
        if last == first {
            LEFT + plot_width / 2.0
        } else {
            LEFT + plot_width * (turn - first) as f64 / (last - first) as f64
        }
    };
    let y = |value: f64| PLOT_TOP + PLOT_HEIGHT * (1.0 - value.clamp(0.0, 1.0));
    let bottom = PLOT_TOP + PLOT_HEIGHT;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg id="{}" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" font-family="sans-serif" font-size="12">"#,
        escape(id)
    );
    let _ = writeln!(s, "<title>{}</title>", escape(title));
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Horizontal grid and y ticks every 25%.
    for pct in [0, 25, 50, 75, 100] {
        let yy = y(f64::from(pct) / 100.0);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy}" x2="{}" y2="{yy}" stroke="#ddd"/>"##,
            WIDTH - RIGHT
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{pct}%</text>"#,
            LEFT - 6.0,
            yy + 4.0
        );
    }
    // Axes.
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" y1="{PLOT_TOP}" x2="{LEFT}" y2="{bottom}" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="black"/>"#,
        WIDTH - RIGHT
    );
    // X ticks: every turn up to 20 turns, else about ten evenly spaced ones.
    let step = if turns.len() <= 20 {
        1
    } else {
        turns.len().div_ceil(10)
    };
    for turn in turns.iter().step_by(step) {
        let xx = format!("{:.1}", x(*turn));
        let _ = writeln!(
            s,
            r#"<line x1="{xx}" y1="{bottom}" x2="{xx}" y2="{}" stroke="black"/>"#,
            bottom + 4.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{xx}" y="{}" text-anchor="middle">{turn}</text>"#,
            bottom + 17.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">turn</text>"#,
        LEFT + plot_width / 2.0,
        bottom + 33.0
    );
    let mid = PLOT_TOP + PLOT_HEIGHT / 2.0;
    let _ = writeln!(
        s,
        r#"<text x="14" y="{mid}" text-anchor="middle" transform="rotate(-90 14 {mid})">{}</text>"#,
        escape(y_label)
    );
    // One line per model, with its points and a legend entry below the plot.
    for (i, line) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = line
            .points
            .iter()
            .map(|(t, v, _)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        for (t, v, hover) in &line.points {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"><title>{}</title></circle>"#,
                x(*t),
                y(*v),
                escape(hover)
            );
        }
        let ly = bottom + 50.0 + LEGEND_ROW * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{LEFT}" y="{}" width="14" height="4" fill="{color}"/>"#,
            ly - 6.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{ly}">{}</text>"#,
            LEFT + 20.0,
            escape(&line.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<a & 'b'>\""), "&lt;a &amp; &#39;b&#39;&gt;&quot;");
    }

    #[test]
    fn one_polyline_per_series_with_one_point_per_value() {
        let series = [
            Series {
                name: "a<b".into(),
                points: vec![(1, 1.0, "x".into()), (2, 0.5, "y".into())],
            },
            Series {
                name: "c".into(),
                points: vec![(2, 0.0, "z".into())],
            },
        ];
        let svg = line_chart("c1", "T", "adherence", &[1, 2], &series);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(r#"points="56.0,36.0 620.0,146.0""#), "{svg}");
        assert!(svg.contains("a&lt;b"));
    }

    #[test]
    fn a_single_turn_sits_in_the_middle() {
        let series = [Series {
            name: "m".into(),
            points: vec![(3, 1.0, String::new())],
        }];
        let svg = line_chart("c", "T", "y", &[3], &series);
        assert!(svg.contains(r#"points="338.0,36.0""#), "{svg}");
    }
}
