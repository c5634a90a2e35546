//! Throughput of the checks on one thread: 100,000 synthetic replies, a mix of
//! constraint kinds, lengths and languages. Run with
//! `cargo run -p gatt-eval --example bench_checks`; prints replies per second.
//!
//! Language detection dominates: in the dev profile whatlang runs unoptimized (about
//! 2 ms a detection); with `[profile.dev.package.whatlang] opt-level = 3` in the
//! workspace manifest, or in a release build, it takes a few tens of microseconds.

use gatt::catalog::Catalog;
use gatt::{Constraint, ConstraintKind};
use gatt_eval::{check, Verdict};
use std::time::Instant;

const REPLIES: usize = 100_000;

/// Reply openings in several languages and shapes; each synthetic reply is one of these
/// followed by a varying number of filler sentences.
const OPENINGS: &[&str] = &[
    "The sky is blue because air scatters short wavelengths of sunlight more than long ones.",
    "Le ciel est bleu parce que l'atmosphère diffuse davantage la lumière bleue du soleil.",
    "Las abejas fabrican miel a partir del néctar de las flores que recogen cada día.",
    "Небо голубое, потому что атмосфера рассеивает синий свет сильнее, чем красный.",
    "天空之所以是蓝色的，是因为大气中的分子对蓝光的散射更强烈。",
    "I am Napoléon Bonaparte, Emperor of the French, and I love a good game of chess.",
    "Ahoy, matey! I sail the seven seas hunting for treasure with my loyal crew.",
    "```json\n{\"answer\": \"blue\", \"reason\": \"Rayleigh scattering\"}\n```",
    "blue light scattering\nacross the wide morning sky\nthe day opens up",
    "Here is some code:\n```rust\nfn main() { println!(\"Hello\"); }\n```\nIt prints a greeting.",
];

const FILLER: &str = " It also depends on the time of day, the weather and where you stand.";

fn constraints() -> Vec<Constraint> {
    let c = |kind: ConstraintKind, value: &str, param: Option<&str>| Constraint {
        kind,
        value: value.into(),
        param: param.map(str::to_string),
    };
    use ConstraintKind::*;
    vec![
        c(Language, "French", None),
        c(Language, "Spanish", None),
        c(Figure, "Napoleon Bonaparte", None),
        c(Hobby, "Chess", None),
        c(Persona, "pirate captain", None),
        c(Format, "lowercase", None),
        c(Format, "one_sentence", None),
        c(Format, "max_words", Some("30")),
        c(Format, "ends_with", Some("Stay curious.")),
        c(Format, "include_word", Some("banana")),
        c(Format, "no_commas", None),
        c(Format, "haiku", None),
        c(Format, "json", None),
    ]
}

fn main() {
    let catalog = Catalog::builtin();
    let constraints = constraints();
    let replies: Vec<String> = (0..OPENINGS.len() * 4)
        .map(|i| OPENINGS[i % OPENINGS.len()].to_string() + &FILLER.repeat(i / OPENINGS.len()))
        .collect();
    let mut verdicts = [0usize; 3];
    let start = Instant::now();
    for i in 0..REPLIES {
        let c = &constraints[i % constraints.len()];
        let reply = &replies[(i * 7) % replies.len()];
        let k = check(c, &constraints, reply, &catalog, i % 2 == 0);
        verdicts[k.verdict as usize] += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{REPLIES} replies in {seconds:.2} s: {:.0} replies/s (pass {}, fail {}, undetermined {})",
        REPLIES as f64 / seconds,
        verdicts[Verdict::Pass as usize],
        verdicts[Verdict::Fail as usize],
        verdicts[Verdict::Undetermined as usize]
    );
}
