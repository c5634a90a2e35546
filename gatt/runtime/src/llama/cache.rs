//! Keys and values kept between decoding steps: per call ([`Cache`]) and per sequence
//! ([`SeqKv`], what a kept conversation holds between turns).

use super::Config;
use candle_core::{DType, Result, Tensor};
use candle_nn::kv_cache::KvCache;

/// Per-call decoding state: one KV cache per layer, keys and values of shape
/// (batch, kv_heads, positions, head_dim), positions including each sequence's left
/// padding.
pub struct Cache {
    pub(super) kv: Vec<KvCache>,
    /// The element type keys and values are stored in.
    pub(super) dtype: DType,
}

impl Cache {
    /// Keys and values kept in f32: decoding computes what one forward pass over the
    /// whole sequence would. `capacity` is the positions reserved up front (at least 16);
    /// candle's cache grows by as many again when a sequence outruns it.
    pub fn new(cfg: &Config, capacity: usize) -> Self {
        Self::with_dtype(cfg, capacity, DType::F32)
    }

    /// Keys and values stored as `dtype`. F16 (as llama.cpp does by default) halves the
    /// cache's memory and the bytes every decoding step reads from it, which with long
    /// prompts or many sequences is a large part of a step; values round to 11
    /// significant bits. The CPU's decoding steps read f16 directly, other paths convert.
    pub fn with_dtype(cfg: &Config, capacity: usize, dtype: DType) -> Self {
        Cache {
            kv: (0..cfg.n_layer)
                .map(|_| KvCache::new(2, capacity.max(16)))
                .collect(),
            dtype,
        }
    }

    /// Positions held per sequence, padding slots included.
    pub fn len(&self) -> usize {
        self.kv.first().map_or(0, |c| c.current_seq_len())
    }

    /// True before the first forward pass.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type keys and values are stored in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// A cache holding the sequences `seqs` side by side, each left-padded (with zeros)
    /// to the longest one's length, with room for `extra` more positions. Returns it with
    /// each sequence's padding, the `pad` that [`super::Model::forward`] takes. All sequences
    /// must come from caches of `dtype` of the same model.
    ///
    /// # Errors
    ///
    /// No sequences, or sequences of different shapes (layers, heads, widths, dtype).
    pub fn from_sequences(
        cfg: &Config,
        seqs: &[&SeqKv],
        extra: usize,
        dtype: DType,
    ) -> Result<(Self, Vec<usize>)> {
        let longest = seqs.iter().map(|s| s.len).max().unwrap_or(0);
        let pad: Vec<usize> = seqs.iter().map(|s| longest - s.len).collect();
        let mut cache = Cache::with_dtype(cfg, longest + extra, dtype);
        if longest == 0 {
            return Ok((cache, pad));
        }
        for (l, kv) in cache.kv.iter_mut().enumerate() {
            let side = |which: usize| -> Result<Tensor> {
                let rows = seqs
                    .iter()
                    .zip(&pad)
                    .map(|(s, &p)| {
                        let Some(layer) = s.layers.get(l) else {
                            candle_core::bail!("a cached sequence has too few layers")
                        };
                        let t = if which == 0 { &layer.0 } else { &layer.1 };
                        if p == 0 {
                            return Ok(t.clone());
                        }
                        let (one, heads, _, hd) = t.dims4()?;
                        let zeros = Tensor::zeros((one, heads, p, hd), t.dtype(), t.device())?;
                        Tensor::cat(&[&zeros, t], 2)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&rows, 0)
            };
            kv.append(&side(0)?.to_dtype(dtype)?, &side(1)?.to_dtype(dtype)?)?;
        }
        Ok((cache, pad))
    }

    /// Positions each sequence has room for before the cache must grow (candle's cache
    /// then copies itself into a larger one).
    pub fn capacity(&self) -> usize {
        self.kv.first().map_or(0, |c| c.k_cache().max_seq_len())
    }

    /// Puts `seq` in sequence `s`'s place, overwriting what it held: its keys and values
    /// end at the last position held ([`Cache::len`]), after `len - seq.len()` positions
    /// of padding (zeros), which it returns. Only that sequence's row is written; the
    /// others are not copied. `seq` must come from a cache of the same model.
    ///
    /// # Errors
    ///
    /// When the cache holds no sequence `s`, or `seq` is empty or longer than the
    /// positions held.
    pub fn place(&mut self, s: usize, seq: &SeqKv) -> Result<usize> {
        let len = self.len();
        if seq.len == 0 || seq.len > len {
            candle_core::bail!("a sequence of {} positions in a cache of {len}", seq.len)
        }
        if seq.layers.len() != self.kv.len() {
            candle_core::bail!("a cached sequence of another model")
        }
        let pad = len - seq.len;
        let dtype = self.dtype;
        for (kv, (k, v)) in self.kv.iter_mut().zip(&seq.layers) {
            for (side, t) in [(kv.k_cache(), k), (kv.v_cache(), v)] {
                let Some(all) = side.all_data() else {
                    candle_core::bail!("the cache is empty")
                };
                let (b, heads, capacity, hd) = all.dims4()?;
                if s >= b {
                    candle_core::bail!("no sequence {s} in a batch of {b}")
                }
                let mut parts = Vec::with_capacity(3);
                if pad > 0 {
                    parts.push(Tensor::zeros((1, heads, pad, hd), dtype, all.device())?);
                }
                parts.push(t.to_dtype(dtype)?);
                if capacity > len {
                    parts.push(Tensor::zeros(
                        (1, heads, capacity - len, hd),
                        dtype,
                        all.device(),
                    )?);
                }
                let row = Tensor::cat(&parts, 2)?.contiguous()?;
                all.slice_set(&row, 0, s)?;
            }
        }
        Ok(pad)
    }

    /// A copy of sequence `s`'s positions `pad..pad + len` (its first `len` positions
    /// after its padding).
    ///
    /// # Errors
    ///
    /// When the cache holds no such sequence or positions.
    pub fn sequence(&self, s: usize, pad: usize, len: usize) -> Result<SeqKv> {
        let layers = self
            .kv
            .iter()
            .map(|kv| {
                let take = |t: Option<Tensor>| -> Result<Tensor> {
                    let Some(t) = t else {
                        candle_core::bail!("the cache is empty")
                    };
                    t.narrow(0, s, 1)?.narrow(2, pad, len)?.force_contiguous()
                };
                Ok((take(kv.k()?)?, take(kv.v()?)?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SeqKv { layers, len })
    }
}

/// The keys and values of one sequence's first `len` positions, every layer's as
/// (1, kv_heads, len, head_dim) in the dtype of the cache they came from. With the CPU's
/// inference kernels they are a function of those positions' tokens alone (see
/// `decode_attention.rs`), so they can start the cache of any longer sequence that
/// begins with the same tokens.
#[derive(Clone)]
pub struct SeqKv {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
}

impl SeqKv {
    /// Keys and values of `len` positions, one (keys, values) pair per layer.
    #[cfg(test)]
    pub(crate) fn from_layers(layers: Vec<(Tensor, Tensor)>, len: usize) -> Self {
        SeqKv { layers, len }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }

    /// These positions followed by `more`'s (a copy).
    ///
    /// # Errors
    ///
    /// When the two come from different models or caches.
    pub fn concat(&self, more: &SeqKv) -> Result<SeqKv> {
        if self.layers.len() != more.layers.len() {
            candle_core::bail!("cached sequences of different models")
        }
        let layers = self
            .layers
            .iter()
            .zip(&more.layers)
            .map(|((k, v), (k2, v2))| Ok((Tensor::cat(&[k, k2], 2)?, Tensor::cat(&[v, v2], 2)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(SeqKv {
            layers,
            len: self.len + more.len,
        })
    }

    /// The first `len` positions (a copy; `len` at most [`SeqKv::len`]).
    ///
    /// # Errors
    ///
    /// When `len` is longer than what is held.
    pub fn prefix(&self, len: usize) -> Result<SeqKv> {
        if len > self.len {
            candle_core::bail!("a prefix of {len} positions of {}", self.len)
        }
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.narrow(2, 0, len)?.force_contiguous()?,
                    v.narrow(2, 0, len)?.force_contiguous()?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SeqKv { layers, len })
    }
}
