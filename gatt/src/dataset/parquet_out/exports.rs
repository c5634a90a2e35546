//! The trainers' layouts as Parquet: prompt-completion and tokenized rows.

use super::*;
use crate::dialogue::Message;
use crate::mask::export::PromptCompletion;
use crate::mask::MaskedSample;

/// The columns of a prompt-completion file, as built: `prompt` and `completion`, each a
/// list of `{role, content}` (TRL's conversational prompt-completion layout).
fn prompt_completion_columns() -> Vec<Field> {
    let message = struct_of(&[("role", text()), ("content", text())]);
    vec![
        Field::new("prompt".into(), list_of(message.clone()), true),
        Field::new("completion".into(), list_of(message), true),
    ]
}

/// The columns of a tokenized file: exactly `input_ids`, `attention_mask` and `labels`,
/// lists of int64 (what `torch` takes as they are).
fn tokenized_columns() -> Vec<Field> {
    ["input_ids", "attention_mask", "labels"]
        .into_iter()
        .map(|name| Field::new(name.into(), list_of(ArrowDataType::Int64), true))
        .collect()
}

/// A list-of-messages column being built.
struct MessageLists {
    counts: Vec<usize>,
    role: Texts,
    content: Texts,
}

impl MessageLists {
    fn new() -> Self {
        MessageLists {
            counts: Vec::new(),
            role: Texts::new(),
            content: Texts::new(),
        }
    }

    fn push(&mut self, messages: &[Message]) {
        self.counts.push(messages.len());
        for m in messages {
            self.role.push(Some(m.role.as_str()));
            self.content.push(Some(&m.content));
        }
    }

    /// The column so far, leaving this one empty.
    fn take(&mut self) -> Result<Box<dyn Array>> {
        let n = self.counts.iter().sum();
        let messages = structs(
            n,
            vec![("role", self.role.take()), ("content", self.content.take())],
        )?;
        list(&mut self.counts, messages)
    }
}

/// Prompt-completion rows ([`prompt_completion_columns`]), a row group ([`CHUNK`] rows)
/// at a time.
pub struct PromptCompletionParquet {
    out: ParquetOut,
    rows: usize,
    prompt: MessageLists,
    completion: MessageLists,
}

impl PromptCompletionParquet {
    /// A file at `path`, appearing there when [`PromptCompletionParquet::finish`] is
    /// called.
    pub fn create(path: &Path) -> Result<Self> {
        Ok(PromptCompletionParquet {
            out: ParquetOut::create(path, prompt_completion_columns())?,
            rows: 0,
            prompt: MessageLists::new(),
            completion: MessageLists::new(),
        })
    }

    /// Adds the row of sample `id`.
    ///
    /// # Errors
    ///
    /// An input error, naming the sample, for a text over 2 GiB; an error of the file
    /// for a row group that cannot be written.
    pub fn write(&mut self, id: &str, row: &PromptCompletion<'_>) -> Result<()> {
        let messages = row.prompt.iter().chain(row.completion);
        if let Some(n) = messages.map(|m| m.content.len()).find(|n| *n > MAX_LEN) {
            return Err(too_large(
                self.out.path(),
                id,
                format!("a text of {n} bytes"),
            ));
        }
        self.prompt.push(row.prompt);
        self.completion.push(row.completion);
        self.rows += 1;
        if self.rows >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let rows = std::mem::take(&mut self.rows);
        let columns = vec![self.prompt.take()?, self.completion.take()?];
        self.out.write(rows, columns)
    }

    /// Writes what is buffered and the footer, and moves the file into place.
    pub fn finish(mut self) -> Result<()> {
        self.flush()?;
        self.out.finish()
    }
}

/// Tokenized rows ([`tokenized_columns`]): [`CHUNK`] samples a row group, or fewer where
/// their tokens would overflow a list column's 32-bit offsets.
pub struct TokenizedParquet {
    out: ParquetOut,
    rows: usize,
    lengths: [Vec<usize>; 3],
    input_ids: Vec<i64>,
    attention_mask: Vec<i64>,
    labels: Vec<i64>,
}

impl TokenizedParquet {
    /// Stamps the file with the tokenizer its samples were made with
    /// ([`crate::dataset::TokenizerStamp`], written with the footer).
    pub fn stamp(&mut self, stamp: &crate::dataset::TokenizerStamp) {
        let json = serde_json::to_string(stamp).expect("a stamp serializes");
        self.out.set_key_value(crate::dataset::TOKENIZER_KEY, json);
    }

    /// A file at `path`, appearing there when [`TokenizedParquet::finish`] is called.
    pub fn create(path: &Path) -> Result<Self> {
        Ok(TokenizedParquet {
            out: ParquetOut::create(path, tokenized_columns())?,
            rows: 0,
            lengths: Default::default(),
            input_ids: Vec::new(),
            attention_mask: Vec::new(),
            labels: Vec::new(),
        })
    }

    /// Adds one sample's `input_ids`, `attention_mask` and `labels`.
    ///
    /// # Errors
    ///
    /// An input error, naming the sample, for one of more than 2^31 - 1 tokens; an
    /// error of the file for a row group that cannot be written.
    pub fn write(&mut self, s: &MaskedSample) -> Result<()> {
        let longest = sample_length(self.out.path(), s)?;
        let buffered = self
            .input_ids
            .len()
            .max(self.labels.len())
            .max(self.attention_mask.len());
        if self.rows > 0 && buffered + longest > MAX_LEN {
            self.flush()?;
        }
        self.lengths[0].push(s.input_ids.len());
        self.input_ids
            .extend(s.input_ids.iter().map(|&t| i64::from(t)));
        self.lengths[1].push(s.attention_mask.len());
        self.attention_mask
            .extend(s.attention_mask.iter().map(|&m| i64::from(m)));
        self.lengths[2].push(s.labels.len());
        self.labels.extend_from_slice(&s.labels);
        self.rows += 1;
        if self.rows >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let rows = std::mem::take(&mut self.rows);
        let [ids, mask, labels] = &mut self.lengths;
        let columns = vec![
            list(ids, primitives(&mut self.input_ids))?,
            list(mask, primitives(&mut self.attention_mask))?,
            list(labels, primitives(&mut self.labels))?,
        ];
        self.out.write(rows, columns)
    }

    /// Writes what is buffered and the footer, and moves the file into place.
    pub fn finish(mut self) -> Result<()> {
        self.flush()?;
        self.out.finish()
    }
}
