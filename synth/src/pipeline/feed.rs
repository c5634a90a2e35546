//! Scheduling: the dialogues of a synthesis run as one [`Feed`] to the backend, each
//! dialogue's next request ready once its previous one is answered.

use super::{reply_key, user_sim_key, ChunkOutput, InFlight, Step, Synthesizer};
use crate::gate::GateCounts;
use crate::plan::DialoguePlan;
use gatt::backend::{Feed, Reply, Request, SamplingParams};
use gatt::Result;
use std::collections::BTreeSet;

/// The dialogues of [`Synthesizer::run_chunks`] as a [`Feed`]: each dialogue's next
/// request is ready once its previous one is answered. A new dialogue starts while fewer
/// than [`SynthOptions::open_dialogues`] are open, or when none is ready; otherwise the
/// ready dialogue at the earliest turn goes next (in plan order among equals): the one
/// with the most still to do, so that the open dialogues finish together rather than the
/// last one started running alone at the end of the job.
///
/// [`SynthOptions::open_dialogues`]: crate::SynthOptions::open_dialogues
pub(super) struct Dialogues<'s, 'a> {
    pub(super) synth: &'s Synthesizer<'a>,
    /// Settings of reply requests and of simulated-user requests.
    pub(super) params: SamplingParams,
    pub(super) user_params: SamplingParams,
    /// Every plan of the chunks, in order, and each one's state once started.
    pub(super) plans: Vec<&'s DialoguePlan>,
    pub(super) live: Vec<Option<InFlight>>,
    pub(super) chunks: &'s [(usize, &'s [DialoguePlan])],
    /// Dialogues not yet done, per chunk.
    pub(super) left: Vec<usize>,
    /// Dialogues started so far (the first `started` plans).
    pub(super) started: usize,
    /// Dialogues started and not yet done.
    pub(super) open: usize,
    /// [`SynthOptions::open_dialogues`](crate::SynthOptions::open_dialogues).
    pub(super) window: usize,
    /// Started dialogues whose next request is ready to go.
    pub(super) ready: BTreeSet<usize>,
    /// The dialogue of each request handed out.
    pub(super) tickets: Vec<usize>,
    pub(super) on_chunk: &'s mut dyn FnMut(usize, ChunkOutput) -> Result<()>,
    /// An error met where [`Feed::next`] cannot return it; ends the generation.
    pub(super) failed: Option<gatt::Error>,
}

impl Dialogues<'_, '_> {
    /// Dialogue `i` takes `step` next: ready to go, or done when there is none.
    fn then(&mut self, i: usize, step: Option<Step>) -> Result<()> {
        let d = self.live[i].as_mut().expect("a started dialogue");
        d.step = step;
        if step.is_some() {
            self.ready.insert(i);
            return Ok(());
        }
        self.synth.backend.end_conversation(&reply_key(&d.plan));
        self.synth.backend.end_conversation(&user_sim_key(&d.plan));
        self.open -= 1;
        // The chunk of dialogue `i`, and its first dialogue.
        let (mut k, mut first) = (0, 0);
        while first + self.chunks[k].1.len() <= i {
            first += self.chunks[k].1.len();
            k += 1;
        }
        self.left[k] -= 1;
        if self.left[k] > 0 {
            return Ok(());
        }
        let mut out = ChunkOutput::default();
        for d in self.live[first..first + self.chunks[k].1.len()]
            .iter_mut()
            .flatten()
        {
            if let Some(record) = self.synth.conclude(d) {
                out.records.push(record);
            }
            out.gate.add(&d.counts);
            out.tokens_sampled += d.sampled;
        }
        (self.on_chunk)(self.chunks[k].0, out)
    }

    /// Starts the next planned dialogue at its first turn.
    fn start(&mut self) -> Result<()> {
        let i = self.started;
        self.started += 1;
        let mut d = InFlight {
            plan: self.plans[i].clone(),
            plain: Vec::new(),
            prompt_tokens: Vec::new(),
            completion_tokens: Vec::new(),
            finished: Vec::new(),
            dropped: None,
            final_cut_kept: false,
            adherence: (0, 0),
            counts: GateCounts::default(),
            step: None,
            seed: 0,
            sampled: 0,
        };
        let step = self.synth.begin_turn(&mut d, 0);
        self.live[i] = Some(d);
        self.open += 1;
        self.then(i, step)
    }
}

impl Feed for Dialogues<'_, '_> {
    fn next(&mut self) -> Option<(Request, SamplingParams)> {
        while (self.ready.is_empty() || self.open < self.window)
            && self.failed.is_none()
            && self.started < self.plans.len()
        {
            if let Err(e) = self.start() {
                self.failed = Some(e);
            }
        }
        if self.failed.is_some() {
            return None;
        }
        let i = *self.ready.iter().min_by_key(|&&i| {
            (
                self.live[i]
                    .as_ref()
                    .and_then(|d| d.step)
                    .map_or(0, Step::turn),
                i,
            )
        })?;
        self.ready.remove(&i);
        let d = self.live[i].as_mut().expect("a started dialogue");
        let step = d.step.expect("a ready dialogue has a step");
        let request = self.synth.request(d, step);
        d.seed = request.seed;
        self.tickets.push(i);
        let params = match step {
            Step::Reply { .. } => self.params.clone(),
            Step::UserSim { .. } => self.user_params.clone(),
        };
        Some((request, params))
    }

    fn done(&mut self, ticket: usize, replies: Vec<Reply>) -> Result<()> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let i = self.tickets[ticket];
        let synth = self.synth;
        let d = self.live[i].as_mut().expect("a started dialogue");
        d.sampled += replies.iter().map(|r| r.completion_tokens).sum::<usize>();
        let next = match d.step.expect("a dialogue in flight has a step") {
            Step::Reply { turn, attempt } => match synth.take_reply(d, turn, attempt, replies)? {
                Some(again) => Some(again),
                None if d.dropped.is_some() => None,
                None => synth.begin_turn(d, turn + 1),
            },
            Step::UserSim { turn } => {
                let text = replies
                    .first()
                    .map(|r| r.text.trim().to_string())
                    .unwrap_or_default();
                d.plan.users.truncate(turn);
                if !text.is_empty() {
                    d.plan.users.push(text);
                }
                synth.ask_reply(d, turn)
            }
        };
        self.then(i, next)
    }
}
