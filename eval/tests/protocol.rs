//! The protocol against a fake backend that answers with canned text, so that what the
//! model is shown can be inspected exactly.

use gatt::backend::{ChatBackend, Reply, Request, SamplingParams};
use gatt::catalog::Catalog;
use gatt::{ConstraintKind, Dialogue, Role};
use gatt_eval::{run_protocol, score_dialogue, ProtocolOptions, Report, Verdict};
use std::sync::Mutex;

/// Answers every conversation with a line naming its turn and seed; a probe about the
/// figure is answered "I am <figure>" when `in_character`. Records every request.
struct Canned {
    in_character: bool,
    batch: usize,
    seen: Mutex<Vec<Request>>,
}

impl Canned {
    fn new(in_character: bool) -> Self {
        Canned {
            in_character,
            batch: 3,
            seen: Mutex::new(Vec::new()),
        }
    }
}

impl ChatBackend for Canned {
    fn describe(&self) -> String {
        "canned".into()
    }

    fn generate(
        &self,
        requests: &[Request],
        params: &SamplingParams,
    ) -> gatt::Result<Vec<Vec<Reply>>> {
        assert_eq!(params.n, 1);
        assert!(requests.len() <= self.batch);
        self.seen.lock().unwrap().extend(requests.iter().cloned());
        let catalog = Catalog::builtin();
        Ok(requests
            .iter()
            .map(|r| {
                let turn = r.messages.iter().filter(|m| m.role == Role::User).count();
                let question = &r.messages.last().unwrap().content;
                let text = if self.in_character && catalog.probes.figure.contains(question) {
                    // The system message names the figure: "Act as X for the rest ...".
                    let system = &r.messages[0].content;
                    let figure = catalog
                        .figures
                        .iter()
                        .find(|f| system.contains(&f.name))
                        .map_or("nobody", |f| f.name.as_str());
                    format!("I am {figure}.")
                } else {
                    format!("Reply {turn} (seed {}).", r.seed)
                };
                vec![Reply {
                    text,
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    finished: true,
                }]
            })
            .collect())
    }

    fn preferred_batch(&self) -> usize {
        self.batch
    }
}

fn options() -> ProtocolOptions {
    ProtocolOptions {
        turns: 6,
        dialogues: 5,
        kinds: vec![ConstraintKind::Figure, ConstraintKind::Language],
        probe_every: 3,
        seed: 42,
        sampling: SamplingParams::greedy(32),
    }
}

fn run(backend: &Canned) -> Vec<Dialogue> {
    run_protocol(backend, &Catalog::builtin(), &options(), &|_| {}).unwrap()
}

#[test]
fn the_instruction_is_only_in_the_system_message() {
    let backend = Canned::new(true);
    let dialogues = run(&backend);
    assert_eq!(dialogues.len(), 5);
    for d in &dialogues {
        assert_eq!(d.messages[0].role, Role::System);
        assert_eq!(d.messages[0].content, d.instruction);
        assert_eq!(d.constraints.len(), 2);
        assert_eq!(d.turns(), 6);
        assert!(d.validate(gatt::dialogue::Purpose::Training).is_ok());
        for m in &d.messages[1..] {
            assert!(!m.content.contains(&d.instruction), "{}", m.content);
        }
    }
    for r in backend.seen.lock().unwrap().iter() {
        let with_instruction = r
            .messages
            .iter()
            .filter(|m| m.content.contains("Act as"))
            .count();
        assert_eq!(with_instruction, 1);
    }
}

#[test]
fn probes_come_at_the_probe_turns() {
    let catalog = Catalog::builtin();
    for d in run(&Canned::new(true)) {
        // As written to a dataset's `meta`.
        let meta = serde_json::to_value(&d.meta).unwrap();
        assert_eq!(meta["probe_turns"], serde_json::json!([3, 6]));
        assert_eq!(meta["probe_kinds"], serde_json::json!(["figure", "figure"]));
        let users: Vec<&str> = d
            .messages
            .iter()
            .filter(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .collect();
        for (i, u) in users.iter().enumerate() {
            let probe = catalog.probes.figure.iter().any(|p| p == u);
            assert_eq!(probe, (i + 1) % 3 == 0, "turn {}: {u}", i + 1);
        }
    }
}

#[test]
fn replies_stay_in_context_and_batches_respect_the_backend() {
    let backend = Canned::new(false);
    let progress = Mutex::new(Vec::new());
    let dialogues = run_protocol(&backend, &Catalog::builtin(), &options(), &|n| {
        progress.lock().unwrap().push(n)
    })
    .unwrap();
    let seen = backend.seen.lock().unwrap();
    assert_eq!(seen.len(), 5 * 6);
    // The request for turn 3 of dialogue 0 holds its two earlier replies.
    let turn3 = seen
        .iter()
        .find(|r| r.messages.len() == 1 + 2 * 2 + 1 && r.messages[0] == dialogues[0].messages[0])
        .unwrap();
    assert_eq!(turn3.messages[2], dialogues[0].messages[2]);
    assert_eq!(turn3.messages[4], dialogues[0].messages[4]);
    assert!(turn3.messages[4].content.starts_with("Reply 2 "));
    // Counted reply by reply.
    assert_eq!(
        progress.into_inner().unwrap(),
        (1..=30).collect::<Vec<usize>>()
    );
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let (a, b) = (run(&Canned::new(false)), run(&Canned::new(false)));
    assert_eq!(a, b);
    let mut other = options();
    other.seed = 43;
    let c = run_protocol(&Canned::new(false), &Catalog::builtin(), &other, &|_| {}).unwrap();
    assert_ne!(a, c);
    // Different dialogues of one run draw different plans and seeds.
    assert_ne!(a[0].messages[2], a[1].messages[2]);
}

#[test]
fn scoring_reads_the_recorded_probes() {
    let catalog = Catalog::builtin();
    let rows: Vec<_> = run(&Canned::new(true))
        .iter()
        .flat_map(|d| score_dialogue(d, &catalog))
        .collect();
    assert_eq!(rows.len(), 5 * 6 * 2);
    for r in &rows {
        match (r.kind.as_str(), r.turn % 3 == 0) {
            ("figure", true) => assert_eq!(r.verdict, Verdict::Pass, "{r:?}"),
            ("figure", false) => assert_eq!(r.verdict, Verdict::Undetermined, "{r:?}"),
            // "Reply 1 (seed ...)." is too short to detect a language.
            (_, false) => assert_eq!(r.verdict, Verdict::Undetermined, "{r:?}"),
            // "I am <figure>." is English (or too short), never the language asked for.
            (_, true) => assert_ne!(r.verdict, Verdict::Pass, "{r:?}"),
        }
        assert_eq!(r.model, "canned");
    }
    let report = Report::from_scored(&rows, serde_json::Value::Null);
    assert_eq!(
        report.cell("canned", 3, Some("figure")).unwrap().rate,
        Some(1.0)
    );
    assert_eq!(report.cell("canned", 2, None).unwrap().rate, None);
}

#[test]
fn bad_options_are_input_errors() {
    let backend = Canned::new(false);
    let catalog = Catalog::builtin();
    let mut o = options();
    o.turns = 0;
    assert!(run_protocol(&backend, &catalog, &o, &|_| {})
        .unwrap_err()
        .is_input());
    let mut o = options();
    o.kinds = vec![ConstraintKind::Other("mood".into())];
    assert!(run_protocol(&backend, &catalog, &o, &|_| {})
        .unwrap_err()
        .is_input());
    let mut o = options();
    o.dialogues = 0;
    assert!(run_protocol(&backend, &catalog, &o, &|_| {})
        .unwrap()
        .is_empty());
}

/// [`Canned`]'s replies, finished in a pseudo-random order drawn from `order`, up to
/// `window` requests in flight.
struct Shuffled {
    canned: Canned,
    window: usize,
    order: u64,
}

impl ChatBackend for Shuffled {
    fn describe(&self) -> String {
        self.canned.describe()
    }
    fn preferred_batch(&self) -> usize {
        self.window
    }
    fn generate(&self, r: &[Request], p: &SamplingParams) -> gatt::Result<Vec<Vec<Reply>>> {
        self.canned.generate(r, p)
    }
    fn generate_each(&self, feed: &mut dyn gatt::backend::Feed) -> gatt::Result<()> {
        let mut rng = gatt::seed::SplitMix64::new(self.order);
        let mut held: Vec<(usize, Request, SamplingParams)> = Vec::new();
        let mut ticket = 0;
        loop {
            while held.len() < self.window {
                let Some((r, p)) = feed.next() else { break };
                // A dialogue's turns go out in order, one at a time.
                assert!(held
                    .iter()
                    .all(|(_, h, _)| h.conversation != r.conversation));
                held.push((ticket, r, p));
                ticket += 1;
            }
            if held.is_empty() {
                return Ok(());
            }
            let (t, r, p) = held.swap_remove(rng.next_u64() as usize % held.len());
            let replies = self.canned.generate(&[r], &p)?.remove(0);
            feed.done(t, replies)?;
        }
    }
}

/// The dialogues are the same whatever order the replies finish in.
#[test]
fn the_order_replies_finish_in_changes_no_dialogue() {
    let want = run(&Canned::new(true));
    for (window, order) in [(1, 0), (4, 1), (7, 2)] {
        let backend = Shuffled {
            canned: Canned::new(true),
            window,
            order,
        };
        let got = run_protocol(&backend, &Catalog::builtin(), &options(), &|_| {}).unwrap();
        assert_eq!(got, want, "{window} in flight, order {order}");
    }
}
