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
    read_all(&run_to(dir, shard, fail_after, resume)?.output)
}

fn run_to(
    dir: &std::path::Path,
    shard: Shard,
    fail_after: usize,
    resume: bool,
) -> gatt::Result<gatt_synth::run::RunSummary> {
    run_with(dir, opts(shard), fail_after, resume)
}

fn run_with(
    dir: &std::path::Path,
    opts: gatt_synth::SynthOptions,
    fail_after: usize,
    resume: bool,
) -> gatt::Result<gatt_synth::run::RunSummary> {
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
        opts,
    };
    gatt_synth::run::run(
        &s,
        dir,
        resume,
        Format::Jsonl,
        gatt_synth::run::Provenance::new("scripted"),
        &|_| {},
    )
}

/// `run.json` counts the tokens of the kept replies (`tokens_generated`) and every token
/// the model sampled (`tokens_sampled`): here two candidates of 4 tokens per turn, one
/// kept, in 10 dialogues of 3 turns.
#[test]
fn sampled_tokens_count_every_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let summary = run_to(dir.path(), Shard::default(), usize::MAX, false).unwrap();
    assert_eq!(summary.progress.tokens_generated, 10 * 3 * 4);
    assert_eq!(summary.progress.tokens_sampled, 10 * 3 * 2 * 4);
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run.json")).unwrap()).unwrap();
    assert_eq!(run["counts"]["tokens_sampled"], 240);
}

/// With simulated users, the model's user turns (one candidate of 4 tokens for turns 2
/// and 3 of each dialogue) count as sampled, not as kept replies.
#[test]
fn simulated_user_turns_count_as_sampled() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(Shard::default());
    o.user_sim = true;
    let summary = run_with(dir.path(), o, usize::MAX, false).unwrap();
    assert_eq!(summary.progress.tokens_generated, 10 * 3 * 4);
    assert_eq!(summary.progress.tokens_sampled, 10 * 3 * 2 * 4 + 10 * 2 * 4);
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
