//! The synthesis quality gate on scripted backends: cut, empty and repeating replies
//! resampled or dropped, `--cut-replies drop-eot`, `--min-adherence`, and instruction-free
//! dialogues kept in the user's language.

use gatt::backend::{ChatBackend, Reply, Request, SamplingParams};
use gatt::catalog::Catalog;
use gatt::{ConstraintKind, Dialogue, Role};
use gatt_synth::plan::Shard;
use gatt_synth::users::UserSource;
use gatt_synth::{DefaultScorer, Synthesizer};
use std::sync::atomic::{AtomicUsize, Ordering};

mod common;
use common::{count, opts};

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
    let (out, seeds) = scored(script, turns, gate, &DefaultScorer);
    (out.records, out.gate, seeds)
}

/// [`gated`] with `scorer` choosing and scoring the replies; the whole chunk back.
fn scored(
    script: Vec<&'static str>,
    turns: usize,
    gate: gatt_synth::GateOptions,
    scorer: &dyn gatt_synth::Scorer,
) -> (gatt_synth::ChunkOutput, Vec<u64>) {
    let backend = Scripted::new(script);
    let catalog = Catalog::builtin();
    let users = UserSource::Bank(catalog.user_bank.clone());
    let mut o = opts(Shard::default());
    (o.dialogues, o.turns, o.candidates) = (1, turns, 1);
    o.kinds = vec![ConstraintKind::Hobby];
    o.gate = gate;
    let s = Synthesizer {
        backend: &backend,
        catalog: &catalog,
        users: &users,
        scorer,
        judge: None,
        opts: o,
    };
    let out = s.run_chunk(&s.plans()).unwrap();
    let seeds = backend.seeds.lock().unwrap().clone();
    (out, seeds)
}

fn gate(cut: gatt_synth::CutMode, tries: usize) -> gatt_synth::GateOptions {
    gatt_synth::GateOptions {
        cut,
        resample_tries: tries,
        min_adherence: 0.0,
    }
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

/// `gated` runs hobby constraints: a reply that calls itself an AI steps out of the role.
#[test]
fn a_reply_out_of_the_role_is_resampled() {
    use gatt_synth::{CutMode, Rejection};
    const AI: &str = "As an AI language model, I don't have personal preferences.";
    let (records, counts, _) = gated(vec![AI, GOOD], 1, gate(CutMode::Resample, 3));
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].messages.last().unwrap().content, GOOD);
    assert_eq!(
        count(&counts.candidates_rejected, Rejection::BreaksCharacter),
        1
    );
    // Never anything else: the dialogue is dropped, and says why.
    let (records, counts, _) = gated(vec![AI], 1, gate(CutMode::Resample, 1));
    assert!(records.is_empty());
    assert_eq!(count(&counts.dropped, Rejection::BreaksCharacter), 1);
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

const OFF: &str = "That is off topic, sorry about it.";

/// One 3-turn dialogue, one candidate, scored by [`OffScorer`] under `--min-adherence
/// min` with `tries` new tries per turn; returns the chunk and the request seeds.
fn off_run(
    script: Vec<&'static str>,
    tries: usize,
    min: f64,
) -> (gatt_synth::ChunkOutput, Vec<u64>) {
    let gate = gatt_synth::GateOptions {
        cut: gatt_synth::CutMode::Resample,
        resample_tries: tries,
        min_adherence: min,
    };
    scored(script, 3, gate, &OffScorer)
}

#[test]
fn min_adherence_drops_dialogues_that_lose_the_instruction() {
    use gatt_synth::Rejection;
    let run = |min: f64| off_run(vec![GOOD, OFF, GOOD], 0, min).0;
    // 2 of 3 replies keep it: kept at 0.6, dropped at 0.7.
    assert_eq!(run(0.6).records.len(), 1);
    let out = run(0.7);
    assert!(out.records.is_empty());
    assert_eq!(count(&out.gate.dropped, Rejection::LowAdherence), 1);
}

/// With `--min-adherence 1`, a turn whose reply fails its check is sampled again with a
/// new seed; when every try fails, the dialogue is dropped at once, its later turns never
/// sampled.
#[test]
fn a_turn_below_min_adherence_is_resampled_then_the_dialogue_dropped_at_once() {
    use gatt_synth::Rejection;
    let run = |script| off_run(script, 2, 1.0);
    // Turn 2 fails once, then passes: kept, every reply on topic.
    let (out, seeds) = run(vec![GOOD, OFF, GOOD, GOOD]);
    assert_eq!(out.records.len(), 1);
    assert_eq!(out.gate.resampled_for_adherence, 1);
    assert_eq!(out.gate.resampled_turns, 0);
    assert_eq!(seeds.len(), 4, "three turns and one more try");
    assert_ne!(seeds[1], seeds[2], "the try has its own seed");
    let replies: Vec<&str> = out.records[0]
        .messages
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .map(|m| m.content.as_str())
        .collect();
    assert!(replies.iter().all(|r| *r == GOOD), "{replies:?}");
    // Turn 2 fails every try: dropped after the third, turn 3 never asked.
    let (out, seeds) = run(vec![GOOD, OFF, OFF, OFF]);
    assert!(out.records.is_empty());
    assert_eq!(count(&out.gate.dropped, Rejection::LowAdherence), 1);
    assert_eq!(out.gate.resampled_for_adherence, 2);
    assert_eq!(seeds.len(), 4, "turn 1, then turn 2 three times");
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
