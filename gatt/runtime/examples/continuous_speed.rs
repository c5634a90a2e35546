//! Generated tokens/s of multi-turn dialogues through the continuous batch
//! ([`ChatBackend::generate_each`], as `gatt synth` and `gatt eval` drive it) against the
//! model's raw batched decoding steps at the same batch size, in one run.
//!
//! Usage: cargo run -p gatt-runtime --example continuous_speed -- [batch=8] [dialogues=24]
//! [turns=3] [max=320] [rounds=1] [raw=1]
//!
//! The dialogues sample at the default settings (temperature 0.7, top-p 0.9, penalty 1.1)
//! up to `max` tokens per reply, with kept conversation caches; every sampled token counts
//! (prefill of the new turns, sampling and the batch's rebuilds are part of the time). The
//! raw decode is `batch` sequences decoding as many steps as a mean reply, decoding steps
//! only (no prefill, no sampling): the ceiling. Its prompts are as long as makes its steps
//! attend over as many positions on average as the dialogues' decoding steps did (a
//! step's attention grows with its sequence's length, and long replies at long prompts
//! weigh more in the dialogues than the mean prompt and the mean reply say). Both ratios
//! are printed, by wall time and by the process's CPU time (which a busy shared machine
//! disturbs less); with several rounds, also the ratio of the rounds pooled. With `raw=0` only the dialogues run (to
//! profile them alone).
use candle_core::Device;
use gatt::backend::{ChatBackend, Feed, Reply, Request, SamplingParams};
use gatt::model::ModelSource;
use gatt::Message;
use gatt_runtime::llama::{logits_rows, pad_prompts, step_inputs};
use gatt_runtime::{load_model, EmbeddedBackend};
use std::collections::VecDeque;
use std::time::Instant;

/// Passes of the raw decode per round.
const RAW_PASSES: usize = 3;

const SYSTEMS: [&str; 4] = [
    "Always answer in French.",
    "You are a pirate.",
    "Your hobby is tennis.",
    "Act as Napoleon.",
];
const USERS: [&str; 5] = [
    "Tell me about your morning.",
    "What should I cook tonight?",
    "Name a famous painter and say why people like them.",
    "Why is the sky blue?",
    "Give me three tips for learning a language.",
];

struct Dialogues {
    messages: Vec<Vec<Message>>,
    answered: Vec<usize>,
    turns: usize,
    params: SamplingParams,
    ready: VecDeque<usize>,
    tickets: Vec<usize>,
    tokens: usize,
    prompt_tokens: usize,
    requests: usize,
    /// Decoding steps of the replies (a reply's first token comes from its prompt's
    /// prefill) and the positions they attended over, summed.
    steps: usize,
    attended: usize,
}

impl Feed for Dialogues {
    fn next(&mut self) -> Option<(Request, SamplingParams)> {
        let i = self.ready.pop_front()?;
        let turn = self.answered[i];
        self.messages[i].push(Message::user(USERS[(i + turn) % USERS.len()]));
        self.tickets.push(i);
        let r = Request::new(self.messages[i].clone(), (i * 100 + turn) as u64)
            .in_conversation(format!("d{i}"));
        Some((r, self.params.clone()))
    }

    fn done(&mut self, ticket: usize, replies: Vec<Reply>) -> gatt::Result<()> {
        let i = self.tickets[ticket];
        for r in &replies {
            self.tokens += r.completion_tokens;
            self.prompt_tokens += r.prompt_tokens;
            self.requests += 1;
            // Step k feeds the reply's token k-1 at position p+k-1 and attends over p+k
            // positions: c steps for a reply that stopped (the last one draws its
            // end-of-turn token, which `completion_tokens` leaves out), c-1 for one cut
            // at the limit (its last token is never fed).
            let p = r.prompt_tokens;
            let steps = if r.finished {
                r.completion_tokens
            } else {
                r.completion_tokens.saturating_sub(1)
            };
            self.steps += steps;
            self.attended += steps * p + steps * (steps + 1) / 2;
        }
        self.messages[i].push(Message::assistant(replies[0].text.clone()));
        self.answered[i] += 1;
        if self.answered[i] < self.turns {
            self.ready.push_back(i);
        }
        Ok(())
    }
}

fn main() {
    gatt_runtime::allocator::tune();
    let arg = |key: &str, default: usize| -> usize {
        std::env::args()
            .find_map(|a| a.strip_prefix(key).and_then(|v| v.parse().ok()))
            .unwrap_or(default)
    };
    let (batch, dialogues, turns, max, rounds) = (
        arg("batch=", 8),
        arg("dialogues=", 24),
        arg("turns=", 3),
        arg("max=", 320),
        arg("rounds=", 1),
    );
    let raw = arg("raw=", 1) != 0;
    let source = ModelSource::resolve("default").unwrap();
    let backend = EmbeddedBackend::load(&source, &Device::Cpu, batch).unwrap();
    let model = load_model(&source, &Device::Cpu).unwrap();
    let mut totals = [0f64; 6];
    for round in 1..=rounds {
        let mut feed = Dialogues {
            messages: (0..dialogues)
                .map(|i| vec![Message::system(SYSTEMS[i % SYSTEMS.len()])])
                .collect(),
            answered: vec![0; dialogues],
            turns,
            params: SamplingParams {
                max_new_tokens: max,
                ..SamplingParams::default()
            },
            ready: (0..dialogues).collect(),
            tickets: Vec::new(),
            tokens: 0,
            prompt_tokens: 0,
            requests: 0,
            steps: 0,
            attended: 0,
        };
        let (t0, c0) = (Instant::now(), cpu_seconds());
        backend.generate_each(&mut feed).unwrap();
        let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        let dialogue_rate = feed.tokens as f64 / secs;
        let mean_prompt = feed.prompt_tokens / feed.requests.max(1);
        if !raw {
            println!(
                "round {round}: {} tokens in {secs:.1} s = {dialogue_rate:.1} tokens/s, \
                 {} prompt tokens in {} requests; prefilled and reused since loading {:?}, \
                 joins in a free place and rebuilds {:?}",
                feed.tokens,
                feed.prompt_tokens,
                feed.requests,
                backend.prefill_counts(),
                backend.join_counts()
            );
            continue;
        }

        // Raw decoding steps of `batch` sequences, as many as a mean reply, from prompts
        // such that a step attends over as many positions on average as the dialogues'
        // steps did: step i (i = 1..steps) attends over raw_prompt + i.
        let steps = (feed.tokens / feed.requests.max(1)).max(16);
        let mean_attended = feed.attended as f64 / feed.steps.max(1) as f64;
        let raw_prompt = (mean_attended - (steps + 1) as f64 / 2.0).round().max(1.0) as usize;
        let prompts: Vec<Vec<u32>> = (0..batch)
            .map(|s| {
                (0..raw_prompt)
                    .map(|i| ((i * 31 + s * 7) % 5000 + 100) as u32)
                    .collect()
            })
            .collect();
        // Three passes, timed together: the raw phase then spans about half the
        // dialogues' time, so slow drifts of a shared machine weigh on both alike.
        let (mut raw_secs, mut raw_cpu) = (0.0, 0.0);
        for _ in 0..RAW_PASSES {
            let mut cache = model.sampling_cache(raw_prompt + steps + 1);
            let bt = pad_prompts(&prompts, 2, &Device::Cpu).unwrap();
            model
                .forward(&bt.tokens, &bt.positions, &bt.pad, &mut cache)
                .unwrap();
            let (t1, c1) = (Instant::now(), cpu_seconds());
            for _ in 0..steps {
                let (t, p) =
                    step_inputs(&vec![500; batch], &bt.pad, cache.len(), &Device::Cpu).unwrap();
                let l = model.forward(&t, &p, &bt.pad, &mut cache).unwrap();
                let _ = logits_rows(&l).unwrap();
            }
            raw_secs += t1.elapsed().as_secs_f64();
            raw_cpu += cpu_seconds() - c1;
        }
        let steps = steps * RAW_PASSES;
        let raw_rate = (batch * steps) as f64 / raw_secs;
        let cpu_ratio = (feed.tokens as f64 / cpu) / ((batch * steps) as f64 / raw_cpu);
        println!(
            "round {round}: {dialogues} dialogues x {turns} turns, batch {batch}: {} tokens in \
             {secs:.1} s = {dialogue_rate:.1} tokens/s (mean prompt {mean_prompt}, mean reply \
             {}, a decoding step attending over {mean_attended:.0} positions on average); raw \
             batch-{batch} decode from {raw_prompt}-token prompts: {raw_rate:.1} tokens/s; ratio \
             {:.2}; per CPU second (user + system, {cpu:.1} s and {raw_cpu:.1} s): ratio \
             {cpu_ratio:.2}",
            feed.tokens,
            steps / RAW_PASSES,
            dialogue_rate / raw_rate
        );
        // Pooled over the rounds: [tokens, wall s, CPU s] of the dialogues, then of the
        // raw decode.
        for (total, x) in totals.iter_mut().zip([
            feed.tokens as f64,
            secs,
            cpu,
            (batch * steps) as f64,
            raw_secs,
            raw_cpu,
        ]) {
            *total += x;
        }
    }
    if rounds > 1 && raw {
        let [tokens, secs, cpu, raw_tokens, raw_secs, raw_cpu] = totals;
        println!(
            "all {rounds} rounds: ratio {:.2} by wall time, {:.2} by CPU time",
            (tokens / secs) / (raw_tokens / raw_secs),
            (tokens / cpu) / (raw_tokens / raw_cpu),
        );
    }
}

/// CPU seconds this process has used so far, user and system, all threads. On a shared
/// machine it leaves out the time a core was taken away (steal), which the wall clock
/// counts.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes the struct it is given.
    let usage = unsafe {
        let mut u = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
