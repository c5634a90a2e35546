//! The choice among candidates with a judge model: which candidate is kept, and when the
//! judge is asked at all.

use gatt::backend::{ChatBackend, Reply, Request, SamplingParams};
use gatt::catalog::Catalog;
use gatt::{ConstraintKind, Role};
use gatt_synth::plan::Shard;
use gatt_synth::users::UserSource;
use gatt_synth::{DefaultScorer, Synthesizer};

mod common;
use common::{count, opts};

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
    // With --min-adherence the judge's no (to "Candidate 0") sends every turn back for
    // its three more tries (default --resample-tries), then drops both dialogues...
    let out = judged_run(Some(&judge), 1, 0.5);
    assert!(out.records.is_empty());
    assert_eq!(count(&out.gate.dropped, Rejection::LowAdherence), 2);
    assert_eq!(out.gate.resampled_for_adherence, 2 * 3 * 3);
    assert_eq!(
        (
            out.gate.judge.candidates_judged,
            out.gate.judge.candidates_rejected
        ),
        (24, 24)
    );
    // ...and its yes keeps them.
    let out = judged_run(Some(&PickyJudge::new(0)), 1, 0.5);
    assert_eq!(out.records.len(), 2);
    assert_eq!(out.gate.judge.yes, 6);
}
