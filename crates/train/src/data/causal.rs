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

use super::pack::{EpochOrder, Packing};
use super::{BatcherState, DataError, Split, read_documents, tokenize_documents};

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

/// Reads one corpus split under `assets_dir` as a causal-LM stream.
pub fn load_causal_split(
    assets_dir: &Path,
    tokenizer: &Tokenizer,
    split: Split,
) -> Result<Vec<u32>, DataError> {
    let path = assets_dir.join(split.file());
    causal_stream(tokenizer, &read_documents(&path)?, &path)
}

fn check_ids(stream: &[u32], vocab_size: usize) -> Result<(), DataError> {
    match stream.iter().position(|&t| t as usize >= vocab_size) {
        Some(i) => Err(DataError::Invalid(format!(
            "token {} at stream position {i} is outside the vocabulary of {vocab_size}",
            stream[i]
        ))),
        None => Ok(()),
    }
}

/// Seeded causal-LM batches from one token stream, epoch after epoch.
///
/// Batch `s` holds the windows drawn at slots `s * batch_size ..` of a seeded per-epoch
/// shuffle ([`EpochOrder`]): a pure function of `(seed, s)`; resuming is setting the step.
#[derive(Clone, Debug)]
pub struct CausalBatcher {
    stream: Arc<[u32]>,
    cfg: CausalConfig,
    packing: Packing,
    order: EpochOrder,
    step: u64,
}

impl CausalBatcher {
    /// A batcher at step 0 over `stream`.
    pub fn new(stream: impl Into<Arc<[u32]>>, cfg: CausalConfig) -> Result<Self, DataError> {
        cfg.validate()?;
        let stream = stream.into();
        check_ids(&stream, cfg.vocab_size)?;
        let packing = cfg.packing(stream.len())?;
        Ok(Self {
            order: EpochOrder::new(packing.n_chunks, cfg.seed),
            stream,
            cfg,
            packing,
            step: 0,
        })
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
        let expected = BatcherState {
            step: state.step,
            ..batcher.state()
        };
        if *state != expected {
            return Err(DataError::Invalid(format!(
                "cannot resume: saved state {state:?} does not match this batcher {expected:?}"
            )));
        }
        batcher.step = state.step;
        Ok(batcher)
    }

    /// The state to save for [`CausalBatcher::resume`].
    pub fn state(&self) -> BatcherState {
        BatcherState {
            step: self.step,
            seed: self.cfg.seed,
            seq_len: self.cfg.seq_len,
            batch_size: self.cfg.batch_size,
            n_sequences: self.packing.n_chunks,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CausalConfig {
        &self.cfg
    }

    /// Batches handed out so far (the step of the next batch).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Moves to step `step`: the next batch is the one an uninterrupted batcher gives there.
    pub fn set_step(&mut self, step: u64) {
        self.step = step;
    }

    /// Windows in one epoch.
    pub fn sequences_per_epoch(&self) -> usize {
        self.packing.n_chunks
    }

    /// Batches in one epoch (fractional: batches may straddle two epochs).
    pub fn steps_per_epoch(&self) -> f64 {
        self.packing.n_chunks as f64 / self.cfg.batch_size as f64
    }

    /// The stream positions window `i` reads (`seq_len + 1` tokens).
    pub fn window(&self, i: usize) -> std::ops::Range<usize> {
        let r = self.packing.range(i);
        r.start..r.end + 1
    }

    /// The window index drawn at slot `slot` (slot = step * batch_size + row).
    pub fn window_at_slot(&mut self, slot: u64) -> usize {
        self.order.item(slot)
    }

    /// The next batch.
    pub fn next_batch(&mut self) -> CausalBatch {
        let batch = self.batch_at(self.step);
        self.step += 1;
        batch
    }

    /// The batch at step `step`, without moving the batcher.
    pub fn batch_at(&mut self, step: u64) -> CausalBatch {
        let cfg = self.cfg;
        let mut batch = CausalBatch::with_capacity(cfg.batch_size, cfg.seq_len);
        for r in 0..cfg.batch_size as u64 {
            let w = self.order.item(step * cfg.batch_size as u64 + r);
            let range = self.window(w);
            batch.push_window(&self.stream[range]);
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
    if n_sequences == 0 || n_sequences > packing.n_chunks {
        return Err(DataError::Invalid(format!(
            "{n_sequences} evaluation sequences asked, the validation stream of {} tokens holds {} \
             windows of {} + 1",
            valid.len(),
            packing.n_chunks,
            cfg.seq_len
        )));
    }
    let mut batches = Vec::new();
    for first in (0..n_sequences).step_by(cfg.batch_size) {
        let rows = cfg.batch_size.min(n_sequences - first);
        let mut batch = CausalBatch::with_capacity(rows, cfg.seq_len);
        for i in first..first + rows {
            let r = packing.range(i * packing.n_chunks / n_sequences);
            batch.push_window(&valid[r.start..r.end + 1]);
        }
        batches.push(batch);
    }
    Ok(batches)
}
