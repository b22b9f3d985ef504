//! Causal-LM batches for GPT-2: the byte-level BPE stream cut into `seq_len + 1` windows.
//!
//! Documents are tokenized with the shipped BPE tokenizer (`assets/tokenizer-gpt2/`) and joined
//! with `<|endoftext|>` after each one, as GPT-2 was trained. Window `i` is
//! `stream[i * seq_len ..= (i + 1) * seq_len]`: inputs are its first `seq_len` tokens, targets
//! its last `seq_len`. Consecutive windows share one token, so every next-token pair of the
//! covered stream is predicted exactly once per epoch. Batch order reuses [`super::pack`]:
//! every batch is a pure function of `(seed, step)`, like [`super::MlmBatcher`].

use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;
use tokenizers::Tokenizer;

use super::pack::{BatcherState, Cursor, Packing, check_ids};
use super::{DataError, Split, read_documents, tokenize_documents};

/// The BPE tokenizer file, relative to the assets folder.
pub const BPE_TOKENIZER_FILE: &str = "tokenizer-gpt2/tokenizer.json";

/// The document separator of the causal-LM stream.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// The id of [`END_OF_TEXT`] in the shipped BPE tokenizer.
pub const END_OF_TEXT_ID: u32 = 0;

/// How causal-LM batches are cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CausalConfig {
    /// Input tokens per sequence (each window holds one more, the last target).
    pub seq_len: usize,
    /// Sequences per batch.
    pub batch_size: usize,
    /// Size of the vocabulary (every stream id must be below it).
    pub vocab_size: usize,
    /// Seed of the sequence order.
    pub seed: u64,
}

impl CausalConfig {
    fn validate(&self) -> Result<(), DataError> {
        if self.seq_len == 0 {
            Err(DataError::Invalid("seq_len 0".into()))
        } else if self.batch_size == 0 {
            Err(DataError::Invalid("batch_size 0".into()))
        } else {
            Ok(())
        }
    }

    /// Windows of `seq_len + 1` tokens, stride `seq_len`, over a stream of `stream_len`.
    fn packing(&self, stream_len: usize) -> Result<Packing, DataError> {
        // Chunk i covers targets (i * seq_len, (i + 1) * seq_len]: the window needs one token
        // past the chunk, so the last usable target is stream_len - 1.
        Packing::new(stream_len.saturating_sub(1), self.seq_len)
    }
}

/// One batch of next-token inputs and targets, row-major `[batch_size, seq_len]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CausalBatch {
    /// Input ids.
    pub input_ids: Vec<u32>,
    /// The next token after each input position.
    pub targets: Vec<u32>,
    /// Rows.
    pub batch_size: usize,
    /// Columns.
    pub seq_len: usize,
}

impl CausalBatch {
    fn with_capacity(batch_size: usize, seq_len: usize) -> Self {
        Self {
            input_ids: Vec::with_capacity(batch_size * seq_len),
            targets: Vec::with_capacity(batch_size * seq_len),
            batch_size,
            seq_len,
        }
    }

    fn push_window(&mut self, window: &[u32]) {
        let n = window.len() - 1;
        self.input_ids.extend_from_slice(&window[..n]);
        self.targets.extend_from_slice(&window[1..]);
    }

    /// Tokens in the batch (`batch_size * seq_len`).
    pub fn n_tokens(&self) -> usize {
        self.batch_size * self.seq_len
    }
}

/// Reads documents and tokenizes them into one stream, `<|endoftext|>` after each document.
///
/// Fails unless `tokenizer` gives [`END_OF_TEXT`] the id [`END_OF_TEXT_ID`]; `path` names the
/// corpus file in errors.
pub fn causal_stream(
    tokenizer: &Tokenizer,
    docs: &[String],
    path: &Path,
) -> Result<Vec<u32>, DataError> {
    if tokenizer.token_to_id(END_OF_TEXT) != Some(END_OF_TEXT_ID) {
        return Err(DataError::MissingSpecialToken {
            path: path.to_path_buf(),
            token: format!("{END_OF_TEXT} (as id {END_OF_TEXT_ID})"),
        });
    }
    // One encoding per document (the separator goes between them), documents in parallel.
    let per_doc = docs
        .par_iter()
        .map(|doc| tokenize_documents(tokenizer, std::slice::from_ref(doc), path))
        .collect::<Result<Vec<_>, DataError>>()?;
    let mut out = Vec::with_capacity(per_doc.iter().map(|d| d.len() + 1).sum());
    for ids in per_doc {
        out.extend_from_slice(&ids);
        out.push(END_OF_TEXT_ID);
    }
    Ok(out)
}

/// Reads one split of the corpus folder `corpus_dir` as a causal-LM stream.
pub fn load_causal_split(
    corpus_dir: &Path,
    tokenizer: &Tokenizer,
    split: Split,
) -> Result<Vec<u32>, DataError> {
    let path = corpus_dir.join(split.file());
    causal_stream(tokenizer, &read_documents(&path)?, &path)
}

/// Seeded causal-LM batches from one token stream, epoch after epoch.
///
/// Batch `s` holds the windows drawn at slots `s * batch_size ..` of a seeded per-epoch
/// shuffle ([`super::pack::EpochOrder`]): a pure function of `(seed, s)`; resuming is setting the step.
#[derive(Clone, Debug)]
pub struct CausalBatcher {
    cfg: CausalConfig,
    cursor: Cursor,
}

impl CausalBatcher {
    /// A batcher at step 0 over `stream`.
    pub fn new(stream: impl Into<Arc<[u32]>>, cfg: CausalConfig) -> Result<Self, DataError> {
        cfg.validate()?;
        // A window reads one token past its chunk: the last target.
        let cursor = Cursor::new(
            stream.into(),
            cfg.vocab_size,
            |len| cfg.packing(len),
            1,
            cfg.seed,
            cfg.seq_len,
            cfg.batch_size,
        )?;
        Ok(Self { cfg, cursor })
    }

    /// A batcher that continues exactly where the one that reported `state` stood.
    ///
    /// Fails if `state` was taken with another seed, shape or stream length.
    pub fn resume(
        stream: impl Into<Arc<[u32]>>,
        cfg: CausalConfig,
        state: &BatcherState,
    ) -> Result<Self, DataError> {
        let mut batcher = Self::new(stream, cfg)?;
        batcher.cursor.resume(state)?;
        Ok(batcher)
    }

    /// The state to save for [`CausalBatcher::resume`].
    pub fn state(&self) -> BatcherState {
        self.cursor.state()
    }

    /// The configuration.
    pub fn config(&self) -> &CausalConfig {
        &self.cfg
    }

    /// Batches handed out so far (the step of the next batch).
    pub fn step(&self) -> u64 {
        self.cursor.step()
    }

    /// Moves to step `step`: the next batch is the one an uninterrupted batcher gives there.
    pub fn set_step(&mut self, step: u64) {
        self.cursor.set_step(step);
    }

    /// Windows in one epoch.
    pub fn sequences_per_epoch(&self) -> usize {
        self.cursor.sequences_per_epoch()
    }

    /// Batches in one epoch (fractional: batches may straddle two epochs).
    pub fn steps_per_epoch(&self) -> f64 {
        self.cursor.steps_per_epoch()
    }

    /// The stream positions window `i` reads (`seq_len + 1` tokens).
    pub fn window(&self, i: usize) -> std::ops::Range<usize> {
        self.cursor.row_range(i)
    }

    /// The window index drawn at slot `slot` (slot = step * batch_size + row).
    pub fn window_at_slot(&mut self, slot: u64) -> usize {
        self.cursor.chunk_at_slot(slot)
    }

    /// The next batch.
    pub fn next_batch(&mut self) -> CausalBatch {
        let step = self.cursor.advance();
        self.batch_at(step)
    }

    /// The batch at step `step`, without moving the batcher.
    pub fn batch_at(&mut self, step: u64) -> CausalBatch {
        let mut batch = CausalBatch::with_capacity(self.cfg.batch_size, self.cfg.seq_len);
        for (_, window) in self.cursor.rows(step) {
            batch.push_window(window);
        }
        batch
    }
}

/// A fixed evaluation set: `n_sequences` windows spread evenly over `valid` (window
/// `i * available / n_sequences`), in batches of `cfg.batch_size` (the last may be smaller).
pub fn causal_eval_batches(
    valid: &[u32],
    cfg: &CausalConfig,
    n_sequences: usize,
) -> Result<Vec<CausalBatch>, DataError> {
    cfg.validate()?;
    check_ids(valid, cfg.vocab_size)?;
    let packing = cfg.packing(valid.len())?;
    let unit = format!("windows of {} + 1", cfg.seq_len);
    let mut batches = Vec::new();
    for group in packing.spread(n_sequences, cfg.batch_size, valid.len(), &unit)? {
        let mut batch = CausalBatch::with_capacity(group.len(), cfg.seq_len);
        for (_, window) in group {
            let r = packing.range(window);
            batch.push_window(&valid[r.start..r.end + 1]);
        }
        batches.push(batch);
    }
    Ok(batches)
}
