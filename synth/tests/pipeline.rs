//! The pipeline on a fake backend whose replies depend only on the request.

use gatt::backend::{ChatBackend, Reply, Request, SamplingParams};
use gatt::catalog::Catalog;
use gatt::dataset::{read_all, Format};
use gatt::{ConstraintKind, Dialogue, Role};
use gatt_synth::plan::Shard;
use gatt_synth::users::UserSource;
use gatt_synth::{DefaultScorer, Synthesizer};
use std::sync::atomic::{AtomicUsize, Ordering};

mod common;
use common::opts;

/// Replies "re <hash of the conversation and seed> ok"; fails after `fail_after` calls.
struct Fake {
    calls: AtomicUsize,
    fail_after: usize,
}

impl ChatBackend for Fake {
    fn describe(&self) -> String {
        "fake".into()
    }
    fn preferred_batch(&self) -> usize {
        4
    }
    fn generate(&self, reqs: &[Request], p: &SamplingParams) -> gatt::Result<Vec<Vec<Reply>>> {
        if self.calls.fetch_add(1, Ordering::SeqCst) >= self.fail_after {
            return Err(gatt::Error::runtime("simulated crash"));
        }
        Ok(reqs
            .iter()
            .map(|r| {
                (0..p.n)
                    .map(|c| {
                        let text = format!("{:?}{}{c}", r.messages, r.seed);
                        let h = text
                            .bytes()
                            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
                        Reply {
                            // Too few letters for the gate to judge their script.
                            text: format!("re {h:x} ok"),
                            prompt_tokens: 10,
                            completion_tokens: 4,
                            finished: true,
                        }
                    })
                    .collect()
            })
            .collect())
    }
}

fn synth_to(
    dir: &std::path::Path,
    shard: Shard,
    fail_after: usize,
    resume: bool,
) -> gatt::Result<Vec<Dialogue>> {
    let backend = Fake {
        calls: AtomicUsize::new(0),
        fail_after,
    };
    let catalog = Catalog::builtin();
    let users = UserSource::Bank(catalog.user_bank.clone());
    let s = Synthesizer {
        backend: &backend,
        catalog: &catalog,
        users: &users,
        scorer: &DefaultScorer,
        judge: None,
        opts: opts(shard),
    };
    let summary = gatt_synth::run::run(
        &s,
        dir,
        resume,
        Format::Jsonl,
        gatt_synth::run::Provenance::new("scripted"),
        &|_| {},
    )?;
    read_all(&summary.output)
}

#[test]
fn instruction_in_every_augmented_user_turn_and_only_first_training_turn() {
    let dir = tempfile::tempdir().unwrap();
    let records = synth_to(dir.path(), Shard::default(), usize::MAX, false).unwrap();
    assert_eq!(records.len(), 10);
    for d in &records {
        assert!(!d.instruction.is_empty() && !d.constraints.is_empty());
        let aug: Vec<gatt::Message> = d.meta.augmented.clone().unwrap();
        let users: Vec<_> = aug.iter().filter(|m| m.role == Role::User).collect();
        assert_eq!(users.len(), 3);
        assert!(users.iter().all(|m| m.content.contains(&d.instruction)));
        // Training record: the instruction is the system message, and nowhere else.
        assert_eq!(d.messages[0].role, Role::System);
        assert_eq!(d.messages[0].content, d.instruction);
        assert!(d.messages[1..]
            .iter()
            .all(|m| !m.content.contains(&d.instruction)));
        // Same replies in both.
        let a: Vec<_> = aug.iter().filter(|m| m.role == Role::Assistant).collect();
        let t: Vec<_> = d
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .collect();
        assert_eq!(a, t);
        d.validate(gatt::dialogue::Purpose::Training).unwrap();
    }
}

#[test]
fn same_seed_same_bytes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    synth_to(a.path(), Shard::default(), usize::MAX, false).unwrap();
    synth_to(b.path(), Shard::default(), usize::MAX, false).unwrap();
    let read = |d: &tempfile::TempDir| std::fs::read(d.path().join("dialogues.jsonl")).unwrap();
    assert_eq!(read(&a), read(&b));
}

#[test]
fn shards_together_equal_the_whole() {
    let whole = synth_to(
        tempfile::tempdir().unwrap().path(),
        Shard::default(),
        usize::MAX,
        false,
    )
    .unwrap();
    let mut parts = Vec::new();
    for i in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        parts
            .extend(synth_to(dir.path(), Shard { index: i, count: 3 }, usize::MAX, false).unwrap());
    }
    parts.sort_by(|a, b| a.id.cmp(&b.id));
    let mut whole_sorted = whole.clone();
    whole_sorted.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(parts, whole_sorted);
}

#[test]
fn crash_then_resume_equals_a_clean_run() {
    let clean_dir = tempfile::tempdir().unwrap();
    synth_to(clean_dir.path(), Shard::default(), usize::MAX, false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Each chunk makes 3 calls (one per turn): crash inside the third chunk.
    assert!(synth_to(dir.path(), Shard::default(), 7, false).is_err());
    assert!(!dir.path().join("dialogues.jsonl").exists());
    // Without --resume the folder is refused; with it, the run completes.
    assert!(synth_to(dir.path(), Shard::default(), usize::MAX, false).is_err());
    // A resume with other settings is refused, naming the setting that changed.
    let other = Shard { index: 1, count: 2 };
    let e = synth_to(dir.path(), other, usize::MAX, true).unwrap_err();
    assert!(e.is_input(), "{e}");
    assert!(
        e.to_string().contains(r#"options.shard: "1/1" -> "1/2""#),
        "{e}"
    );
    synth_to(dir.path(), Shard::default(), usize::MAX, true).unwrap();
    let read = |d: &std::path::Path| std::fs::read(d.join("dialogues.jsonl")).unwrap();
    assert_eq!(read(dir.path()), read(clean_dir.path()));
}

#[test]
fn shard_syntax_is_checked() {
    assert!("0/3".parse::<Shard>().is_err());
    assert!("4/3".parse::<Shard>().is_err());
    assert!("x".parse::<Shard>().is_err());
    assert_eq!(
        "2/3".parse::<Shard>().unwrap(),
        Shard { index: 2, count: 3 }
    );
}

#[test]
fn user_simulation_writes_later_user_turns() {
    let backend = Fake {
        calls: AtomicUsize::new(0),
        fail_after: usize::MAX,
    };
    let catalog = Catalog::builtin();
    let users = UserSource::Bank(catalog.user_bank.clone());
    let mut o = opts(Shard::default());
    o.user_sim = true;
    o.dialogues = 2;
    let s = Synthesizer {
        backend: &backend,
        catalog: &catalog,
        users: &users,
        scorer: &DefaultScorer,
        judge: None,
        opts: o,
    };
    let plans = s.plans();
    let records = s.run_chunk(&plans).unwrap().records;
    for (d, p) in records.iter().zip(&plans) {
        let user_turns: Vec<&str> = d
            .messages
            .iter()
            .filter(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .collect();
        assert_eq!(user_turns.len(), 3);
        // The first comes from the bank, the later ones from the model playing the user.
        assert_eq!(user_turns[0], p.users[0]);
        assert!(
            user_turns[1..].iter().all(|u| u.starts_with("re ")),
            "{user_turns:?}"
        );
    }
}

/// Plays a French-speaking user (with --user-sim), answers French in French and anything
/// else in English.
struct FrenchUser;

const FRENCH: &str = "Bonjour, je voudrais savoir comment on prépare une bonne soupe \
    aux légumes pour toute la famille, avec des carottes, des poireaux et des pommes de terre.";
const ENGLISH: &str = "Hello! I am happy to help you today with anything you would like \
    to know about cooking, gardening or travelling around the world.";

impl ChatBackend for FrenchUser {
    fn describe(&self) -> String {
        "french user".into()
    }
    fn preferred_batch(&self) -> usize {
        4
    }
    fn generate(&self, reqs: &[Request], p: &SamplingParams) -> gatt::Result<Vec<Vec<Reply>>> {
        Ok(reqs
            .iter()
            .map(|r| {
                let user_sim = r.messages[0].role == Role::System;
                let french = r
                    .messages
                    .last()
                    .is_some_and(|m| m.content.contains("Bonjour"));
                let reply = Reply {
                    text: if user_sim || french { FRENCH } else { ENGLISH }.to_string(),
                    prompt_tokens: 10,
                    completion_tokens: 4,
                    finished: true,
                };
                vec![reply; p.n]
            })
            .collect())
    }
}

/// With --user-sim the gate's `wrong_language` reads the user messages as asked, not
/// the planned turns the model replaces: here the plan's later turns are French, the
/// asked "Hi there." says nothing, and the English reply to it is kept.
#[test]
fn wrong_language_reads_the_asked_user_turns() {
    let catalog = Catalog::builtin();
    let planned = vec!["Hi there.".to_string(), FRENCH.into(), FRENCH.into()];
    let users = UserSource::Dialogues(vec![planned]);
    let mut o = opts(Shard::default());
    o.user_sim = true;
    o.dialogues = 3;
    o.kinds = vec![ConstraintKind::Hobby];
    let s = Synthesizer {
        backend: &FrenchUser,
        catalog: &catalog,
        users: &users,
        scorer: &DefaultScorer,
        judge: None,
        opts: o,
    };
    let chunk = s.run_chunk(&s.plans()).unwrap();
    assert_eq!(chunk.records.len(), 3, "{:?}", chunk.gate);
    for d in &chunk.records {
        let replies: Vec<&str> = d
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .map(|m| m.content.as_str())
            .collect();
        assert_eq!(replies, [ENGLISH, FRENCH, FRENCH]);
    }
}

/// Replies from a script: for each request (in the order the backend sees them), the next
/// line of `script`, cycling; `CUT:` marks a reply stopped at the token limit.
struct Scripted {
    script: Vec<&'static str>,
    next: AtomicUsize,
    seeds: std::sync::Mutex<Vec<u64>>,
}

impl Scripted {
    fn new(script: Vec<&'static str>) -> Self {
        Scripted {
            script,
            next: AtomicUsize::new(0),
            seeds: Default::default(),
        }
    }
}

impl ChatBackend for Scripted {
    fn describe(&self) -> String {
        "scripted".into()
    }
    fn preferred_batch(&self) -> usize {
        1
    }
    fn generate(&self, reqs: &[Request], p: &SamplingParams) -> gatt::Result<Vec<Vec<Reply>>> {
        Ok(reqs
            .iter()
            .map(|r| {
                self.seeds.lock().unwrap().push(r.seed);
                (0..p.n)
                    .map(|_| {
                        let k = self.next.fetch_add(1, Ordering::SeqCst);
                        let line = self.script[k % self.script.len()];
                        let (text, finished) = match line.strip_prefix("CUT:") {
                            Some(t) => (t.to_string(), false),
                            None => (line.to_string(), true),
                        };
                        Reply {
                            text,
                            prompt_tokens: 10,
                            completion_tokens: 5,
                            finished,
                        }
                    })
                    .collect()
            })
            .collect())
    }
}

const GOOD: &str = "The sky is blue because air scatters blue light the most.";
const CUT: &str = "CUT:The sky is blue because air scatters blue light and";
const EMPTY: &str = "   ";
const LOOP: &str =
    "CUT:la Femme, la Femme, la Femme, la Femme, la Femme, la Femme, la Femme, la Femme";

/// One dialogue of `turns` turns, one candidate, language-free constraints, the gate as
/// given; returns the kept records, the gate counts and the request seeds in order.
fn gated(
    script: Vec<&'static str>,
    turns: usize,
    gate: gatt_synth::GateOptions,
) -> (Vec<Dialogue>, gatt_synth::GateCounts, Vec<u64>) {
    let backend = Scripted::new(script);
    let catalog = Catalog::builtin();
    let users = UserSource::Bank(catalog.user_bank.clone());
    let mut o = opts(Shard::default());
    o.dialogues = 1;
    o.turns = turns;
    o.candidates = 1;
    o.kinds = vec![ConstraintKind::Hobby];
    o.gate = gate;
    let s = Synthesizer {
        backend: &backend,
        catalog: &catalog,
        users: &users,
        scorer: &DefaultScorer,
        judge: None,
        opts: o,
    };
    let out = s.run_chunk(&s.plans()).unwrap();
    let seeds = backend.seeds.lock().unwrap().clone();
    (out.records, out.gate, seeds)
}

fn gate(cut: gatt_synth::CutMode, tries: usize) -> gatt_synth::GateOptions {
    gatt_synth::GateOptions {
        cut,
        resample_tries: tries,
        min_adherence: 0.0,
    }
}

fn count(
    m: &std::collections::BTreeMap<gatt_synth::Rejection, usize>,
    r: gatt_synth::Rejection,
) -> usize {
    m.get(&r).copied().unwrap_or(0)
}

#[test]
fn cut_empty_and_repeating_replies_are_resampled_with_new_seeds() {
    use gatt_synth::{CutMode, Rejection};
    // Turn 1: cut, then empty, then fine; turn 2: a loop, then fine.
    let (records, counts, seeds) = gated(
        vec![CUT, EMPTY, GOOD, LOOP, GOOD],
        2,
        gate(CutMode::Resample, 3),
    );
    assert_eq!(records.len(), 1);
    let d = &records[0];
    let replies: Vec<&str> = d
        .messages
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(replies, [GOOD, GOOD]);
    assert_eq!(d.meta.finished, Some(vec![true, true]));
    assert_eq!(d.meta.final_end_of_turn, None);
    assert_eq!(count(&counts.candidates_rejected, Rejection::Cut), 1);
    assert_eq!(count(&counts.candidates_rejected, Rejection::Empty), 1);
    assert_eq!(count(&counts.candidates_rejected, Rejection::Repetitive), 1);
    assert_eq!(
        (counts.resampled_turns, counts.kept, counts.dropped_total()),
        (3, 1, 0)
    );
    // Every try of a turn has its own seed, derived from the turn's.
    let turn0 = gatt::seed::derive(d.meta.seed.unwrap(), gatt::seed::Stream::SynthReply, 0);
    assert_eq!(seeds[0], turn0);
    assert_eq!(
        seeds[1],
        gatt::seed::derive(turn0, gatt::seed::Stream::SynthResample, 1)
    );
    assert_eq!(seeds.len(), 5);
    let distinct: std::collections::HashSet<_> = seeds.iter().collect();
    assert_eq!(distinct.len(), 5);
}

#[test]
fn a_dialogue_that_cannot_finish_is_dropped_and_counted() {
    use gatt_synth::{CutMode, Rejection};
    let (records, counts, seeds) = gated(vec![CUT], 2, gate(CutMode::Resample, 2));
    assert!(records.is_empty());
    assert_eq!(seeds.len(), 3, "one try and two resamples, then dropped");
    assert_eq!(count(&counts.dropped, Rejection::Cut), 1);
    assert_eq!(count(&counts.candidates_rejected, Rejection::Cut), 3);
    assert_eq!((counts.dialogues, counts.kept), (1, 0));
    let (records, counts, _) = gated(vec![EMPTY], 1, gate(CutMode::Keep, 1));
    assert!(records.is_empty());
    assert_eq!(count(&counts.dropped, Rejection::Empty), 1);
    let (records, counts, _) = gated(vec![LOOP], 1, gate(CutMode::Keep, 0));
    assert!(
        records.is_empty(),
        "a loop is degenerate even when cuts are kept"
    );
    assert_eq!(count(&counts.dropped, Rejection::Repetitive), 1);
}

#[test]
fn drop_eot_keeps_only_a_cut_final_reply_and_says_so_in_meta() {
    use gatt_synth::CutMode;
    // Turn 1 is cut every try: an earlier reply cannot drop its end-of-turn token.
    let (records, counts, _) = gated(vec![CUT], 2, gate(CutMode::DropEot, 1));
    assert!(records.is_empty());
    assert_eq!(counts.dropped_total(), 1);
    // Turn 1 fine, turn 2 cut every try: kept, final reply marked.
    let (records, counts, _) = gated(vec![GOOD, CUT, CUT], 2, gate(CutMode::DropEot, 1));
    assert_eq!(records.len(), 1);
    let m = &records[0].meta;
    assert_eq!(m.finished, Some(vec![true, false]));
    assert_eq!(m.final_end_of_turn, Some(false));
    assert_eq!((counts.kept_without_end_of_turn, counts.kept_cut), (1, 0));
    // Keep: as it is, counted.
    let (records, counts, seeds) = gated(vec![CUT], 2, gate(CutMode::Keep, 3));
    assert_eq!(seeds.len(), 2, "no resampling for cuts under keep");
    assert_eq!(records[0].meta.finished, Some(vec![false, false]));
    assert_eq!(records[0].meta.final_end_of_turn, None);
    assert_eq!(counts.kept_cut, 1);
}

/// The gate's records through the real masker (SmolLM2's template and tokenizer): no
/// sample ends a cut reply with a trained end-of-turn token.
#[test]
fn no_cut_reply_is_masked_with_an_end_of_turn_token() {
    use gatt::mask::{MaskOptions, Masker, IGNORE};
    use gatt_synth::CutMode;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/golden");
    let tokenizer = gatt::tokenizer::from_json_file(&dir.join("smollm2_tokenizer.json")).unwrap();
    let template = dir.join("smollm2_chat_template.jinja");
    let masker = || {
        let t = gatt::model::load_template(template.to_str().unwrap()).unwrap();
        let format = gatt::model::ChatFormat::bare(tokenizer.clone())
            .unwrap()
            .with_template(t)
            .unwrap();
        Masker::new(format, MaskOptions::default())
    };
    let im_end = tokenizer.token_to_id("<|im_end|>").unwrap() as i64;
    let last_label = |d: &Dialogue| {
        let s = masker().mask(d).unwrap().remove(0);
        *s.labels.iter().rev().find(|l| **l != IGNORE).unwrap()
    };
    let (kept, _, _) = gated(
        vec![CUT, GOOD, CUT, CUT, CUT, GOOD],
        2,
        gate(CutMode::Resample, 3),
    );
    assert_eq!(
        last_label(&kept[0]),
        im_end,
        "a finished reply ends with its marker"
    );
    let (kept, _, _) = gated(vec![GOOD, CUT], 2, gate(CutMode::DropEot, 0));
    assert_ne!(
        last_label(&kept[0]),
        im_end,
        "a cut reply is trained without it"
    );
    let (kept, _, _) = gated(vec![GOOD, CUT], 2, gate(CutMode::Keep, 0));
    let e = masker().mask(&kept[0]).unwrap_err();
    assert_eq!(
        e.reason,
        gatt::mask::SkipReason::CutReply,
        "refused by default"
    );
}

/// Decides one check per reply: passed unless the reply holds "off".
struct OffScorer;

impl gatt_synth::Scorer for OffScorer {
    fn score(&self, _: &[gatt::Constraint], _: &Reply, _: usize) -> f64 {
        0.0
    }
    fn adherence(
        &self,
        _: &[gatt::Constraint],
        reply: &str,
        _: Option<&ConstraintKind>,
        _: &gatt_synth::Judged,
    ) -> (usize, usize) {
        (usize::from(!reply.contains("off")), 1)
    }
}

#[test]
fn min_adherence_drops_dialogues_that_lose_the_instruction() {
    use gatt_synth::{CutMode, Rejection};
    let run = |min: f64| {
        let backend = Scripted::new(vec![GOOD, "That is off topic, sorry about it.", GOOD]);
        let catalog = Catalog::builtin();
        let users = UserSource::Bank(catalog.user_bank.clone());
        let mut o = opts(Shard::default());
        (o.dialogues, o.turns, o.candidates) = (1, 3, 1);
        o.kinds = vec![ConstraintKind::Hobby];
        o.gate = gatt_synth::GateOptions {
            cut: CutMode::Resample,
            resample_tries: 0,
            min_adherence: min,
        };
        let s = Synthesizer {
            backend: &backend,
            catalog: &catalog,
            users: &users,
            scorer: &OffScorer,
            judge: None,
            opts: o,
        };
        s.run_chunk(&s.plans()).unwrap()
    };
    // 2 of 3 replies keep it: kept at 0.6, dropped at 0.7.
    assert_eq!(run(0.6).records.len(), 1);
    let out = run(0.7);
    assert!(out.records.is_empty());
    assert_eq!(count(&out.gate.dropped, Rejection::LowAdherence), 1);
}

/// Candidate `c` of every request is "Candidate c ..." (all of one length, so the default
/// scorer cannot tell them apart and keeps the first).
struct Alike;

impl ChatBackend for Alike {
    fn describe(&self) -> String {
        "alike".into()
    }
    fn preferred_batch(&self) -> usize {
        4
    }
    fn generate(&self, reqs: &[Request], p: &SamplingParams) -> gatt::Result<Vec<Vec<Reply>>> {
        Ok(reqs
            .iter()
            .map(|_| {
                (0..p.n)
                    .map(|c| Reply {
                        text: format!("Candidate {c} answers the question with some care."),
                        prompt_tokens: 10,
                        completion_tokens: 9,
                        finished: true,
                    })
                    .collect()
            })
            .collect())
    }
}

/// A judge that says yes only to questions about the reply "Candidate `yes_to` ...",
/// and records every question's seed.
struct PickyJudge {
    yes_to: usize,
    seeds: std::sync::Mutex<Vec<u64>>,
}

impl PickyJudge {
    fn new(yes_to: usize) -> Self {
        PickyJudge {
            yes_to,
            seeds: Default::default(),
        }
    }
}

impl ChatBackend for PickyJudge {
    fn describe(&self) -> String {
        "picky judge".into()
    }
    fn preferred_batch(&self) -> usize {
        5
    }
    fn generate(&self, reqs: &[Request], p: &SamplingParams) -> gatt::Result<Vec<Vec<Reply>>> {
        assert_eq!((p.n, p.temperature), (1, 0.0), "verdicts are greedy");
        let mine = format!("Assistant: Candidate {} answers", self.yes_to);
        Ok(reqs
            .iter()
            .map(|r| {
                self.seeds.lock().unwrap().push(r.seed);
                let q = &r.messages[1].content;
                assert!(q.contains("Is this reply consistent with the instruction to speak as"));
                let text = if q.contains(&mine) { "Yes." } else { "No." };
                vec![Reply {
                    text: text.into(),
                    prompt_tokens: 0,
                    completion_tokens: 1,
                    finished: true,
                }]
            })
            .collect())
    }
}

/// Synthesizes 2 dialogues of 3 turns with figure constraints only and `candidates`
/// candidates per turn, judged by `judge`.
fn judged_run(
    judge: Option<&dyn ChatBackend>,
    candidates: usize,
    min_adherence: f64,
) -> gatt_synth::ChunkOutput {
    let catalog = Catalog::builtin();
    let users = UserSource::Bank(catalog.user_bank.clone());
    let mut o = opts(Shard::default());
    (o.dialogues, o.turns, o.candidates) = (2, 3, candidates);
    o.kinds = vec![ConstraintKind::Figure];
    o.gate.min_adherence = min_adherence;
    let s = Synthesizer {
        backend: &Alike,
        catalog: &catalog,
        users: &users,
        scorer: &DefaultScorer,
        judge,
        opts: o,
    };
    s.run_chunk(&s.plans()).unwrap()
}

fn kept_candidates(out: &gatt_synth::ChunkOutput) -> Vec<String> {
    out.records
        .iter()
        .flat_map(|d| d.messages.iter().filter(|m| m.role == Role::Assistant))
        .map(|m| m.content.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn the_choice_among_candidates_follows_the_judge() {
    // Without a judge the candidates tie and the first is kept.
    let plain = judged_run(None, 3, 0.0);
    assert_eq!(kept_candidates(&plain), vec!["Candidate 0"; 6]);
    assert_eq!(plain.gate.judge, gatt_synth::JudgeCounts::default());
    for yes_to in [2, 1] {
        let judge = PickyJudge::new(yes_to);
        let out = judged_run(Some(&judge), 3, 0.0);
        let want = format!("Candidate {yes_to}");
        assert_eq!(kept_candidates(&out), vec![want.as_str(); 6]);
        // 2 dialogues x 3 turns x 3 candidates, one figure each: one question apiece.
        let j = &out.gate.judge;
        assert_eq!(
            (j.candidates_judged, j.questions, j.yes, j.no, j.neither),
            (18, 18, 6, 12, 0)
        );
        assert_eq!((j.candidates_rejected, j.picks_changed), (12, 6));
        // Deterministic: every question has its own seed, the same in a second run.
        let seeds = judge.seeds.lock().unwrap().clone();
        let mut distinct = seeds.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 18);
        let again = PickyJudge::new(yes_to);
        assert_eq!(judged_run(Some(&again), 3, 0.0).records, out.records);
        assert_eq!(*again.seeds.lock().unwrap(), seeds);
    }
}

#[test]
fn a_single_candidate_is_judged_only_for_min_adherence() {
    use gatt_synth::Rejection;
    // One candidate, no --min-adherence: nothing to choose, nothing asked.
    let judge = PickyJudge::new(1);
    let out = judged_run(Some(&judge), 1, 0.0);
    assert_eq!((out.records.len(), out.gate.judge.questions), (2, 0));
    // With --min-adherence the judge's no (to "Candidate 0") drops both dialogues...
    let out = judged_run(Some(&judge), 1, 0.5);
    assert!(out.records.is_empty());
    assert_eq!(count(&out.gate.dropped, Rejection::LowAdherence), 2);
    assert_eq!(
        (
            out.gate.judge.candidates_judged,
            out.gate.judge.candidates_rejected
        ),
        (6, 6)
    );
    // ...and its yes keeps them.
    let out = judged_run(Some(&PickyJudge::new(0)), 1, 0.5);
    assert_eq!(out.records.len(), 2);
    assert_eq!(out.gate.judge.yes, 6);
}

/// `plain_share` 1: every dialogue instruction-free, its training record without a system
/// message, and a reply in another language than the user's is resampled.
#[test]
fn plain_dialogues_have_no_instruction_and_keep_the_users_language() {
    use gatt_synth::Rejection;
    const SPANISH: &str = "El cielo es azul porque el aire dispersa la luz azul del sol mucho \
                           más que la luz roja, y por eso lo vemos así durante el día.";
    const ENGLISH: &str = "The sky is blue because the air scatters the blue part of sunlight \
                           much more than the red part, so that is the colour we see by day.";
    let backend = Scripted::new(vec![SPANISH, ENGLISH]);
    let catalog = Catalog::builtin();
    // English questions long enough for the gate to tell their language.
    let users = UserSource::Dialogues(vec![vec![
        "Why is the sky blue during the day, and why does it turn red at sunset?".into(),
        "And why do the clouds look white or grey instead of blue like the sky?".into(),
    ]]);
    let mut o = opts(Shard::default());
    o.dialogues = 1;
    o.turns = 2;
    o.candidates = 1;
    o.plain_share = 1.0;
    o.gate = gate(gatt_synth::CutMode::Resample, 3);
    let s = Synthesizer {
        backend: &backend,
        catalog: &catalog,
        users: &users,
        scorer: &DefaultScorer,
        judge: None,
        opts: o,
    };
    let out = s.run_chunk(&s.plans()).unwrap();
    assert_eq!(out.records.len(), 1);
    let d = &out.records[0];
    assert!(d.instruction.is_empty() && d.constraints.is_empty());
    let roles: Vec<Role> = d.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::User, Role::Assistant, Role::User, Role::Assistant]
    );
    let replies: Vec<&str> = d
        .messages
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(replies, [ENGLISH, ENGLISH]);
    assert_eq!(
        count(&out.gate.candidates_rejected, Rejection::WrongLanguage),
        2
    );
    d.validate(gatt::dialogue::Purpose::Training).unwrap();
}
