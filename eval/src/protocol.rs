//! The evaluation protocol: talk to a model for many turns and see whether it keeps its
//! instruction (the Llama 2 paper's §3.3 and Table 30, and Li et al. 2024's drift
//! measurement).
//!
//! Each dialogue states its instruction once, in the system message, exactly as a model
//! trained with GAtt sees it in use. Then, turn after turn, the user asks a question from
//! the catalog's bank, or, every `probe_every` turns, a probe question about a hobby,
//! figure or persona of the instruction ("What is your name?"). The model's own replies
//! stay in the context, so drift compounds as it would in a real conversation.
//!
//! Dialogues advance independently: a dialogue's next turn goes to the backend as soon as
//! its reply is in ([`ChatBackend::generate_each`]), while the others are still being
//! answered. Each reply has its own seed ([`request_seed`]), so the dialogues are the same
//! whatever the order in which replies finish.

mod plan;
mod score;

pub use plan::{phrase, pick_constraints, DialoguePlan};
pub use score::{has_instruction, score_dialogue, ScoredTurn, UNKNOWN_MODEL};

use gatt::backend::{ChatBackend, Feed, Reply, Request, SamplingParams};
use gatt::catalog::Catalog;
use gatt::seed::Stream;
use gatt::{ConstraintKind, Dialogue, DialogueMeta, Error, Message, Result, Role};
use std::collections::BTreeSet;

/// How the protocol talks to each model: how many dialogues of how many turns, which
/// constraint kinds, how often to probe, the seed and the sampling.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtocolOptions {
    /// User turns per dialogue.
    pub turns: usize,
    /// Dialogues per model.
    pub dialogues: usize,
    /// One constraint of each kind per dialogue. Empty: no instruction at all, no
    /// system message and no probes, the control run whose replies are checked for
    /// the user's language ([`crate::checks::user_language`]).
    pub kinds: Vec<ConstraintKind>,
    /// Every `probe_every`-th turn is a probe question; 0 = never.
    pub probe_every: usize,
    /// Decides every dialogue's constraints and user messages ([`DialoguePlan`]) and
    /// every reply's sampling seed ([`request_seed`]).
    pub seed: u64,
    /// `n` is ignored: one reply per turn.
    pub sampling: SamplingParams,
}

impl Default for ProtocolOptions {
    /// 50 dialogues of 12 turns, one language, figure and hobby constraint each,
    /// probed every other turn, seed 0, the default sampling (the paper's Table 30 probed
    /// hobby and figure over 20 turns).
    fn default() -> Self {
        ProtocolOptions {
            turns: 12,
            dialogues: 50,
            kinds: vec![
                ConstraintKind::Language,
                ConstraintKind::Figure,
                ConstraintKind::Hobby,
            ],
            probe_every: 2,
            seed: 0,
            sampling: SamplingParams::default(),
        }
    }
}

/// The sampling seed of dialogue `index` at `turn`, so that each reply has its own seed
/// and the run repeats exactly.
pub fn request_seed(seed: u64, index: usize, turn: usize) -> u64 {
    // Stream: EvalDialogue (parent: the run seed, index: the dialogue), then EvalReply
    // (parent: the dialogue's seed, index: the turn).
    let dialogue = gatt::seed::derive(seed, Stream::EvalDialogue, index as u64);
    gatt::seed::derive(dialogue, Stream::EvalReply, turn as u64)
}

/// Runs the protocol and returns the finished dialogues. `progress` is called after each
/// reply with the number of replies generated so far (of `dialogues * turns`).
///
/// Each dialogue records `meta.model`, `meta.seed`, `meta.index`, `meta.probe_turns`
/// (turn numbers) and `meta.probe_kinds` (the kind each probe asked about), which
/// [`score_dialogue`] reads.
///
/// # Errors
///
/// An input error for zero turns or a dialogue that cannot be
/// planned ([`DialoguePlan::new`]); the backend's own error, or a runtime error when it
/// returns a reply count that does not match the requests.
pub fn run_protocol(
    backend: &dyn ChatBackend,
    catalog: &Catalog,
    opts: &ProtocolOptions,
    progress: &dyn Fn(usize),
) -> Result<Vec<Dialogue>> {
    if opts.turns == 0 {
        return Err(Error::input("the protocol needs at least one turn"));
    }
    let plans = (0..opts.dialogues)
        .map(|i| DialoguePlan::new(i, catalog, opts))
        .collect::<Result<Vec<_>>>()?;
    let model = backend.describe();
    let mut dialogues: Vec<Dialogue> = plans
        .iter()
        .enumerate()
        .map(|(i, plan)| start(i, plan, &model, opts.seed))
        .collect();

    let result = converse(backend, &mut dialogues, &plans, opts, progress);
    // Whatever happened, the backend can let go of these dialogues.
    for d in &dialogues {
        backend.end_conversation(&d.id);
    }
    result.map(|()| dialogues)
}

/// Every turn of every dialogue, each dialogue's next turn handed to the backend as soon
/// as its reply is in ([`ChatBackend::generate_each`]).
fn converse(
    backend: &dyn ChatBackend,
    dialogues: &mut [Dialogue],
    plans: &[DialoguePlan],
    opts: &ProtocolOptions,
    progress: &dyn Fn(usize),
) -> Result<()> {
    let mut feed = Conversations {
        dialogues,
        plans,
        opts,
        params: SamplingParams {
            n: 1,
            ..opts.sampling.clone()
        },
        ready: (0..plans.len()).collect(),
        tickets: Vec::new(),
        replies: 0,
        progress,
    };
    backend.generate_each(&mut feed)
}

/// The protocol's dialogues as a [`Feed`]: dialogue `i`'s turn `t` goes out once its turn
/// `t - 1` is answered; ready turns go out in dialogue order.
struct Conversations<'a> {
    dialogues: &'a mut [Dialogue],
    plans: &'a [DialoguePlan],
    opts: &'a ProtocolOptions,
    params: SamplingParams,
    /// Dialogues whose next turn is ready to go, by index.
    ready: BTreeSet<usize>,
    /// The dialogue of each request handed out.
    tickets: Vec<usize>,
    /// Replies received so far.
    replies: usize,
    progress: &'a dyn Fn(usize),
}

impl Conversations<'_> {
    /// Turns of dialogue `i` answered so far.
    fn answered(&self, i: usize) -> usize {
        self.dialogues[i]
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .count()
    }
}

impl Feed for Conversations<'_> {
    fn next(&mut self) -> Option<(Request, SamplingParams)> {
        let i = self.ready.pop_first()?;
        let turn = self.answered(i) + 1;
        let d = &mut self.dialogues[i];
        d.messages
            .push(Message::user(self.plans[i].user_messages[turn - 1].clone()));
        let request = Request::new(d.messages.clone(), request_seed(self.opts.seed, i, turn))
            .in_conversation(d.id.clone());
        self.tickets.push(i);
        Some((request, self.params.clone()))
    }

    fn done(&mut self, ticket: usize, replies: Vec<Reply>) -> Result<()> {
        let i = self.tickets[ticket];
        let Some(reply) = replies.into_iter().next() else {
            return Err(Error::runtime(format!(
                "backend returned no reply for dialogue {} at turn {}",
                self.dialogues[i].id,
                self.answered(i) + 1
            )));
        };
        self.dialogues[i]
            .messages
            .push(Message::assistant(reply.text));
        if self.answered(i) < self.opts.turns {
            self.ready.insert(i);
        }
        self.replies += 1;
        (self.progress)(self.replies);
        Ok(())
    }
}

/// A dialogue holding only its system message (none for the instruction-free control),
/// with its provenance.
fn start(index: usize, plan: &DialoguePlan, model: &str, seed: u64) -> Dialogue {
    let system = (!plan.instruction.is_empty()).then(|| Message::system(plan.instruction.clone()));
    let mut d = Dialogue::new(format!("eval-{index:05}"), system.into_iter().collect());
    d.instruction = plan.instruction.clone();
    d.constraints = plan.constraints.clone();
    let (turns, kinds): (Vec<usize>, Vec<ConstraintKind>) = plan.probes.iter().cloned().unzip();
    d.meta = DialogueMeta {
        model: Some(model.to_string()),
        seed: Some(seed),
        index: Some(index),
        probe_turns: Some(turns),
        probe_kinds: Some(kinds),
        ..DialogueMeta::default()
    };
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_seeds_differ_per_dialogue_and_turn() {
        let a = request_seed(7, 0, 1);
        assert_ne!(a, request_seed(7, 1, 1));
        assert_ne!(a, request_seed(7, 0, 2));
        assert_eq!(a, request_seed(7, 0, 1));
    }
}
