//! Masked samples as Parquet: `id`, `input_ids`, `labels`, `attention_mask`, counts.

use super::*;
use crate::mask::MaskedSample;

/// The columns of a masked-sample file, as built: `id`, `input_ids` (a list of u32),
/// `labels` (a list of i64, -100 where no loss is taken), `attention_mask` (a list of
/// u8), `n_tokens` and `n_loss_tokens` (u32).
fn sample_columns() -> Vec<Field> {
    vec![
        Field::new("id".into(), text(), true),
        Field::new("input_ids".into(), list_of(ArrowDataType::UInt32), true),
        Field::new("labels".into(), list_of(ArrowDataType::Int64), true),
        Field::new("attention_mask".into(), list_of(ArrowDataType::UInt8), true),
        Field::new("n_tokens".into(), ArrowDataType::UInt32, true),
        Field::new("n_loss_tokens".into(), ArrowDataType::UInt32, true),
    ]
}

/// Masked samples, built into typed list columns a row group at a time: [`CHUNK`]
/// samples, or fewer where their tokens would overflow a list column's 32-bit offsets.
pub struct SampleParquet {
    out: ParquetOut,
    rows: usize,
    id: Texts,
    ids_lengths: Vec<usize>,
    input_ids: Vec<u32>,
    labels_lengths: Vec<usize>,
    labels: Vec<i64>,
    mask_lengths: Vec<usize>,
    attention_mask: Vec<u8>,
    n_tokens: Vec<u32>,
    n_loss_tokens: Vec<u32>,
}

impl SampleParquet {
    /// Stamps the file with the tokenizer its samples were made with
    /// ([`crate::dataset::TokenizerStamp`], written with the footer).
    pub fn stamp(&mut self, stamp: &crate::dataset::TokenizerStamp) {
        let json = serde_json::to_string(stamp).expect("a stamp serializes");
        self.out.set_key_value(crate::dataset::TOKENIZER_KEY, json);
    }

    /// A sample file at `path`, appearing there when [`SampleParquet::finish`] is called.
    pub fn create(path: &Path) -> Result<Self> {
        Ok(SampleParquet {
            out: ParquetOut::create(path, sample_columns())?,
            rows: 0,
            id: Texts::new(),
            ids_lengths: Vec::new(),
            input_ids: Vec::new(),
            labels_lengths: Vec::new(),
            labels: Vec::new(),
            mask_lengths: Vec::new(),
            attention_mask: Vec::new(),
            n_tokens: Vec::new(),
            n_loss_tokens: Vec::new(),
        })
    }

    /// Adds one sample (written with the next row group, or at finish).
    ///
    /// # Errors
    ///
    /// An input error, naming the sample, for one of more than 2^31 - 1 tokens or an id
    /// over 2 GiB (more than a `list` or `string` holds); an error of the file for a row
    /// group that cannot be written.
    pub fn write(&mut self, s: &MaskedSample) -> Result<()> {
        let longest = sample_length(self.out.path(), s)?;
        if s.id.len() > MAX_LEN {
            let what = format!("an id of {} bytes", s.id.len());
            return Err(too_large(self.out.path(), &s.id, what));
        }
        let buffered = self
            .input_ids
            .len()
            .max(self.labels.len())
            .max(self.attention_mask.len());
        if self.rows > 0 && buffered + longest > MAX_LEN {
            self.flush()?;
        }
        // Both fit: at most `MAX_LEN`, checked above.
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.id.push(Some(&s.id));
        self.ids_lengths.push(s.input_ids.len());
        self.input_ids.extend_from_slice(&s.input_ids);
        self.labels_lengths.push(s.labels.len());
        self.labels.extend_from_slice(&s.labels);
        self.mask_lengths.push(s.attention_mask.len());
        self.attention_mask.extend_from_slice(&s.attention_mask);
        self.n_tokens.push(count(s.n_tokens()));
        self.n_loss_tokens.push(count(s.n_loss_tokens()));
        self.rows += 1;
        if self.rows >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffered samples as one row group.
    fn flush(&mut self) -> Result<()> {
        let rows = std::mem::take(&mut self.rows);
        let input_ids = primitives(&mut self.input_ids);
        let labels = primitives(&mut self.labels);
        let attention_mask = primitives(&mut self.attention_mask);
        let columns = vec![
            self.id.take(),
            list(&mut self.ids_lengths, input_ids)?,
            list(&mut self.labels_lengths, labels)?,
            list(&mut self.mask_lengths, attention_mask)?,
            primitives(&mut self.n_tokens),
            primitives(&mut self.n_loss_tokens),
        ];
        self.out.write(rows, columns)
    }

    /// Writes what is buffered and the footer, and moves the file into place; a file of
    /// no samples has the columns and no rows.
    pub fn finish(mut self) -> Result<()> {
        self.flush()?;
        self.out.finish()
    }
}
