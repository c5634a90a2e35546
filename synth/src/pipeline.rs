//! Sampling the replies: the instruction in every user turn, the earlier sampled replies
//! in context, every dialogue advancing through the backend at its own pace.

use crate::gate::{self, CutMode, GateCounts, GateOptions, JudgeCounts, Rejection};
use crate::plan::{plan, DialoguePlan, PlanOptions, Shard};
use crate::scorer::{best, Scorer};
use crate::users::UserSource;
use gatt::backend::{ChatBackend, Reply, Request, SamplingParams};
use gatt::catalog::Catalog;
use gatt::judge;
use gatt::seed::{self, Stream};
use gatt::transform::{attach, to_training, Attach, Placement};
use gatt::{ConstraintKind, Dialogue, DialogueMeta, Message, Result, Role};
use serde::Serialize;
use std::collections::BTreeSet;

mod feed;
use feed::Dialogues;

/// What to synthesize: `gatt synth`'s settings.
///
/// Serialized as JSON into `run.json` ([`crate::run::Fingerprint::options`]): a resumed
/// run must have exactly the same options.
#[derive(Debug, Clone, Serialize)]
pub struct SynthOptions {
    /// Dialogues in the whole job, before sharding.
    pub dialogues: usize,
    /// User turns per dialogue (fewer when the user source runs out, see
    /// [`UserSource::short_records`]).
    pub turns: usize,
    /// The run seed; dialogue `i`'s plan seed is
    /// `gatt::seed::derive(seed, Stream::SynthPlan, i)`.
    pub seed: u64,
    /// Constraint kinds to sample from.
    pub kinds: Vec<ConstraintKind>,
    /// Fewest compatible constraints combined in one instruction (0 and 1: at least one
    /// is drawn); left out of `run.json` at 1, so runs without it resume as before.
    #[serde(skip_serializing_if = "is_one")]
    pub min_combined: usize,
    /// Most compatible constraints combined in one instruction (at least one is drawn).
    pub max_combined: usize,
    /// Probability that an instruction is terse ("Language: French."); the paper used 0.5.
    pub terse: f64,
    /// Where the instruction goes in each user turn while sampling.
    pub attach: Attach,
    /// Where the instruction goes in the training record.
    pub placement: Placement,
    /// Replies sampled per turn, the [`Scorer`]'s best kept (the paper's rejection
    /// sampling); 0 counts as 1. Replaces `sampling.n`.
    pub candidates: usize,
    /// How replies are sampled.
    pub sampling: SamplingParams,
    /// Probability that a user turn from the bank asks for a short answer
    /// ([`crate::plan::CONCISE`]), so that small models finish their replies.
    pub concise: f64,
    /// Probability that a user turn after the first is a probe question about the
    /// instruction (see [`crate::plan::PlanOptions::probe_rate`]); recorded in
    /// `meta.probe_turns` and `meta.probe_kinds`.
    pub probe_rate: f64,
    /// Share of dialogues with no instruction at all (see
    /// [`crate::plan::PlanOptions::plain_share`]); left out of `run.json` at 0, so runs
    /// without it resume as before.
    #[serde(skip_serializing_if = "is_zero")]
    pub plain_share: f64,
    /// The model writes the user's messages after the first (probe turns stay).
    pub user_sim: bool,
    /// This machine's share of the job (serialized as `I/N`).
    #[serde(serialize_with = "shard_str")]
    pub shard: Shard,
    /// Dialogues per chunk file (the unit of resumption), written once all of them are done;
    /// 0 counts as 1.
    pub chunk: usize,
    /// The quality gate: cut, empty and degenerate replies (see [`crate::gate`]).
    pub gate: GateOptions,
    /// Dialogues open at once (started, not yet done): a new dialogue starts while fewer
    /// are open, and otherwise only when no open one has a request ready; of the ready
    /// ones, the one at the earliest turn goes first. More open dialogues shorten the end
    /// of a job, where fewer dialogues are left than the backend samples at once (the last
    /// ones started no longer have every turn still to do), at the cost of more kept
    /// conversation caches and of chunks finishing later (more work redone after an
    /// interruption). 0: new dialogues start only when none is ready. Not in `run.json`:
    /// it decides only the order requests go out in, and the outputs do not depend on that
    /// where a reply is a function of its own request alone (the embedded model on the
    /// CPU with the file's block weights); where requests go in batches whose members can
    /// change each other's numbers (`--device cuda`, other weights) it may.
    #[serde(skip)]
    pub open_dialogues: usize,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn is_one(x: &usize) -> bool {
    *x <= 1
}

fn shard_str<S: serde::Serializer>(s: &Shard, ser: S) -> std::result::Result<S::Ok, S::Error> {
    ser.serialize_str(&s.to_string())
}

/// Asks the model to play the user ([`SynthOptions::user_sim`]).
const USER_SIM_PROMPT: &str = "You are role-playing a curious person chatting with an \
AI assistant. Read the conversation and write only the person's next message: one or two \
natural sentences that continue the conversation. Do not answer as the assistant.";

/// The generator: plans dialogues, samples their replies through a backend, and turns
/// them into training records (see the crate docs for the steps).
pub struct Synthesizer<'a> {
    /// The chat model that writes the replies (and, with `user_sim`, the user turns).
    pub backend: &'a dyn ChatBackend,
    /// Constraints, phrasings and the user-message bank.
    pub catalog: &'a Catalog,
    /// Where the user turns come from.
    pub users: &'a UserSource,
    /// Picks the best of several candidate replies.
    pub scorer: &'a dyn Scorer,
    /// A judge model (`--judge-model`) asked whether candidate replies keep the
    /// instruction's hobby, figure and persona ([`gatt::judge`]); its verdicts reach the
    /// scorer (choice and `--min-adherence`). Asked only where they count: a turn with
    /// more than one candidate passing the gate, or any turn under `--min-adherence`.
    pub judge: Option<&'a dyn ChatBackend>,
    /// The run's settings.
    pub opts: SynthOptions,
}

/// One dialogue being sampled.
struct InFlight {
    plan: DialoguePlan,
    /// The conversation without the instruction.
    plain: Vec<Message>,
    prompt_tokens: Vec<usize>,
    completion_tokens: Vec<usize>,
    finished: Vec<bool>,
    /// Set when the gate dropped the dialogue: the reason of its last rejected try.
    dropped: Option<Rejection>,
    /// The final reply was cut and is kept without its end-of-turn token.
    final_cut_kept: bool,
    /// Checks the kept replies passed, and checks decided ([`Scorer::adherence`]).
    adherence: (usize, usize),
    /// What the gate rejected in this dialogue.
    counts: GateCounts,
    /// Its next request, or `None` once it is done.
    step: Option<Step>,
    /// The seed of the request in flight.
    seed: u64,
    /// Tokens the model sampled for it: every candidate of every request, rejected ones
    /// included.
    sampled: usize,
}

/// A dialogue's next request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// The user's message of turn `turn` (from 0), written by the model
    /// ([`SynthOptions::user_sim`]).
    UserSim { turn: usize },
    /// Try `attempt` (from 0) at the reply of turn `turn`.
    Reply { turn: usize, attempt: usize },
}

impl Step {
    /// The turn (from 0) it belongs to.
    fn turn(self) -> usize {
        match self {
            Step::UserSim { turn } | Step::Reply { turn, .. } => turn,
        }
    }
}

/// A turn's reply still to choose: the candidates that passed the gate.
struct Open {
    /// The seed of the request that sampled the candidates.
    seed: u64,
    /// The candidates' numbers in that request.
    among: Vec<usize>,
    /// Those candidates.
    shown: Vec<Reply>,
    /// The kind the turn's user message is a probe question about, if any.
    probe: Option<ConstraintKind>,
}

/// What [`Synthesizer::run_chunk`] made of a chunk's plans.
#[derive(Debug, Clone, Default)]
pub struct ChunkOutput {
    /// The training records of the dialogues the gate kept, in plan order.
    pub records: Vec<Dialogue>,
    /// What the gate rejected.
    pub gate: GateCounts,
    /// Tokens the model sampled for the chunk's dialogues: every candidate of every
    /// request, those the gate rejected and those of dropped dialogues included.
    pub tokens_sampled: usize,
}

/// The conversation key of a dialogue's reply requests ([`Request::conversation`]).
fn reply_key(plan: &DialoguePlan) -> String {
    plan.id.clone()
}

/// The conversation key of a dialogue's simulated-user requests (the roles flipped: a
/// conversation of its own).
fn user_sim_key(plan: &DialoguePlan) -> String {
    format!("{} user-sim", plan.id)
}

impl Synthesizer<'_> {
    /// This shard's dialogue plans, in job order.
    pub fn plans(&self) -> Vec<DialoguePlan> {
        let o = PlanOptions {
            seed: self.opts.seed,
            kinds: &self.opts.kinds,
            min_combined: self.opts.min_combined,
            max_combined: self.opts.max_combined,
            terse: self.opts.terse,
            turns: self.opts.turns,
            concise: self.opts.concise,
            probe_rate: self.opts.probe_rate,
            plain_share: self.opts.plain_share,
        };
        (0..self.opts.dialogues)
            .filter(|i| self.opts.shard.owns(*i))
            .map(|i| plan(i, &o, self.catalog, self.users))
            .collect()
    }

    /// Samples the dialogues of `plans`; returns the training records of those the
    /// quality gate kept, in order, and what it rejected. [`Synthesizer::run_chunks`]
    /// with one chunk.
    ///
    /// # Errors
    ///
    /// The backend's first error; nothing of the chunk is returned then.
    pub fn run_chunk(&self, plans: &[DialoguePlan]) -> Result<ChunkOutput> {
        let mut out = None;
        self.run_chunks(&[(0, plans)], &mut |_, o| {
            out = Some(o);
            Ok(())
        })?;
        Ok(out.unwrap_or_default())
    }

    /// Samples the dialogues of `chunks` (each a chunk number and its plans), all through
    /// one [`ChatBackend::generate_each`]: dialogues advance independently, each turn's
    /// request going out as soon as the dialogue's previous one is answered, while the
    /// others are still being sampled; dialogues start in plan order, as
    /// [`SynthOptions::open_dialogues`] says. Once every dialogue of a chunk is done, `on_chunk` gets the chunk's number and
    /// output (the training records of the dialogues the gate kept, in plan order, and what
    /// it rejected); chunks may finish in any order. Every request has its own seed, so the
    /// outputs do not depend on that order or on what else was in flight.
    ///
    /// Each record holds the training form in `messages` (instruction once, as
    /// `placement` says) and the conversation as sampled (instruction in every user turn)
    /// in `meta.augmented`, with the model, seed and token counts.
    ///
    /// Per turn, each candidate reply passes the gate ([`crate::gate`]) or is rejected;
    /// the best passing one is kept. When all are rejected, or (with
    /// [`GateOptions::min_adherence`]) the kept one fails more of its checks than the
    /// minimum allows, the turn is sampled again (try `k`'s request seed is
    /// `derive(turn seed, Stream::SynthResample, k)`) up to
    /// [`GateOptions::resample_tries`] times; then the dialogue is dropped (for
    /// adherence: at once when the minimum is 1, otherwise the dialogue's total decides). With a
    /// [`Synthesizer::judge`], the candidates of an open choice are judged first and the
    /// scorer weighs its verdicts.
    ///
    /// # Errors
    ///
    /// The backend's or `on_chunk`'s first error; the chunks given to `on_chunk` before it
    /// stay given.
    pub fn run_chunks(
        &self,
        chunks: &[(usize, &[DialoguePlan])],
        on_chunk: &mut dyn FnMut(usize, ChunkOutput) -> Result<()>,
    ) -> Result<()> {
        let mut params = self.opts.sampling.clone();
        params.n = self.opts.candidates.max(1);
        let mut user_params = self.opts.sampling.clone();
        user_params.n = 1;
        user_params.max_new_tokens = user_params.max_new_tokens.min(64);
        let plans: Vec<&DialoguePlan> = chunks.iter().flat_map(|(_, p)| p.iter()).collect();
        let mut feed = Dialogues {
            synth: self,
            params,
            user_params,
            live: plans.iter().map(|_| None).collect(),
            plans,
            chunks,
            left: chunks.iter().map(|(_, p)| p.len()).collect(),
            started: 0,
            open: 0,
            window: self.opts.open_dialogues,
            ready: BTreeSet::new(),
            tickets: Vec::new(),
            on_chunk,
            failed: None,
        };
        let outcome = self.backend.generate_each(&mut feed);
        // Whatever happened, the backend can let go of the dialogues still open.
        for d in feed.live.iter().flatten().filter(|d| d.step.is_some()) {
            self.backend.end_conversation(&reply_key(&d.plan));
            self.backend.end_conversation(&user_sim_key(&d.plan));
        }
        outcome?;
        match feed.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Takes the candidates of try `attempt` at turn `turn`'s reply (sampled with request
    /// seed `seed`): the gate, the judge, the choice. Returns the dialogue's next step: the
    /// next try, or `None` when the turn is settled (the reply kept, or the dialogue
    /// dropped).
    fn take_reply(
        &self,
        d: &mut InFlight,
        turn: usize,
        attempt: usize,
        candidates: Vec<Reply>,
    ) -> Result<Option<Step>> {
        let opts = self.opts.gate;
        let last_try = attempt == opts.resample_tries;
        // First the gate: which candidates may be kept.
        // The user's language is read from the user turns as asked: with --user-sim the
        // model writes the later ones, and the planned turns it replaces say nothing.
        let users: Vec<String> = if self.opts.user_sim {
            d.plain
                .iter()
                .filter(|m| m.role == Role::User)
                .map(|m| m.content.clone())
                .collect()
        } else {
            d.plan.users.clone()
        };
        let want = gate::expected(&d.plan.constraints, self.catalog, &users);
        let verdicts: Vec<Option<Rejection>> =
            candidates.iter().map(|r| self.verdict(r, &want)).collect();
        for r in verdicts.iter().flatten() {
            *d.counts.candidates_rejected.entry(*r).or_default() += 1;
        }
        let passing: Vec<usize> = (0..candidates.len())
            .filter(|&c| verdicts[c].is_none())
            .collect();
        let final_turn = turn + 1 == d.plan.users.len();
        let probe = d
            .plan
            .probes
            .iter()
            .find(|(t, _)| *t == turn + 1)
            .map(|(_, k)| k.clone());
        let pick = if !passing.is_empty() {
            Some(passing)
        } else if last_try && opts.cut == CutMode::DropEot && final_turn {
            // Only cut: the final reply is kept without its end-of-turn token.
            let cut: Vec<usize> = (0..candidates.len())
                .filter(|&c| verdicts[c] == Some(Rejection::Cut))
                .collect();
            d.final_cut_kept = !cut.is_empty();
            Some(cut).filter(|c| !c.is_empty())
        } else {
            None
        };
        let Some(among) = pick else {
            if last_try {
                d.dropped = Some(main_reason(&verdicts));
                return Ok(None);
            }
            d.counts.resampled_turns += 1;
            return Ok(Some(Step::Reply {
                turn,
                attempt: attempt + 1,
            }));
        };
        let o = Open {
            seed: d.seed,
            shown: among.iter().map(|&c| candidates[c].clone()).collect(),
            among,
            probe,
        };
        // Then the judge.
        let mut judge_counts = JudgeCounts::default();
        let verdicts = self.judge_open(d, &o, turn, &mut judge_counts)?;
        d.counts.judge.add(&judge_counts);
        // Then the choice.
        let constraints = &d.plan.constraints;
        let k = best(
            self.scorer,
            constraints,
            &o.shown,
            turn + 1,
            o.probe.as_ref(),
            &verdicts,
        );
        let pick_changed = !verdicts.is_empty()
            && best(
                self.scorer,
                constraints,
                &o.shown,
                turn + 1,
                o.probe.as_ref(),
                &[],
            ) != k;
        let r = &o.shown[k];
        let v = verdicts.get(k).map_or(&[][..], Vec::as_slice);
        let (p, n) = self
            .scorer
            .adherence(constraints, &r.text, o.probe.as_ref(), v);
        // Rejection sampling on adherence too: a kept reply below --min-adherence on its
        // own checks sends the turn back for another try while tries are left. After the
        // last one, a dialogue that can no longer reach --min-adherence (at 1: any failed
        // check) is dropped now rather than sampled to its end.
        let min = opts.min_adherence;
        if n > 0 && (p as f64) < min * n as f64 {
            if !last_try {
                d.counts.resampled_for_adherence += 1;
                return Ok(Some(Step::Reply {
                    turn,
                    attempt: attempt + 1,
                }));
            }
            if min >= 1.0 {
                d.dropped = Some(Rejection::LowAdherence);
                return Ok(None);
            }
        }
        // The reply is kept.
        d.counts.judge.picks_changed += usize::from(pick_changed);
        d.adherence = (d.adherence.0 + p, d.adherence.1 + n);
        d.plain.push(Message::assistant(r.text.clone()));
        d.prompt_tokens.push(r.prompt_tokens);
        d.completion_tokens.push(r.completion_tokens);
        d.finished.push(r.finished);
        Ok(None)
    }

    /// The step that starts turn `turn` of `d` (its user message pushed when it comes from
    /// the plan), or `None` when the dialogue has no such turn.
    fn begin_turn(&self, d: &mut InFlight, turn: usize) -> Option<Step> {
        if turn >= self.opts.turns {
            return None;
        }
        let probe = d.plan.probes.iter().any(|(t, _)| *t == turn + 1);
        if self.opts.user_sim && turn > 0 && !probe {
            return Some(Step::UserSim { turn });
        }
        self.ask_reply(d, turn)
    }

    /// Turn `turn`'s first try at a reply, its user message pushed; `None` when the
    /// dialogue has no user message for it.
    fn ask_reply(&self, d: &mut InFlight, turn: usize) -> Option<Step> {
        let user = d.plan.users.get(turn)?;
        d.plain.push(Message::user(user.clone()));
        Some(Step::Reply { turn, attempt: 0 })
    }

    /// The request of `d`'s `step`.
    fn request(&self, d: &InFlight, step: Step) -> Request {
        match step {
            Step::Reply { turn, attempt } => {
                // Stream: SynthReply (parent: the plan seed, index: the turn).
                let first = seed::derive(d.plan.seed, Stream::SynthReply, turn as u64);
                Request::new(
                    attach(&d.plain, &d.plan.instruction, self.opts.attach),
                    // Stream: SynthResample (parent: the turn's seed, index: the try).
                    match attempt {
                        0 => first,
                        k => seed::derive(first, Stream::SynthResample, k as u64),
                    },
                )
                .in_conversation(reply_key(&d.plan))
            }
            Step::UserSim { turn } => {
                // Roles flipped: the model speaks as the user, reading the assistant as
                // its partner.
                let mut messages = vec![Message::system(USER_SIM_PROMPT)];
                messages.extend(d.plain.iter().map(|m| match m.role {
                    Role::User => Message::assistant(m.content.clone()),
                    _ => Message::user(m.content.clone()),
                }));
                Request::new(
                    messages,
                    // Stream: SynthUserSim (parent: the plan seed, index: the turn).
                    seed::derive(d.plan.seed, Stream::SynthUserSim, turn as u64),
                )
                .in_conversation(user_sim_key(&d.plan))
            }
        }
    }

    /// What `d`'s finished sampling gives: its record, or nothing when the gate dropped it
    /// (now also for too low an adherence); its counts either way.
    fn conclude(&self, d: &mut InFlight) -> Option<Dialogue> {
        let min = self.opts.gate.min_adherence;
        let (passed, decided) = d.adherence;
        if d.dropped.is_none() && decided > 0 && (passed as f64) < min * decided as f64 {
            d.dropped = Some(Rejection::LowAdherence);
        }
        d.counts.dialogues = 1;
        if let Some(r) = d.dropped {
            *d.counts.dropped.entry(r).or_default() += 1;
            return None;
        }
        d.counts.kept = 1;
        d.counts.kept_without_end_of_turn = usize::from(d.final_cut_kept);
        d.counts.kept_cut = usize::from(!d.final_cut_kept && d.finished.contains(&false));
        Some(self.record(d))
    }

    /// The judge's verdicts on the open choice `o` of turn `turn` of `d`: per candidate,
    /// per constraint of the dialogue ([`crate::scorer::Judged`]); empty when the judge was
    /// not asked (no judge; a single candidate and no `--min-adherence`; no hobby, figure
    /// or persona). Counts what it said in `counts`.
    fn judge_open(
        &self,
        d: &InFlight,
        o: &Open,
        turn: usize,
        counts: &mut JudgeCounts,
    ) -> Result<Vec<Vec<Option<bool>>>> {
        let Some(judge) = self.judge else {
            return Ok(Vec::new());
        };
        let adherence = self.opts.gate.min_adherence > 0.0;
        if o.shown.len() < 2 && !adherence {
            return Ok(Vec::new());
        }
        let plan = &d.plan;
        let n = plan.constraints.len();
        let mut requests = Vec::new();
        // (candidate, constraint) of each question.
        let mut slots: Vec<(usize, usize)> = Vec::new();
        for (c, reply) in o.shown.iter().enumerate() {
            for (j, con) in plan.constraints.iter().enumerate() {
                if !judge::judged_kind(&con.kind) {
                    continue;
                }
                let index = (o.among[c] * n + j) as u64;
                // Stream: SynthJudge (parent: the candidate's request seed, index:
                // candidate x constraints + constraint).
                let seed = seed::derive(o.seed, Stream::SynthJudge, index);
                requests.push(judge::request(
                    con,
                    self.catalog,
                    &plan.instruction,
                    &plan.users[turn],
                    &reply.text,
                    seed,
                ));
                slots.push((c, j));
            }
        }
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let rulings = judge::ask(judge, &requests, &judge::verdict_params(), &|_| {})?;
        counts.questions += rulings.len();
        let mut out = vec![vec![None; n]; o.shown.len()];
        for (&(c, j), ruling) in slots.iter().zip(&rulings) {
            out[c][j] = ruling.answer.decided();
            match ruling.answer {
                judge::Answer::Yes => counts.yes += 1,
                judge::Answer::No => counts.no += 1,
                judge::Answer::Neither => counts.neither += 1,
            }
        }
        let mut asked: Vec<usize> = slots.iter().map(|&(c, _)| c).collect();
        asked.dedup();
        counts.candidates_judged += asked.len();
        counts.candidates_rejected += asked
            .iter()
            .filter(|&&c| out[c].contains(&Some(false)))
            .count();
        Ok(out)
    }

    /// Why the gate rejects candidate `r`, if it does.
    fn verdict(&self, r: &Reply, want: &gate::Expected) -> Option<Rejection> {
        gate::check_text(&r.text, want).or_else(|| {
            (!r.finished && self.opts.gate.cut != CutMode::Keep).then_some(Rejection::Cut)
        })
    }

    fn record(&self, d: &InFlight) -> Dialogue {
        let p = &d.plan;
        let augmented = attach(&d.plain, &p.instruction, self.opts.attach);
        let messages = to_training(
            &augmented,
            &p.instruction,
            self.opts.attach,
            self.opts.placement,
        );
        let meta = DialogueMeta {
            augmented: Some(augmented),
            model: Some(self.backend.describe()),
            seed: Some(p.seed),
            index: Some(p.index),
            terse: Some(p.terse),
            prompt_tokens: Some(d.prompt_tokens.clone()),
            completion_tokens: Some(d.completion_tokens.clone()),
            finished: Some(d.finished.clone()),
            final_end_of_turn: d.final_cut_kept.then_some(false),
            probe_turns: (!p.probes.is_empty()).then(|| p.probes.iter().map(|(t, _)| *t).collect()),
            probe_kinds: (!p.probes.is_empty())
                .then(|| p.probes.iter().map(|(_, k)| k.clone()).collect()),
            ..DialogueMeta::default()
        };
        Dialogue {
            id: p.id.clone(),
            messages,
            instruction: p.instruction.clone(),
            constraints: p.constraints.clone(),
            meta,
        }
    }
}

/// The reason most candidates of a last try were rejected for (ties: the first in
/// [`Rejection`]'s order).
fn main_reason(verdicts: &[Option<Rejection>]) -> Rejection {
    let mut n: std::collections::BTreeMap<Rejection, usize> = Default::default();
    for r in verdicts.iter().flatten() {
        *n.entry(*r).or_default() += 1;
    }
    let most = n.values().copied().max().unwrap_or(0);
    n.into_iter()
        .find(|(_, c)| *c == most)
        .map_or(Rejection::Empty, |(r, _)| r)
}
