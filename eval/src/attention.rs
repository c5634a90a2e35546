//! The Llama 2 paper's Figure 10 for a dialogue: how much attention later tokens pay to
//! the instruction, as a heatmap (instruction tokens x binned later tokens) and a curve
//! per turn, for one or more models side by side (`gatt attention`).
//!
//! The numbers come from the model's attention probabilities `P[l][h][i][j]` (query `i`,
//! key `j`, head `h`, layer `l`; each row sums to 1 over `j <= i`), reduced over layers
//! and heads as the model computes them (`gatt_runtime::llama::AttentionSummary`):
//!
//! - heatmap cell (instruction token `j`, bin `b`) = max over the query tokens `i` of
//!   bin `b` of (max over layers and heads of `P[l][h][i][j]`): the paper's "maximum
//!   attention activation across the network", neighbouring tokens binned by their max;
//! - mass of query `i` = `sum over j in the instruction of P[l][h][i][j]`, reduced over
//!   layers and heads by max (`mass_max`) or mean (`mass_mean`);
//! - per turn: the mean of a mass over the turn's query tokens after the instruction
//!   (`turn_*`) and over its reply's content tokens (`reply_*`).
//!
//! Queries are the tokens after the instruction's last token; bins hold `bin`
//! consecutive queries and never straddle a turn (a turn's last bin may be shorter).

use crate::report::svg::escape;
use gatt::{Error, Result};
use serde::Serialize;
use std::fmt::Write;
use std::ops::Range;
use std::path::Path;

/// Where a dialogue's parts lie in its tokens.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The tokens of the instruction.
    pub instruction: Range<usize>,
    /// The turns in order: turn `t` runs from its user message's first rendered token
    /// to the next user message's (or the end).
    pub turns: Vec<TurnSpan>,
    /// Every token's text, for labels.
    pub pieces: Vec<String>,
}

/// One turn's tokens.
#[derive(Debug, Clone)]
pub struct TurnSpan {
    /// 1-based.
    pub turn: usize,
    /// Its tokens (user message, reply, template text).
    pub tokens: Range<usize>,
    /// Its reply's content tokens, if it has a reply.
    pub reply: Option<Range<usize>>,
}

/// A model's attention, reduced over layers and heads (see the module docs).
pub struct Reduced<'a> {
    /// Tokens.
    pub len: usize,
    /// Layers x heads the mass is given for.
    pub layers: usize,
    /// Heads per layer.
    pub heads: usize,
    /// len x len: max over layers and heads.
    pub max: &'a [f32],
    /// layers x heads x len: each query's attention mass on the instruction.
    pub mass: &'a [f32],
}

/// Query tokens `start..end` (all in one turn) binned together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bin {
    /// The turn they belong to (0: the instruction's own message, before turn 1).
    pub turn: usize,
    /// First query token.
    pub start: usize,
    /// One past the last.
    pub end: usize,
}

/// One turn's attention mass on the instruction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TurnMass {
    /// 1-based.
    pub turn: usize,
    /// Query tokens of the turn (those after the instruction).
    pub tokens: usize,
    /// Mean over them of the mass, max over layers and heads.
    pub turn_mass_max: f64,
    /// Mean over them of the mass, mean over layers and heads.
    pub turn_mass_mean: f64,
    /// Content tokens of the turn's reply (0 when it has none).
    pub reply_tokens: usize,
    /// Mean over the reply's tokens of the mass, max over layers and heads.
    pub reply_mass_max: Option<f64>,
    /// Mean over the reply's tokens of the mass, mean over layers and heads.
    pub reply_mass_mean: Option<f64>,
}

/// One query token's attention mass on the instruction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenMass {
    /// Position in the rendered dialogue.
    pub index: usize,
    /// Turn (0: before turn 1).
    pub turn: usize,
    /// Its text (in `tokens.csv` escaped as Rust's `escape_debug` does: `\n` for a
    /// line break, `\\` for a backslash).
    pub piece: String,
    /// Max over layers and heads of its mass on the instruction.
    pub mass_max: f32,
    /// Mean over layers and heads.
    pub mass_mean: f32,
}

/// Figure 10's numbers for one model and dialogue.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// The model's name as shown.
    pub model: String,
    /// Tokens in the rendered dialogue.
    pub tokens: usize,
    /// The instruction's tokens `[start, end)`.
    pub instruction: [usize; 2],
    /// Their texts (the heatmap's rows).
    pub instruction_pieces: Vec<String>,
    /// Queries per bin (at most).
    pub bin: usize,
    /// The heatmap's columns.
    pub bins: Vec<Bin>,
    /// instruction token x bin: max over the bin's queries of the max over layers and
    /// heads of the attention onto that token.
    pub heatmap: Vec<Vec<f32>>,
    /// The per-turn curve.
    pub turns: Vec<TurnMass>,
    /// Every query's mass (written to `tokens.csv`, not to the JSON).
    #[serde(skip)]
    pub queries: Vec<TokenMass>,
}

/// Computes the figure of `model` from its reduced attention and the dialogue's layout.
///
/// # Errors
///
/// A runtime error when the shapes disagree (a bug, not an input error), or `bin` is 0.
pub fn figure(model: &str, layout: &Layout, r: &Reduced, bin: usize) -> Result<Figure> {
    let n = r.len;
    let ins = layout.instruction.clone();
    if bin == 0
        || r.max.len() != n * n
        || r.mass.len() != r.layers * r.heads * n
        || layout.pieces.len() != n
        || ins.is_empty()
        || ins.end > n
    {
        return Err(Error::runtime(format!(
            "attention figure: {n} tokens, instruction {ins:?}, bin {bin}, {} max values, \
             {} mass values: shapes disagree",
            r.max.len(),
            r.mass.len()
        )));
    }
    let heads = r.layers * r.heads;
    let mass_of = |i: usize| -> (f32, f32) {
        let all = (0..heads).map(|k| r.mass[k * n + i]);
        let max = all.clone().fold(0f32, f32::max);
        (max, all.sum::<f32>() / heads as f32)
    };
    let turn_of = |i: usize| -> usize {
        layout
            .turns
            .iter()
            .find(|t| t.tokens.contains(&i))
            .map_or(0, |t| t.turn)
    };
    let queries: Vec<TokenMass> = (ins.end..n)
        .map(|i| {
            let (mass_max, mass_mean) = mass_of(i);
            TokenMass {
                index: i,
                turn: turn_of(i),
                piece: layout.pieces[i].clone(),
                mass_max,
                mass_mean,
            }
        })
        .collect();
    // Bins: runs of up to `bin` queries of one turn.
    let mut bins: Vec<Bin> = Vec::new();
    for q in &queries {
        match bins.last_mut() {
            Some(b) if b.turn == q.turn && b.end - b.start < bin => b.end = q.index + 1,
            _ => bins.push(Bin {
                turn: q.turn,
                start: q.index,
                end: q.index + 1,
            }),
        }
    }
    let heatmap = ins
        .clone()
        .map(|j| {
            bins.iter()
                .map(|b| {
                    (b.start..b.end)
                        .map(|i| r.max[i * n + j])
                        .fold(0f32, f32::max)
                })
                .collect()
        })
        .collect();
    let mean = |v: &mut dyn Iterator<Item = f32>| -> Option<f64> {
        let (sum, count) = v.fold((0f64, 0usize), |(s, c), x| (s + f64::from(x), c + 1));
        (count > 0).then(|| sum / count as f64)
    };
    let turns = layout
        .turns
        .iter()
        .filter_map(|t| {
            let of_turn: Vec<&TokenMass> = queries.iter().filter(|q| q.turn == t.turn).collect();
            if of_turn.is_empty() {
                return None;
            }
            let reply: Vec<(f32, f32)> = t
                .reply
                .clone()
                .map(|r| r.filter(|&i| i >= ins.end).map(mass_of).collect())
                .unwrap_or_default();
            Some(TurnMass {
                turn: t.turn,
                tokens: of_turn.len(),
                turn_mass_max: mean(&mut of_turn.iter().map(|q| q.mass_max))?,
                turn_mass_mean: mean(&mut of_turn.iter().map(|q| q.mass_mean))?,
                reply_tokens: reply.len(),
                reply_mass_max: mean(&mut reply.iter().map(|m| m.0)),
                reply_mass_mean: mean(&mut reply.iter().map(|m| m.1)),
            })
        })
        .collect();
    Ok(Figure {
        model: model.to_string(),
        tokens: n,
        instruction: [ins.start, ins.end],
        instruction_pieces: layout.pieces[ins].to_vec(),
        bin,
        bins,
        heatmap,
        turns,
        queries,
    })
}

/// Writes `attention.json` (`meta` and the figures), `turns.csv`, `tokens.csv` and
/// `attention.html` (heatmaps and per-turn curves as inline SVG; opens offline) into
/// `dir`, each file atomically.
///
/// # Errors
///
/// An I/O error naming the file.
pub fn write_figures(figures: &[Figure], meta: serde_json::Value, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create directory", e))?;
    let doc = serde_json::json!({
        "definition": DEFINITION,
        "meta": meta,
        "figures": figures,
    });
    let json = serde_json::to_string_pretty(&doc).expect("JSON values serialize") + "\n";
    for (name, text) in [
        ("attention.json", json),
        ("turns.csv", turns_csv(figures)),
        ("tokens.csv", tokens_csv(figures)),
        ("attention.html", html(figures, &doc["meta"])),
    ] {
        gatt::dataset::write_file(&dir.join(name), text.as_bytes())?;
    }
    Ok(())
}

/// The definition written into every output.
pub const DEFINITION: &str = "P[l][h][i][j]: softmax attention probability of query token i \
onto key token j in head h of layer l (f32 products). heatmap[j][b] = max over the queries i \
of bin b of max over l,h of P[l][h][i][j], for each instruction token j; bins hold up to \
`bin` consecutive tokens after the instruction, within one turn. mass(i) = sum over the \
instruction's tokens j of P[l][h][i][j], reduced over l,h by max (mass_max) or mean \
(mass_mean). Per turn: the mean of mass over the turn's tokens after the instruction \
(turn_*) and over its reply's content tokens (reply_*).";

fn opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |x| format!("{x:.6}"))
}

/// A CSV field: quoted when it holds a comma, quote or line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn turns_csv(figures: &[Figure]) -> String {
    let mut s = String::from(
        "model,turn,tokens,turn_mass_max,turn_mass_mean,reply_tokens,reply_mass_max,\
         reply_mass_mean\n",
    );
    for f in figures {
        for t in &f.turns {
            let _ = writeln!(
                s,
                "{},{},{},{:.6},{:.6},{},{},{}",
                field(&f.model),
                t.turn,
                t.tokens,
                t.turn_mass_max,
                t.turn_mass_mean,
                t.reply_tokens,
                opt(t.reply_mass_max),
                opt(t.reply_mass_mean)
            );
        }
    }
    s
}

fn tokens_csv(figures: &[Figure]) -> String {
    let mut s = String::from("model,index,turn,piece,mass_max,mass_mean\n");
    for f in figures {
        for q in &f.queries {
            let _ = writeln!(
                s,
                "{},{},{},{},{:.6},{:.6}",
                field(&f.model),
                q.index,
                q.turn,
                field(&q.piece.escape_debug().to_string()),
                q.mass_max,
                q.mass_mean
            );
        }
    }
    s
}

/// White to dark blue, linear in `v` (clamped to [0, 1]).
fn color(v: f32) -> String {
    let v = v.clamp(0.0, 1.0);
    let c = |white: f32, dark: f32| (white + (dark - white) * v).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        c(255.0, 8.0),
        c(255.0, 48.0),
        c(255.0, 107.0)
    )
}

const CELL_H: f64 = 14.0;
const LABEL_W: f64 = 150.0;
const PLOT_W: f64 = 900.0;

/// One model's heatmap: instruction tokens down, binned later tokens across.
fn heatmap_svg(f: &Figure) -> String {
    let cols = f.bins.len().max(1);
    let cell_w = PLOT_W / cols as f64;
    let rows = f.instruction_pieces.len();
    let top = 28.0;
    let height = top + CELL_H * rows as f64 + 40.0;
    let width = LABEL_W + PLOT_W + 10.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11" role="img">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{LABEL_W}" y="18" font-size="13" font-weight="bold">{}</text>"#,
        escape(&f.model)
    );
    for (r, piece) in f.instruction_pieces.iter().enumerate() {
        let y = top + CELL_H * r as f64;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end" xml:space="preserve">{}</text>"#,
            LABEL_W - 6.0,
            y + CELL_H - 3.0,
            escape(&format!("{piece:?}"))
        );
        for (c, v) in f.heatmap[r].iter().enumerate() {
            let _ = writeln!(
                s,
                r#"<rect x="{:.2}" y="{y:.1}" width="{:.2}" height="{CELL_H}" fill="{}"/>"#,
                LABEL_W + cell_w * c as f64,
                cell_w + 0.05,
                color(*v)
            );
        }
    }
    // Turn boundaries and numbers under the map.
    let bottom = top + CELL_H * rows as f64;
    let mut last_turn = usize::MAX;
    for (c, b) in f.bins.iter().enumerate() {
        if b.turn != last_turn {
            let x = LABEL_W + cell_w * c as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{x:.2}" y1="{top}" x2="{x:.2}" y2="{:.1}" stroke="black" stroke-width="0.6"/>"#,
                bottom + 6.0
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.2}" y="{:.1}">{}</text>"#,
                x + 2.0,
                bottom + 16.0,
                b.turn
            );
            last_turn = b.turn;
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{:.1}" text-anchor="middle">later tokens, {} per bin; numbers: turns</text>"#,
        LABEL_W + PLOT_W / 2.0,
        bottom + 32.0,
        f.bin
    );
    s.push_str("</svg>\n");
    s
}

/// A line chart of one per-turn value for every model, y from 0 to the largest value.
fn curve_svg(title: &str, figures: &[Figure], value: fn(&TurnMass) -> Option<f64>) -> String {
    const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"];
    let (w, h, left, top, plot_h) = (640.0, 300.0, 56.0, 34.0, 200.0);
    let plot_w = w - left - 20.0;
    let turns: Vec<usize> = figures
        .iter()
        .flat_map(|f| f.turns.iter().map(|t| t.turn))
        .collect();
    let (first, last) = (
        turns.iter().copied().min().unwrap_or(1),
        turns.iter().copied().max().unwrap_or(1),
    );
    let top_value = figures
        .iter()
        .flat_map(|f| f.turns.iter().filter_map(value))
        .fold(0f64, f64::max)
        .max(1e-6)
        * 1.1;
    let x = |t: usize| {
        if last == first {
            left + plot_w / 2.0
        } else {
            left + plot_w * (t - first) as f64 / (last - first) as f64
        }
    };
    let y = |v: f64| top + plot_h * (1.0 - v / top_value);
    let bottom = top + plot_h;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12" role="img">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="13" font-weight="bold">{}</text>"#,
        w / 2.0,
        escape(title)
    );
    for k in 0..=4 {
        let v = top_value * f64::from(k) / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{v:.3}</text>"##,
            y(v),
            w - 20.0,
            left - 4.0,
            y(v) + 4.0
        );
    }
    for t in first..=last {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{t}</text>"#,
            x(t),
            bottom + 16.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">turn</text>"#,
        left + plot_w / 2.0,
        bottom + 32.0
    );
    for (k, f) in figures.iter().enumerate() {
        let c = COLORS[k % COLORS.len()];
        let pts: Vec<(usize, f64)> = f
            .turns
            .iter()
            .filter_map(|t| value(t).map(|v| (t.turn, v)))
            .collect();
        let line: Vec<String> = pts
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            line.join(" ")
        );
        for (t, v) in pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"><title>{}: turn {t}: {v:.4}</title></circle>"#,
                x(t),
                y(v),
                escape(&f.model)
            );
        }
        let ly = bottom + 50.0 + 16.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{left}" y="{}" width="14" height="4" fill="{c}"/><text x="{}" y="{ly}">{}</text>"#,
            ly - 6.0,
            left + 20.0,
            escape(&f.model)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn html(figures: &[Figure], meta: &serde_json::Value) -> String {
    let mut s = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>gatt attention</title>\n<style>body{font-family:sans-serif;max-width:1100px;\
         margin:1em auto;padding:0 1em}p.def{font-size:90%;color:#333}</style></head><body>\n\
         <h1>Attention onto the instruction</h1>\n",
    );
    let said = |k: &str| {
        meta.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let _ = writeln!(
        s,
        "<p>Dialogue <code>{}</code> of <code>{}</code>; instruction: <q>{}</q></p>",
        escape(&said("id")),
        escape(&said("input")),
        escape(&said("instruction"))
    );
    let _ = writeln!(s, "<p class=\"def\">{}</p>", escape(DEFINITION));
    s.push_str("<h2>Max attention onto each instruction token (white 0, dark blue 1)</h2>\n");
    for f in figures {
        s.push_str(&heatmap_svg(f));
    }
    s.push_str("<h2>Attention mass on the instruction, per turn (reply tokens)</h2>\n");
    s.push_str(&curve_svg("max over layers and heads", figures, |t| {
        t.reply_mass_max
    }));
    s.push_str(&curve_svg("mean over layers and heads", figures, |t| {
        t.reply_mass_mean
    }));
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 8 tokens: instruction 1..3, turn 1 = 3..6 (reply 4..6), turn 2 = 6..8 (reply 7..8).
    fn layout() -> Layout {
        Layout {
            instruction: 1..3,
            turns: vec![
                TurnSpan {
                    turn: 1,
                    tokens: 3..6,
                    reply: Some(4..6),
                },
                TurnSpan {
                    turn: 2,
                    tokens: 6..8,
                    reply: Some(7..8),
                },
            ],
            pieces: (0..8).map(|i| format!("t{i}")).collect(),
        }
    }

    #[test]
    fn bins_heatmap_and_turns_follow_the_definition() {
        let n = 8;
        // max[i][j] = (i * 10 + j) / 100 for j <= i.
        let max: Vec<f32> = (0..n * n)
            .map(|k| {
                let (i, j) = (k / n, k % n);
                if j <= i {
                    (i * 10 + j) as f32 / 100.0
                } else {
                    0.0
                }
            })
            .collect();
        // Two "heads": mass i/10 and i/20.
        let mass: Vec<f32> = (0..n)
            .map(|i| i as f32 / 10.0)
            .chain((0..n).map(|i| i as f32 / 20.0))
            .collect();
        let r = Reduced {
            len: n,
            layers: 1,
            heads: 2,
            max: &max,
            mass: &mass,
        };
        let f = figure("m", &layout(), &r, 2).unwrap();
        // Queries 3..8; bins within turns: [3,5) [5,6) turn 1, [6,8) turn 2.
        let spans: Vec<(usize, usize, usize)> =
            f.bins.iter().map(|b| (b.turn, b.start, b.end)).collect();
        assert_eq!(spans, [(1, 3, 5), (1, 5, 6), (2, 6, 8)]);
        assert_eq!(f.instruction_pieces, ["t1", "t2"]);
        // Cell = max over the bin's queries: the last query of each bin here.
        assert_eq!(f.heatmap[0], [0.41, 0.51, 0.71]);
        assert_eq!(f.heatmap[1], [0.42, 0.52, 0.72]);
        assert_eq!(f.turns.len(), 2);
        let t1 = &f.turns[0];
        assert_eq!((t1.turn, t1.tokens, t1.reply_tokens), (1, 3, 2));
        assert!((t1.turn_mass_max - 0.4).abs() < 1e-6); // mean of .3 .4 .5
        assert!((t1.turn_mass_mean - 0.3).abs() < 1e-6); // mean of (i/10+i/20)/2
        assert!((t1.reply_mass_max.unwrap() - 0.45).abs() < 1e-6);
        let t2 = &f.turns[1];
        assert!((t2.reply_mass_max.unwrap() - 0.7).abs() < 1e-6);
        assert_eq!(f.queries.len(), 5);
    }

    #[test]
    fn files_parse_and_the_page_is_offline() {
        let n = 8;
        let max = vec![0.5f32; n * n];
        let mass = vec![0.25f32; n];
        let r = Reduced {
            len: n,
            layers: 1,
            heads: 1,
            max: &max,
            mass: &mass,
        };
        let mut l = layout();
        l.pieces[4] = "a,\"b".into();
        l.pieces[5] = "\n".into();
        let f = figure("base <m>", &l, &r, 4).unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_figures(&[f], serde_json::json!({"id": "d1"}), dir.path()).unwrap();
        let doc: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("attention.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(doc["figures"][0]["turns"][1]["turn"], 2);
        let tokens = std::fs::read_to_string(dir.path().join("tokens.csv")).unwrap();
        assert!(tokens.contains(r#""a,\""b""#), "{tokens}");
        assert_eq!(tokens.lines().count(), 1 + 5);
        assert!(tokens.contains(",\\n,"), "{tokens}");
        let page = std::fs::read_to_string(dir.path().join("attention.html")).unwrap();
        assert!(page.contains("base &lt;m&gt;") && !page.contains("http://www.w3.org/1999"));
        assert!(!page.contains("<script") && !page.contains("src=\"http"));
    }

    #[test]
    fn a_bin_of_zero_is_an_error() {
        let r = Reduced {
            len: 8,
            layers: 1,
            heads: 1,
            max: &[0.0; 64],
            mass: &[0.0; 8],
        };
        assert!(figure("m", &layout(), &r, 0).is_err());
    }
}
