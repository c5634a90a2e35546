//! The pipeline on a fake backend whose replies depend only on the request.

use gatt::backend::{ChatBackend, Reply, Request, SamplingParams};
use gatt::catalog::Catalog;
use gatt::dataset::{read_all, Format};
use gatt::transform::{Attach, Placement};
use gatt::{ConstraintKind, Dialogue, Role};
use gatt_synth::plan::Shard;
use gatt_synth::users::UserSource;
use gatt_synth::{DefaultScorer, SynthOptions, Synthesizer};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Replies "reply <hash of the conversation and seed>"; fails after `fail_after` calls.
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
                            text: format!("reply {h:x} words here"),
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

fn opts(shard: Shard) -> SynthOptions {
    SynthOptions {
        dialogues: 10,
        turns: 3,
        seed: 42,
        kinds: vec![
            ConstraintKind::Language,
            ConstraintKind::Figure,
            ConstraintKind::Hobby,
        ],
        max_combined: 2,
        terse: 0.5,
        attach: Attach::Prefix,
        placement: Placement::System,
        candidates: 2,
        sampling: SamplingParams::default(),
        user_sim: false,
        shard,
        chunk: 3,
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
        opts: o,
    };
    let plans = s.plans();
    let records = s.run_chunk(&plans).unwrap();
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
            user_turns[1..].iter().all(|u| u.starts_with("reply ")),
            "{user_turns:?}"
        );
    }
}
