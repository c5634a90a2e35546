//! The loss curve as a self-contained HTML page with an SVG chart.

use std::fmt::Write;

/// (step, loss) points; a moving average is drawn over the raw curve.
pub fn html(title: &str, points: &[(usize, f64)]) -> String {
    let (w, h, m) = (720.0, 360.0, 48.0);
    let mut svg = String::new();
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let (x0, x1) = (first.0 as f64, (last.0 as f64).max(first.0 as f64 + 1.0));
        let finite = points.iter().map(|p| p.1).filter(|v| v.is_finite());
        let lo = finite.clone().fold(f64::INFINITY, f64::min).min(0.0);
        let hi = finite.fold(f64::NEG_INFINITY, f64::max).max(lo + 1e-9);
        let px = |x: f64| m + (x - x0) / (x1 - x0) * (w - 2.0 * m);
        let py = |y: f64| h - m - (y - lo) / (hi - lo) * (h - 2.0 * m);
        let line = |pts: &[(usize, f64)]| -> String {
            pts.iter()
                .map(|(s, l)| format!("{:.1},{:.1}", px(*s as f64), py(*l)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let k = (points.len() / 20).max(1);
        let smooth: Vec<(usize, f64)> = (0..points.len())
            .map(|i| {
                let a = i.saturating_sub(k);
                let win = &points[a..=i];
                (
                    points[i].0,
                    win.iter().map(|p| p.1).sum::<f64>() / win.len() as f64,
                )
            })
            .collect();
        let _ = write!(
            svg,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="training loss">
<rect width="{w}" height="{h}" fill="#fff"/>
<line x1="{m}" y1="{b}" x2="{r}" y2="{b}" stroke="#333"/><line x1="{m}" y1="{m}" x2="{m}" y2="{b}" stroke="#333"/>
<text x="{m}" y="{t}" font-size="12">step {x0}</text><text x="{r}" y="{t}" font-size="12" text-anchor="end">step {x1}</text>
<text x="4" y="{yt}" font-size="12">{hi:.3}</text><text x="4" y="{b}" font-size="12">{lo:.3}</text>
<polyline fill="none" stroke="#9ecae1" stroke-width="1" points="{raw}"/>
<polyline fill="none" stroke="#08519c" stroke-width="2" points="{avg}"/>
</svg>"##,
            b = h - m,
            r = w - m,
            t = h - m + 18.0,
            yt = py(hi) + 4.0,
            raw = line(points),
            avg = line(&smooth),
        );
    } else {
        svg.push_str("<p>No steps logged yet.</p>");
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}</style></head><body>\n\
         <h1>{t}</h1>\n<p>Training loss per optimizer step (light) and its moving average (dark).</p>\n{svg}\n</body></html>\n",
        t = escape(title)
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_both_lines_and_survives_no_points() {
        let page = super::html("run <1>", &[(1, 2.0), (2, 1.5), (3, 1.0)]);
        assert_eq!(page.matches("<polyline").count(), 2);
        assert!(page.contains("run &lt;1&gt;"));
        assert!(super::html("x", &[]).contains("No steps"));
    }
}
