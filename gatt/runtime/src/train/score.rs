//! Scoring given replies: the negative log-likelihood a model assigns to the loss tokens
//! of masked samples, per sample and in all (perplexity = exp(mean NLL per token)).
//!
//! This is the training loss without a backward pass, on the same samples `gatt train`
//! reads: with GAtt masks it scores the final reply of each dialogue given everything
//! before it. Comparing a base model and a fine-tune on held-out reference answers shows
//! what the fine-tune cost in general quality (the paper's check that GAtt does not hurt
//! other abilities).

use super::data::{check, Example};
use super::loss::{token_nll, LossMean, MicroBatch, StepTotals};
use crate::llama::Model;
use candle_core::Device;
use gatt::dataset::read_samples;
use gatt::error::Location;
use gatt::{Error, Result};
use std::path::Path;

/// One sample's score.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SampleScore {
    /// 0-based row in the data file.
    pub row: usize,
    /// The sample's id.
    pub id: String,
    /// Tokens that carry loss (predicted positions).
    pub loss_tokens: usize,
    /// Sum of the loss tokens' negative log-likelihoods, in nats.
    pub nll_sum: f64,
    /// `nll_sum / loss_tokens`, in nats per token.
    pub nll_mean: f64,
}

/// Scores of a data file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Scores {
    /// Per sample, in file order (samples without loss tokens are left out).
    pub samples: Vec<SampleScore>,
    /// Samples without a loss token (nothing to score).
    pub without_loss: usize,
    /// Loss tokens over all scored samples.
    pub loss_tokens: usize,
    /// Mean negative log-likelihood per loss token over the whole file, in nats.
    pub nll_per_token: f64,
    /// `exp(nll_per_token)`.
    pub perplexity: f64,
}

/// Scores the loss tokens of every sample in `data` (masked samples, .parquet or .jsonl)
/// under `model`, in micro-batches of at most `batch_tokens` tokens (a longer sample runs
/// alone). `stop_ids` are the model's end-of-turn tokens, checked as training checks them.
/// `on_sample` is called with the number of samples done.
///
/// # Errors
///
/// An input error naming the file, row and field for a sample that does not fit the model
/// (an id outside its vocabulary, longer than its context, labels of another length),
/// or when no sample has a loss token; a runtime error when the forward pass fails.
pub fn score(
    model: &Model,
    data: &Path,
    stop_ids: &[u32],
    batch_tokens: usize,
    device: &Device,
    mut on_sample: impl FnMut(usize),
) -> Result<Scores> {
    let samples = read_samples(data)?;
    let context = model.cfg.context_length;
    let mut todo: Vec<(usize, String, Example)> = Vec::new();
    let mut without_loss = 0;
    for (row, s) in samples.into_iter().enumerate() {
        check(data, row, &s, model.cfg.vocab, stop_ids)?;
        if s.input_ids.len() > context {
            return Err(Error::input(format!(
                "{} tokens, longer than the model's context ({context})",
                s.input_ids.len()
            ))
            .at(Location::in_file(data)
                .at_row(row)
                .with_id(&s.id)
                .with_field("input_ids")));
        }
        let ex = Example {
            ids: s.input_ids,
            labels: s.labels,
        };
        if ex.n_targets() == 0 {
            without_loss += 1;
        } else {
            todo.push((row, s.id, ex));
        }
    }
    if todo.is_empty() {
        return Err(Error::input(format!(
            "{}: no sample has a loss token (labels other than -100) to score",
            data.display()
        )));
    }
    let mut out = Vec::with_capacity(todo.len());
    let mut start = 0;
    while start < todo.len() {
        // Samples in file order until the budget is full (at least one).
        let mut end = start + 1;
        let mut tokens = todo[start].2.ids.len();
        while end < todo.len() && tokens + todo[end].2.ids.len() <= batch_tokens {
            tokens += todo[end].2.ids.len();
            end += 1;
        }
        let batch: Vec<&Example> = todo[start..end].iter().map(|(_, _, e)| e).collect();
        let totals = StepTotals::of(batch.iter().copied());
        let mb = if device.is_cpu() {
            MicroBatch::packed(&batch, LossMean::Token, totals, device)
        } else {
            MicroBatch::new(&batch, LossMean::Token, totals, device)
        }
        .and_then(|mb| token_nll(model, &mb)?.to_vec1::<f32>())
        .map_err(|e| Error::runtime(format!("scoring {}: {e}", data.display())))?;
        // The targets lie in example order.
        let mut at = 0;
        for (row, id, ex) in &todo[start..end] {
            let n = ex.n_targets();
            let nll_sum: f64 = mb[at..at + n].iter().map(|&x| f64::from(x)).sum();
            at += n;
            out.push(SampleScore {
                row: *row,
                id: id.clone(),
                loss_tokens: n,
                nll_sum,
                nll_mean: nll_sum / n as f64,
            });
        }
        start = end;
        on_sample(start);
    }
    let loss_tokens: usize = out.iter().map(|s| s.loss_tokens).sum();
    let nll_per_token = out.iter().map(|s| s.nll_sum).sum::<f64>() / loss_tokens as f64;
    Ok(Scores {
        samples: out,
        without_loss,
        loss_tokens,
        nll_per_token,
        perplexity: nll_per_token.exp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama::tests::{full_logits, tiny_gguf};
    use crate::llama::Weights;
    use candle_core::quantized::gguf_file;
    use gatt::mask::IGNORE;
    use std::io::Cursor;

    fn tiny() -> Model {
        let mut r = Cursor::new(tiny_gguf("llama"));
        let ct = gguf_file::Content::read(&mut r).unwrap();
        Model::from_gguf(&ct, &mut r, &Device::Cpu, Weights::Dense).unwrap()
    }

    /// A sample with loss on its last `k` tokens.
    fn line(id: &str, ids: &[u32], k: usize) -> String {
        let n = ids.len();
        let labels: Vec<i64> = ids
            .iter()
            .enumerate()
            .map(|(j, &t)| if j >= n - k { t as i64 } else { IGNORE })
            .collect();
        serde_json::json!({"id": id, "input_ids": ids, "labels": labels}).to_string()
    }

    /// The NLL of each loss token by the inference path: the last logits of each prefix.
    fn nll_by_decoding(m: &Model, ids: &[u32], k: usize) -> f64 {
        let n = ids.len();
        (n - k..n)
            .map(|j| {
                let logits = full_logits(m, &ids[..j]);
                let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let lse = max + logits.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
                f64::from(lse - logits[ids[j] as usize])
            })
            .sum()
    }

    #[test]
    fn scores_equal_the_likelihood_decoding_gives_and_rows_stay_in_order() {
        let m = tiny();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("s.jsonl");
        let a: Vec<u32> = vec![1, 5, 9, 13, 17, 21, 25, 2];
        let c: Vec<u32> = (0..30u32).map(|i| (i * 7 + 3) % 60).chain([2]).collect();
        let b: Vec<u32> = vec![3, 6, 2];
        let lines = [
            line("a", &a, 3),
            line("none", &b, 0),
            line("c", &c, 6),
            line("b", &b, 1),
        ];
        std::fs::write(&data, lines.join("\n")).unwrap();
        // A budget of 16 tokens puts `a` alone, `c` alone (longer than it), `b` alone.
        for budget in [16, 4096] {
            let s = score(&m, &data, &[2], budget, &Device::Cpu, |_| {}).unwrap();
            assert_eq!(s.without_loss, 1);
            let rows: Vec<usize> = s.samples.iter().map(|x| x.row).collect();
            assert_eq!(rows, [0, 2, 3]);
            for (got, (ids, k)) in s.samples.iter().zip([(&a, 3), (&c, 6), (&b, 1)]) {
                // The first label is at position n-k, predicted from position n-k-1.
                let want = nll_by_decoding(&m, ids, k);
                assert_eq!(got.loss_tokens, k);
                assert!(
                    (got.nll_sum - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{}: {} vs {want}",
                    got.id,
                    got.nll_sum
                );
            }
            let total: f64 = s.samples.iter().map(|x| x.nll_sum).sum();
            assert!((s.nll_per_token - total / 10.0).abs() < 1e-12);
            assert!((s.perplexity - s.nll_per_token.exp()).abs() < 1e-9);
        }
    }

    #[test]
    fn a_sample_the_model_cannot_read_is_refused_naming_its_row() {
        let m = tiny();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("s.jsonl");
        std::fs::write(
            &data,
            format!(
                "{}\n{}",
                line("ok", &[1, 2], 1),
                line("bad", &[1, 100_000, 2], 1)
            ),
        )
        .unwrap();
        let e = score(&m, &data, &[2], 64, &Device::Cpu, |_| {}).unwrap_err();
        assert!(e.is_input());
        let msg = e.to_string();
        assert!(
            msg.contains("row 1") && msg.contains("input_ids[1]"),
            "{msg}"
        );
    }
}
