//! The order in which a backend finishes requests changes no synthesis output.

use gatt::backend::{ChatBackend, Reply, Request, SamplingParams};
use gatt::catalog::Catalog;
use gatt::dataset::Format;
use gatt_synth::plan::Shard;
use gatt_synth::users::UserSource;
use gatt_synth::{DefaultScorer, Synthesizer};

mod common;
use common::opts;

/// Replies that depend only on the request (conversation and candidate seed): some empty
/// (so turns are resampled), some cut, the rest text the gate keeps.
fn reply_of(r: &Request, seed: u64) -> Reply {
    let h = format!("{:?}{seed}", r.messages)
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let text = match h % 5 {
        0 => String::new(),
        1 => format!("I think {h:x} is a fine answer, cut short"),
        _ => format!("Here is what I think: {h:x}, and that is all."),
    };
    Reply {
        finished: h % 5 != 1,
        text,
        prompt_tokens: 10,
        completion_tokens: 4,
    }
}

/// Answers as [`reply_of`]; its [`ChatBackend::generate_each`] holds up to `window`
/// requests and finishes them in a pseudo-random order drawn from `order`, as a server
/// or a running batch finishes requests in whatever order they end.
struct Shuffled {
    window: usize,
    order: u64,
}

impl ChatBackend for Shuffled {
    fn describe(&self) -> String {
        "shuffled".into()
    }
    fn preferred_batch(&self) -> usize {
        self.window
    }
    fn generate(&self, reqs: &[Request], p: &SamplingParams) -> gatt::Result<Vec<Vec<Reply>>> {
        Ok(reqs
            .iter()
            .map(|r| {
                (0..p.n)
                    .map(|c| reply_of(r, gatt::backend::candidate_seed(r.seed, c)))
                    .collect()
            })
            .collect())
    }
    fn generate_each(&self, feed: &mut dyn gatt::backend::Feed) -> gatt::Result<()> {
        let mut rng = gatt::seed::SplitMix64::new(self.order);
        let mut held: Vec<(usize, Request, SamplingParams)> = Vec::new();
        let mut ticket = 0;
        loop {
            while held.len() < self.window {
                let Some((r, p)) = feed.next() else { break };
                held.push((ticket, r, p));
                ticket += 1;
            }
            if held.is_empty() {
                return Ok(());
            }
            let (t, r, p) = held.swap_remove(rng.next_u64() as usize % held.len());
            let replies = self.generate(&[r], &p)?.remove(0);
            feed.done(t, replies)?;
        }
    }
}

/// Says yes or no by a hash of the question, whatever else it is asked.
struct HashJudge;

impl ChatBackend for HashJudge {
    fn describe(&self) -> String {
        "hash judge".into()
    }
    fn preferred_batch(&self) -> usize {
        3
    }
    fn generate(&self, reqs: &[Request], _: &SamplingParams) -> gatt::Result<Vec<Vec<Reply>>> {
        Ok(reqs
            .iter()
            .map(|r| {
                let yes = reply_of(r, r.seed).text.len().is_multiple_of(2);
                vec![Reply {
                    text: if yes { "Yes." } else { "No." }.into(),
                    prompt_tokens: 0,
                    completion_tokens: 1,
                    finished: true,
                }]
            })
            .collect())
    }
}

/// The run's files and gate counts with `backend` (simulated users, probes, two candidates,
/// resampling, a judge, several chunks), `open` dialogues open at once.
fn scheduled_run(backend: &dyn ChatBackend, open: usize) -> (Vec<u8>, String) {
    let mut o = opts(Shard::default());
    (o.dialogues, o.turns, o.chunk) = (11, 4, 3);
    o.user_sim = true;
    o.probe_rate = 0.5;
    o.gate.min_adherence = 0.1;
    o.open_dialogues = open;
    let (records, summary) = run_synth(backend, Some(&HashJudge), o);
    (records, serde_json::to_string(&summary.gate).unwrap())
}

/// A whole synthesis run with `backend`, `judge` and `o` (built-in catalog and user bank)
/// in a temporary folder: the bytes of its dataset, and its summary.
fn run_synth(
    backend: &dyn ChatBackend,
    judge: Option<&dyn ChatBackend>,
    o: gatt_synth::SynthOptions,
) -> (Vec<u8>, gatt_synth::run::RunSummary) {
    let catalog = Catalog::builtin();
    let users = UserSource::Bank(catalog.user_bank.clone());
    let s = Synthesizer {
        backend,
        catalog: &catalog,
        users: &users,
        scorer: &DefaultScorer,
        judge,
        opts: o,
    };
    let dir = tempfile::tempdir().unwrap();
    let summary = gatt_synth::run::run(
        &s,
        dir.path(),
        false,
        Format::Jsonl,
        gatt_synth::run::Provenance::new("scripted"),
        &|_| {},
    )
    .unwrap();
    (std::fs::read(&summary.output).unwrap(), summary)
}

/// Scheduling leaks into nothing: requests answered one at a time in order (each alone,
/// as a chunk turn by turn would have them), in batches, or finished in shuffled orders
/// with up to 5 or 16 in flight, give the same bytes and the same gate counts.
#[test]
fn the_order_requests_finish_in_changes_no_output() {
    let alone = scheduled_run(
        &Shuffled {
            window: 1,
            order: 0,
        },
        0,
    );
    let (records, gate) = &alone;
    assert!(gate.contains("\"resampled_turns\":") && !gate.contains("\"resampled_turns\":0"));
    assert!(gate.contains("\"questions\":") && !gate.contains("\"questions\":0"));
    assert!(records.len() > 1000, "dialogues were kept");
    /// Plain batches of `generate`, the default `generate_each`.
    struct Batches(Shuffled);
    impl ChatBackend for Batches {
        fn describe(&self) -> String {
            self.0.describe()
        }
        fn preferred_batch(&self) -> usize {
            self.0.window
        }
        fn generate(&self, r: &[Request], p: &SamplingParams) -> gatt::Result<Vec<Vec<Reply>>> {
            self.0.generate(r, p)
        }
    }
    let batches = scheduled_run(
        &Batches(Shuffled {
            window: 4,
            order: 0,
        }),
        0,
    );
    assert!(alone == batches, "batches of 4");
    for (window, order, open) in [(5, 1, 0), (16, 2, 0), (3, 3, 0), (3, 4, 6), (5, 5, 11)] {
        let got = scheduled_run(&Shuffled { window, order }, open);
        assert!(
            alone == got,
            "{window} in flight, order {order}, {open} dialogues open"
        );
    }
}

/// Answers every request with text the gate keeps (no turn is resampled), two requests
/// in flight, finished in the order they came; notes each request's conversation and
/// turn (from 0).
struct Noting(std::sync::Mutex<Vec<(String, usize)>>);

impl ChatBackend for Noting {
    fn describe(&self) -> String {
        "noting".into()
    }
    fn preferred_batch(&self) -> usize {
        2
    }
    fn generate(&self, reqs: &[Request], p: &SamplingParams) -> gatt::Result<Vec<Vec<Reply>>> {
        let kept = |r: &Request, c: usize| Reply {
            text: format!("Here is what I think: {c}, and that is all."),
            finished: true,
            ..reply_of(r, r.seed)
        };
        Ok(reqs
            .iter()
            .map(|r| (0..p.n).map(|c| kept(r, c)).collect())
            .collect())
    }
    fn generate_each(&self, feed: &mut dyn gatt::backend::Feed) -> gatt::Result<()> {
        let mut held = std::collections::VecDeque::new();
        let mut ticket = 0;
        loop {
            while held.len() < 2 {
                let Some((r, p)) = feed.next() else { break };
                let key = r.conversation.clone().unwrap_or_default();
                let users = r.messages.iter().filter(|m| m.role == gatt::Role::User);
                self.0.lock().unwrap().push((key, users.count() - 1));
                held.push_back((ticket, r, p));
                ticket += 1;
            }
            let Some((t, r, p)) = held.pop_front() else {
                return Ok(());
            };
            let replies = self.generate(&[r], &p)?.remove(0);
            feed.done(t, replies)?;
        }
    }
}

/// With every dialogue open at once, each one's first turn goes out before any second
/// turn, and then the dialogue furthest behind goes first; with none open beyond need, a
/// dialogue's next turn goes before a new dialogue starts. The same records either way.
#[test]
fn open_dialogues_start_first_and_the_furthest_behind_goes_next() {
    let run = |open: usize| {
        let mut o = opts(Shard::default());
        (o.dialogues, o.turns, o.candidates, o.open_dialogues) = (6, 3, 1, open);
        // No language to answer in: the gate keeps every reply.
        o.kinds = vec![gatt::ConstraintKind::Hobby];
        let backend = Noting(Default::default());
        let (records, _) = run_synth(&backend, None, o);
        (records, backend.0.into_inner().unwrap())
    };
    let (all_open, requests) = run(6);
    let first_turns: Vec<usize> = requests[..6].iter().map(|r| r.1).collect();
    assert_eq!(first_turns, vec![0; 6], "{requests:?}");
    let ids: std::collections::BTreeSet<&String> = requests[..6].iter().map(|r| &r.0).collect();
    assert_eq!(ids.len(), 6, "six dialogues started: {requests:?}");
    // Afterwards no request is more than one turn ahead of another dialogue's.
    let mut done = vec![0usize; 6];
    for (key, turn) in &requests[6..] {
        let d = requests[..6].iter().position(|r| &r.0 == key).unwrap();
        done[d] = *turn;
        let (lo, hi) = (done.iter().min().unwrap(), done.iter().max().unwrap());
        assert!(hi - lo <= 1, "{done:?} after {requests:?}");
    }
    let (none_open, requests) = run(0);
    assert_eq!(
        requests[2],
        (requests[0].0.clone(), 1),
        "the first dialogue's second turn goes third: {requests:?}"
    );
    assert!(all_open == none_open, "the same records");
}
