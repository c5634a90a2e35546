//! Sampling the replies: the instruction in every user turn, the earlier sampled replies
//! in context, dialogues batched through the backend turn by turn.

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
    /// Dialogues per chunk file (the unit of resumption), sampled together as one batch;
    /// 0 counts as 1.
    pub chunk: usize,
    /// The quality gate: cut, empty and degenerate replies (see [`crate::gate`]).
    pub gate: GateOptions,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
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
}

/// A turn's reply still to choose: the candidates that passed the gate.
struct Open {
    /// The dialogue (index into the chunk's live dialogues).
    dialogue: usize,
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

    /// Samples the dialogues of `plans` together; returns the training records of those
    /// the quality gate kept, in order, and what it rejected.
    ///
    /// Each record holds the training form in `messages` (instruction once, as
    /// `placement` says) and the conversation as sampled (instruction in every user turn)
    /// in `meta.augmented`, with the model, seed and token counts.
    ///
    /// Per turn, each candidate reply passes the gate ([`crate::gate`]) or is rejected;
    /// the best passing one is kept. When all are rejected, the turn is sampled again
    /// (try `k`'s request seed is `derive(turn seed, Stream::SynthResample, k)`) up to
    /// [`GateOptions::resample_tries`] times, then the dialogue is dropped. With a
    /// [`Synthesizer::judge`], the candidates of an open choice are judged first (all
    /// dialogues of the batch together) and the scorer weighs its verdicts.
    ///
    /// # Errors
    ///
    /// The backend's first error; nothing of the chunk is returned then.
    pub fn run_chunk(&self, plans: &[DialoguePlan]) -> Result<ChunkOutput> {
        let out = self.sample_chunk(plans);
        // Whatever happened, the backend can let go of these dialogues.
        for p in plans {
            self.backend.end_conversation(&reply_key(p));
            self.backend.end_conversation(&user_sim_key(p));
        }
        out
    }

    /// [`Synthesizer::run_chunk`]'s work.
    fn sample_chunk(&self, plans: &[DialoguePlan]) -> Result<ChunkOutput> {
        let mut live: Vec<InFlight> = plans
            .iter()
            .map(|p| InFlight {
                plan: p.clone(),
                plain: Vec::new(),
                prompt_tokens: Vec::new(),
                completion_tokens: Vec::new(),
                finished: Vec::new(),
                dropped: None,
                final_cut_kept: false,
                adherence: (0, 0),
            })
            .collect();
        let mut counts = GateCounts {
            dialogues: plans.len(),
            ..GateCounts::default()
        };
        let mut params = self.opts.sampling.clone();
        params.n = self.opts.candidates.max(1);
        for turn in 0..self.opts.turns {
            if self.opts.user_sim && turn > 0 {
                self.simulate_users(&mut live, turn)?;
            }
            let active: Vec<usize> = (0..live.len())
                .filter(|&i| live[i].dropped.is_none() && live[i].plan.users.len() > turn)
                .collect();
            if active.is_empty() {
                break;
            }
            for &i in &active {
                let d = &mut live[i];
                d.plain.push(Message::user(d.plan.users[turn].clone()));
            }
            self.sample_turn(&mut live, active, turn, &params, &mut counts)?;
        }
        let min = self.opts.gate.min_adherence;
        for d in &mut live {
            let (passed, decided) = d.adherence;
            if d.dropped.is_none() && decided > 0 && (passed as f64) < min * decided as f64 {
                d.dropped = Some(Rejection::LowAdherence);
            }
        }
        let mut records = Vec::new();
        for d in live {
            if let Some(r) = d.dropped {
                *counts.dropped.entry(r).or_default() += 1;
                continue;
            }
            counts.kept += 1;
            counts.kept_without_end_of_turn += usize::from(d.final_cut_kept);
            counts.kept_cut += usize::from(!d.final_cut_kept && d.finished.contains(&false));
            records.push(self.record(d));
        }
        Ok(ChunkOutput {
            records,
            gate: counts,
        })
    }

    /// Samples turn `turn`'s reply of the dialogues `active` (whose last message is the
    /// user's), resampling those whose candidates the gate rejected.
    fn sample_turn(
        &self,
        live: &mut [InFlight],
        mut pending: Vec<usize>,
        turn: usize,
        params: &SamplingParams,
        counts: &mut GateCounts,
    ) -> Result<()> {
        let opts = self.opts.gate;
        for attempt in 0..=opts.resample_tries {
            if attempt > 0 {
                counts.resampled_turns += pending.len();
            }
            let requests: Vec<Request> = pending
                .iter()
                .map(|&i| {
                    let d = &live[i];
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
                })
                .collect();
            let replies = self.backend.generate(&requests, params)?;
            let last_try = attempt == opts.resample_tries;
            let mut again = Vec::new();
            // First the gate: which candidates of each turn may be kept.
            let mut open: Vec<Open> = Vec::new();
            for ((&i, candidates), request) in pending.iter().zip(replies).zip(&requests) {
                let d = &mut live[i];
                let want = gate::expected(&d.plan.constraints, self.catalog, &d.plan.users);
                let verdicts: Vec<Option<Rejection>> =
                    candidates.iter().map(|r| self.verdict(r, &want)).collect();
                for r in verdicts.iter().flatten() {
                    *counts.candidates_rejected.entry(*r).or_default() += 1;
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
                match pick {
                    Some(among) => open.push(Open {
                        dialogue: i,
                        seed: request.seed,
                        shown: among.iter().map(|&c| candidates[c].clone()).collect(),
                        among,
                        probe,
                    }),
                    None if last_try => d.dropped = Some(main_reason(&verdicts)),
                    None => again.push(i),
                }
            }
            // Then the judge, on every open choice of the batch at once.
            let judged = self.judge_open(live, &open, turn, &mut counts.judge)?;
            // Then the choice.
            for (o, verdicts) in open.iter().zip(judged) {
                let d = &mut live[o.dialogue];
                let constraints = &d.plan.constraints;
                let k = best(
                    self.scorer,
                    constraints,
                    &o.shown,
                    turn + 1,
                    o.probe.as_ref(),
                    &verdicts,
                );
                if !verdicts.is_empty()
                    && best(
                        self.scorer,
                        constraints,
                        &o.shown,
                        turn + 1,
                        o.probe.as_ref(),
                        &[],
                    ) != k
                {
                    counts.judge.picks_changed += 1;
                }
                let r = &o.shown[k];
                let v = verdicts.get(k).map_or(&[][..], Vec::as_slice);
                let (p, n) = self
                    .scorer
                    .adherence(constraints, &r.text, o.probe.as_ref(), v);
                d.adherence = (d.adherence.0 + p, d.adherence.1 + n);
                d.plain.push(Message::assistant(r.text.clone()));
                d.prompt_tokens.push(r.prompt_tokens);
                d.completion_tokens.push(r.completion_tokens);
                d.finished.push(r.finished);
            }
            if again.is_empty() {
                break;
            }
            pending = again;
        }
        Ok(())
    }

    /// The judge's verdicts on the open choices of turn `turn`: per choice, per candidate,
    /// per constraint of the dialogue ([`crate::scorer::Judged`]); empty for a choice the
    /// judge was not asked about (no judge; a single candidate and no `--min-adherence`;
    /// no hobby, figure or persona). Counts what it said in `counts`.
    fn judge_open(
        &self,
        live: &[InFlight],
        open: &[Open],
        turn: usize,
        counts: &mut JudgeCounts,
    ) -> Result<Vec<Vec<Vec<Option<bool>>>>> {
        let mut out: Vec<Vec<Vec<Option<bool>>>> = vec![Vec::new(); open.len()];
        let Some(judge) = self.judge else {
            return Ok(out);
        };
        let adherence = self.opts.gate.min_adherence > 0.0;
        let mut requests = Vec::new();
        // (choice, candidate, constraint) of each question.
        let mut slots: Vec<(usize, usize, usize)> = Vec::new();
        for (o_i, o) in open.iter().enumerate() {
            if o.shown.len() < 2 && !adherence {
                continue;
            }
            let plan = &live[o.dialogue].plan;
            let n = plan.constraints.len();
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
                    slots.push((o_i, c, j));
                }
            }
        }
        if requests.is_empty() {
            return Ok(out);
        }
        let rulings = judge::ask(judge, &requests, &judge::verdict_params(), &|_| {})?;
        counts.questions += rulings.len();
        for (&(o_i, c, j), ruling) in slots.iter().zip(&rulings) {
            if out[o_i].is_empty() {
                let n = live[open[o_i].dialogue].plan.constraints.len();
                out[o_i] = vec![vec![None; n]; open[o_i].shown.len()];
            }
            out[o_i][c][j] = ruling.answer.decided();
            match ruling.answer {
                judge::Answer::Yes => counts.yes += 1,
                judge::Answer::No => counts.no += 1,
                judge::Answer::Neither => counts.neither += 1,
            }
        }
        let mut asked: Vec<(usize, usize)> = slots.iter().map(|&(o, c, _)| (o, c)).collect();
        asked.dedup();
        counts.candidates_judged += asked.len();
        counts.candidates_rejected += asked
            .iter()
            .filter(|&&(o, c)| out[o][c].contains(&Some(false)))
            .count();
        Ok(out)
    }

    /// Why the gate rejects candidate `r`, if it does.
    fn verdict(&self, r: &Reply, want: &gate::Expected) -> Option<Rejection> {
        gate::check_text(&r.text, want).or_else(|| {
            (!r.finished && self.opts.gate.cut != CutMode::Keep).then_some(Rejection::Cut)
        })
    }

    /// Writes each live dialogue's next user message with the model playing the user.
    fn simulate_users(&self, live: &mut [InFlight], turn: usize) -> Result<()> {
        let is_probe = |d: &InFlight| d.plan.probes.iter().any(|(t, _)| *t == turn + 1);
        let idx: Vec<usize> = (0..live.len())
            .filter(|&i| {
                live[i].dropped.is_none() && live[i].plain.len() == 2 * turn && !is_probe(&live[i])
            })
            .collect();
        let requests: Vec<Request> = idx
            .iter()
            .map(|&i| {
                let d = &live[i];
                // Roles flipped: the model speaks as the user, reading the assistant as its partner.
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
            })
            .collect();
        let mut params = self.opts.sampling.clone();
        params.n = 1;
        params.max_new_tokens = params.max_new_tokens.min(64);
        let replies = self.backend.generate(&requests, &params)?;
        for (&i, r) in idx.iter().zip(replies) {
            let text = r[0].text.trim().to_string();
            let users = &mut live[i].plan.users;
            users.truncate(turn);
            if !text.is_empty() {
                users.push(text);
            }
        }
        Ok(())
    }

    fn record(&self, d: InFlight) -> Dialogue {
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
            prompt_tokens: Some(d.prompt_tokens),
            completion_tokens: Some(d.completion_tokens),
            finished: Some(d.finished),
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
