//! Continuous batching on the CPU ([`ChatBackend::generate_each`]): every candidate is a
//! row of one running batch; a row leaves as soon as it stops, and a request's candidates
//! go back to the feed as soon as all of them have, so the dialogue's next turn can join
//! the batch at the next step while the other rows go on decoding.
//!
//! A row joins in the place of a row that is done, its prompt's keys and values written
//! into that one place of the running cache ([`Cache::place`], left-padded to the
//! positions held), the other rows untouched, where the prompt fits in the positions held
//! and its replies in the cache's capacity. Otherwise (no place free, a longer prompt, no
//! room), and when half the rows are done, the batch's KV cache is rebuilt from each row's
//! own keys and values ([`Cache::from_sequences`]: the new rows' prefilled prompts, the
//! others' copied out of the running cache), sized for twice the longest reply still to
//! come so that later rows find room. On the CPU a row's logits are a function of its own tokens
//! alone, whatever the other rows and the padding (`decode_attention.rs`, `qmatvec.rs`),
//! so a candidate samples exactly the tokens it samples alone or in any other batch;
//! [`EmbeddedBackend::generate_each`] uses this path only where that holds
//! ([`crate::llama::Model::positions_independent`]).

use super::{EmbeddedBackend, Prefilled};
use crate::llama::{self, Cache, SeqKv};
use crate::sampling::Sampler;
use crate::sessions::Branch;
use gatt::backend::{candidate_seed, Feed, Reply, Request};
use gatt::{Error, Result};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// One candidate: a row of the running batch, or waiting to join it.
struct Row {
    /// Its request's number ([`Feed`]'s ticket).
    ticket: usize,
    /// Its number among the request's candidates.
    candidate: usize,
    prompt: Arc<Prefilled>,
    sampler: Sampler,
    /// The prompt, then the tokens sampled so far (the sampler's context).
    context: Vec<u32>,
    /// Most tokens it may sample: the request's `max_new_tokens`, fewer when the prompt
    /// leaves less room in the model's context.
    limit: usize,
    /// Logits of its next token.
    logits: Vec<f32>,
    /// Positions whose keys and values the batch's cache holds for it.
    held: usize,
    /// Its place in the running cache; `None` until it joins.
    slot: Option<usize>,
    /// Done sampling: it only waits to be dropped from the batch.
    done: bool,
}

impl Row {
    fn sampled(&self) -> &[u32] {
        &self.context[self.prompt.tokens.len()..]
    }
}

/// A request whose candidates are not all done.
struct Open {
    conversation: Option<String>,
    replies: Vec<Option<Reply>>,
    branches: Vec<Option<Branch>>,
}

/// The running batch: its rows and their cache (rows' padding in `pad`).
struct Batch {
    rows: Vec<Row>,
    cache: Option<Cache>,
    pad: Vec<usize>,
}

/// Each row's next token, `None` for a row that is done or has no room left. The rows
/// draw in parallel on candle's thread pool (a row's draw reads only its own sampler,
/// logits and tokens, so it is the same in any order): about 2% of the running batch's
/// time with 8 rows on 2 cores.
fn draw(rows: &mut [Row]) -> Vec<Option<u32>> {
    let slots: Vec<Mutex<(&mut Row, Option<u32>)>> =
        rows.iter_mut().map(|r| Mutex::new((r, None))).collect();
    candle_core::utils::barrier_pool().execute_chunked(slots.len(), |range| {
        for i in range {
            let mut slot = slots[i].lock().expect("a row's lock");
            let (row, drawn) = &mut *slot;
            if !row.done && row.sampled().len() < row.limit {
                *drawn = Some(row.sampler.sample(&mut row.logits, &row.context));
            }
        }
    });
    slots
        .into_iter()
        .map(|m| m.into_inner().expect("a row's lock").1)
        .collect()
}

impl EmbeddedBackend {
    /// [`ChatBackend::generate_each`] on the CPU, rows joining and leaving one batch of at
    /// most `max_batch` sequences (see the module's docs).
    ///
    /// [`ChatBackend::generate_each`]: gatt::backend::ChatBackend::generate_each
    pub(super) fn decode_continuously(&self, feed: &mut dyn Feed) -> Result<()> {
        let failed = |e: Error| Error::runtime(format!("generation failed: {e}"));
        let keep = self.lock_sessions().budget() > 0;
        let mut batch = Batch {
            rows: Vec::new(),
            cache: None,
            pad: Vec::new(),
        };
        let mut waiting: VecDeque<Row> = VecDeque::new();
        let mut open: HashMap<usize, Open> = HashMap::new();
        let mut tickets = 0;
        loop {
            // Fill the free places: candidates waiting first, then new requests.
            let live = batch.rows.iter().filter(|r| !r.done).count();
            let mut joining = Vec::new();
            while live + joining.len() < self.max_batch {
                if let Some(row) = waiting.pop_front() {
                    joining.push(row);
                    continue;
                }
                let Some((request, params)) = feed.next() else {
                    break;
                };
                let prompt = Arc::new(self.prefill_request(&request)?);
                let n = params.n.max(1);
                let ctx = self.model.cfg.context_length;
                for c in 0..n {
                    waiting.push_back(Row {
                        ticket: tickets,
                        candidate: c,
                        sampler: Sampler::new(&params, candidate_seed(request.seed, c)),
                        context: prompt.tokens.clone(),
                        limit: params.max_new_tokens.min(ctx - prompt.tokens.len()),
                        logits: prompt.logits.clone(),
                        held: prompt.tokens.len(),
                        slot: None,
                        done: false,
                        prompt: Arc::clone(&prompt),
                    });
                }
                open.insert(
                    tickets,
                    Open {
                        conversation: request.conversation,
                        replies: vec![None; n],
                        branches: (0..n).map(|_| None).collect(),
                    },
                );
                tickets += 1;
            }
            let joining = self.join_free_places(&mut batch, joining).map_err(failed)?;
            let finished = batch.rows.iter().filter(|r| r.done).count();
            if !joining.is_empty() || (finished > 0 && 2 * finished >= batch.rows.len()) {
                self.rebuild(&mut batch, joining).map_err(failed)?;
            }
            if batch.rows.is_empty() {
                return Ok(());
            }
            // One token for every row still sampling.
            let stop = &self.format.stop_ids;
            let mut next = Vec::with_capacity(batch.rows.len());
            let mut ended: Vec<(usize, bool)> = Vec::new();
            let draws = draw(&mut batch.rows);
            for (s, (row, drawn)) in batch.rows.iter_mut().zip(draws).enumerate() {
                if row.done {
                    next.push(stop[0]);
                    continue;
                }
                let Some(t) = drawn else {
                    // No room at all: cut before its first token.
                    ended.push((s, false));
                    next.push(stop[0]);
                    continue;
                };
                next.push(t);
                if stop.contains(&t) {
                    ended.push((s, true));
                } else {
                    row.context.push(t);
                    if row.sampled().len() >= row.limit {
                        ended.push((s, false));
                    }
                }
            }
            for &(s, stopped) in &ended {
                batch.rows[s].done = true;
                self.finish(&batch, s, stopped, keep, &mut open, feed)?;
            }
            if batch.rows.iter().all(|r| r.done) {
                batch.rows.clear();
                batch.cache = None;
                continue;
            }
            self.step(&mut batch, &next).map_err(failed)?;
        }
    }

    /// The prompt of `request`, checked and prefilled (from the kept cache, its
    /// conversation's or another's, that holds the longest prefix of it).
    fn prefill_request(&self, request: &Request) -> Result<Prefilled> {
        let prompt = self.checked_prompt(&request.messages)?;
        let reuse = match &request.conversation {
            Some(_) => self.lock_sessions().reusable(&prompt)?,
            None => None,
        };
        let p = self
            .prefill(prompt, reuse)
            .map_err(|e| Error::runtime(format!("generation failed: {e}")))?;
        self.lock_sessions()
            .count(p.tokens.len() - p.reused, p.reused);
        Ok(p)
    }

    /// Marks row `s` done (stopped at an end-of-turn token, or cut), with its reply and
    /// its branch of the conversation's cache; once every candidate of its request is
    /// done, keeps the conversation's branches and hands the replies to `feed`.
    fn finish(
        &self,
        batch: &Batch,
        s: usize,
        stopped: bool,
        keep: bool,
        open: &mut HashMap<usize, Open>,
        feed: &mut dyn Feed,
    ) -> Result<()> {
        let row = &batch.rows[s];
        let prompt_len = row.prompt.tokens.len();
        let reply = self.reply(row.sampled(), stopped, prompt_len)?;
        let entry = open.get_mut(&row.ticket).expect("an open request");
        if keep && entry.conversation.is_some() {
            let fed = row.context[prompt_len..row.held].to_vec();
            let kv = match (&batch.cache, row.slot) {
                (Some(cache), Some(slot)) if !fed.is_empty() => Some(
                    cache
                        .sequence(slot, batch.pad[slot] + prompt_len, fed.len())
                        .map_err(|e| Error::runtime(format!("generation failed: {e}")))?,
                ),
                _ => None,
            };
            entry.branches[row.candidate] =
                Some(Branch::new(&row.prompt.tokens, &row.prompt.kv, fed, kv));
        }
        entry.replies[row.candidate] = Some(reply);
        if entry.replies.iter().all(Option::is_some) {
            let entry = open.remove(&row.ticket).expect("an open request");
            if let Some(key) = &entry.conversation {
                if keep {
                    self.lock_sessions()
                        .keep(key, entry.branches.into_iter().flatten().collect());
                }
            }
            let replies = entry.replies.into_iter().flatten().collect();
            feed.done(row.ticket, replies)?;
        }
        Ok(())
    }

    /// Puts rows of `joining` in the places of rows that are done, where each fits (see
    /// the module's docs); returns the rows that found no place.
    fn join_free_places(&self, batch: &mut Batch, joining: Vec<Row>) -> Result<Vec<Row>> {
        let Some(cache) = batch.cache.as_mut() else {
            return Ok(joining);
        };
        let (len, capacity) = (cache.len(), cache.capacity());
        let free: Vec<usize> = (0..batch.rows.len())
            .filter(|&s| batch.rows[s].done)
            .collect();
        let mut free = free.into_iter();
        let mut rest = Vec::new();
        for mut row in joining {
            let held = row.prompt.kv.len();
            let fits = held == row.held && held <= len && len + row.limit <= capacity;
            // A free place is only taken by a row that fits in it.
            match if fits { free.next() } else { None } {
                Some(s) => {
                    batch.pad[s] = cache.place(s, &row.prompt.kv)?;
                    self.joins.placed.fetch_add(1, Ordering::Relaxed);
                    row.slot = Some(s);
                    batch.rows[s] = row;
                }
                None => rest.push(row),
            }
        }
        Ok(rest)
    }

    /// A new batch of the rows still sampling and `joining`: a cache holding each one's
    /// keys and values, left-padded to the longest.
    fn rebuild(&self, batch: &mut Batch, joining: Vec<Row>) -> Result<()> {
        self.joins.rebuilt.fetch_add(1, Ordering::Relaxed);
        let mut kept: Vec<SeqKv> = Vec::new();
        let mut rows = Vec::new();
        for row in batch.rows.drain(..).filter(|r| !r.done) {
            let (Some(cache), Some(slot)) = (&batch.cache, row.slot) else {
                return Err(Error::runtime("a running row without its cache"));
            };
            kept.push(cache.sequence(slot, batch.pad[slot], row.held)?);
            rows.push(row);
        }
        // The old cache goes before the new one is allocated, so that the allocator can
        // hand its memory on: a rebuild otherwise faulted in a whole cache of fresh pages
        // (two thirds of a rebuild's time went to the kernel zeroing them).
        batch.cache = None;
        rows.extend(joining);
        if rows.is_empty() {
            batch.pad.clear();
            return Ok(());
        }
        // The rows already running first (their keys and values copied out above), then
        // those joining (their prompts').
        let mut seqs: Vec<&SeqKv> = kept.iter().collect();
        seqs.extend(rows[kept.len()..].iter().map(|r| r.prompt.kv.as_ref()));
        let room = rows
            .iter()
            .map(|r| r.limit - r.sampled().len())
            .max()
            .unwrap_or(0);
        let dtype = self.model.sampling_cache(0).dtype();
        // Room for twice the longest reply still to come: rows joining later take the
        // places of rows that are done without a rebuild while their replies fit.
        let (cache, pad) = Cache::from_sequences(&self.model.cfg, &seqs, 2 * room, dtype)?;
        for (s, row) in rows.iter_mut().enumerate() {
            row.slot = Some(s);
        }
        batch.rows = rows;
        batch.cache = Some(cache);
        batch.pad = pad;
        Ok(())
    }

    /// Feeds `next` (one token per row) through the model: every row's next logits.
    fn step(&self, batch: &mut Batch, next: &[u32]) -> Result<()> {
        let cache = batch.cache.as_mut().expect("a running batch has its cache");
        let dev = self.model.device();
        // A row that is done waits in the batch only until the next rebuild or until a
        // joining row takes its place, and neither its logits nor the keys and values of
        // this step are read: it runs as a sequence whose every earlier position is
        // padding, at position 0, attending to its new position alone instead of its
        // whole context (which was up to a tenth of the steps' attention in a synthesis
        // job's tail), and never past the rotary table however long the others go on.
        // The others are untouched: a row's attention reads its own keys and values only.
        let attend_from: Vec<usize> = batch
            .rows
            .iter()
            .zip(&batch.pad)
            .map(|(row, &pad)| if row.done { cache.len() } else { pad })
            .collect();
        let (tokens, positions) = llama::step_inputs(next, &attend_from, cache.len(), dev)?;
        let logits = self
            .model
            .forward(&tokens, &positions, &attend_from, cache)?;
        for (row, logits) in batch.rows.iter_mut().zip(llama::logits_rows(&logits)?) {
            if !row.done {
                row.logits = logits;
                row.held += 1;
            }
        }
        Ok(())
    }
}
