//! Masked-language-model batches: packed `[CLS] ... [SEP]` sequences, dynamic 80/10/10 masking.

use std::sync::Arc;

use bert2bert_checkpoint::random::SplitMix64;
use serde::{Deserialize, Serialize};

use super::pack::{BatcherState, Cursor, Packing, check_ids, mix};
use super::{DataError, SpecialIds};

/// The label of a position that is not predicted (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Stream tag of the training masks.
const MASK_STREAM: u64 = 2;
/// Stream tag of the fixed evaluation masks.
const EVAL_STREAM: u64 = 3;

/// How MLM sequences are built and masked.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MlmConfig {
    /// Tokens per sequence, `[CLS]` and `[SEP]` included.
    pub seq_len: usize,
    /// Sequences per batch.
    pub batch_size: usize,
    /// Size of the vocabulary (random replacements are drawn from it).
    pub vocab_size: usize,
    /// Fraction of each sequence's maskable tokens that are predicted (BERT: 0.15).
    pub mask_prob: f64,
    /// The special token ids.
    pub special: SpecialIds,
    /// Seed of the sequence order and of the masks.
    pub seed: u64,
}

impl MlmConfig {
    /// BERT's fraction of predicted tokens.
    pub const BERT_MASK_PROB: f64 = 0.15;

    /// Refuses a mask fraction outside (0, 1); the reason names the value. Shared by every
    /// place that takes one (the batcher, `pretrain --mask-prob`, experiment plans).
    pub fn check_mask_prob(mask_prob: f64) -> Result<(), String> {
        if mask_prob > 0.0 && mask_prob < 1.0 {
            Ok(())
        } else {
            Err(format!("{mask_prob} is not in (0, 1)"))
        }
    }

    /// BERT's recipe (15% masked, shipped special ids) for the given shape and seed.
    pub fn new(seq_len: usize, batch_size: usize, vocab_size: usize, seed: u64) -> Self {
        Self {
            seq_len,
            batch_size,
            vocab_size,
            mask_prob: Self::BERT_MASK_PROB,
            special: SpecialIds::SHIPPED,
            seed,
        }
    }

    /// Tokens of the stream in each sequence (`seq_len` less `[CLS]` and `[SEP]`).
    pub fn body_len(&self) -> usize {
        self.seq_len.saturating_sub(2)
    }

    /// Masked positions in a sequence with `candidates` maskable tokens:
    /// `max(1, round(mask_prob * candidates))`, at most `candidates`.
    pub fn n_masked(&self, candidates: usize) -> usize {
        ((self.mask_prob * candidates as f64).round() as usize)
            .max(1)
            .min(candidates)
    }

    fn validate(&self) -> Result<(), DataError> {
        let s = &self.special;
        let max_special = s.pad.max(s.unk).max(s.cls).max(s.sep).max(s.mask) as usize;
        let problem = if let Err(why) = Self::check_mask_prob(self.mask_prob) {
            format!("mask_prob {why}")
        } else if self.seq_len < 3 {
            format!(
                "seq_len {} leaves no room between [CLS] and [SEP]",
                self.seq_len
            )
        } else if self.batch_size == 0 {
            "batch_size 0".to_string()
        } else if self.vocab_size <= max_special + 1 {
            format!(
                "vocab_size {} leaves no ordinary token beside the special ids {s:?}",
                self.vocab_size
            )
        } else {
            return Ok(());
        };
        Err(DataError::Invalid(problem))
    }
}

/// One batch of MLM inputs, row-major `[batch_size, seq_len]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MlmBatch {
    /// Input ids, with masked positions replaced (80% `[MASK]`, 10% random, 10% unchanged).
    pub input_ids: Vec<u32>,
    /// Segment ids: all 0 (one segment per sequence).
    pub token_type_ids: Vec<u32>,
    /// Attention mask: all 1 (packed sequences have no padding).
    pub attention_mask: Vec<u32>,
    /// The original token at predicted positions, [`IGNORE_INDEX`] elsewhere.
    pub labels: Vec<i64>,
    /// Flat indices (`row * seq_len + col`, ascending) of the predicted positions.
    pub masked: Vec<usize>,
    /// Rows.
    pub batch_size: usize,
    /// Columns.
    pub seq_len: usize,
}

impl MlmBatch {
    /// The labels at the predicted positions, in the order of `masked`.
    pub fn masked_labels(&self) -> Vec<u32> {
        self.masked.iter().map(|&i| self.labels[i] as u32).collect()
    }

    /// Tokens in the batch (`batch_size * seq_len`).
    pub fn n_tokens(&self) -> usize {
        self.batch_size * self.seq_len
    }

    fn with_capacity(batch_size: usize, seq_len: usize) -> Self {
        let n = batch_size * seq_len;
        Self {
            input_ids: Vec::with_capacity(n),
            token_type_ids: vec![0; n],
            attention_mask: vec![1; n],
            labels: Vec::with_capacity(n),
            masked: Vec::new(),
            batch_size,
            seq_len,
        }
    }

    /// Appends one masked `[CLS] body [SEP]` row.
    fn push_row(&mut self, body: &[u32], cfg: &MlmConfig, rng: &mut SplitMix64) {
        let row = self.input_ids.len() / self.seq_len;
        let start = self.input_ids.len();
        self.input_ids.push(cfg.special.cls);
        self.input_ids.extend_from_slice(body);
        self.input_ids.push(cfg.special.sep);
        self.labels
            .extend(std::iter::repeat_n(IGNORE_INDEX, self.seq_len));

        // Maskable: every body position that does not hold a special token (e.g. `[UNK]`).
        let mut candidates: Vec<usize> = (1..=body.len())
            .filter(|&c| !cfg.special.contains(body[c - 1]))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let k = cfg.n_masked(candidates.len());
        // Partial Fisher-Yates: the first k entries become a uniform k-subset.
        for i in 0..k {
            let j = i + rng.below(candidates.len() - i);
            candidates.swap(i, j);
        }
        let chosen = &mut candidates[..k];
        chosen.sort_unstable();
        for &col in chosen.iter() {
            let flat = start + col;
            let original = self.input_ids[flat];
            self.labels[flat] = original as i64;
            self.masked.push(row * self.seq_len + col);
            let r = rng.uniform();
            if r < 0.8 {
                self.input_ids[flat] = cfg.special.mask;
            } else if r < 0.9 {
                self.input_ids[flat] = random_ordinary(rng, cfg);
            }
        }
    }
}

/// A uniformly drawn non-special token id.
fn random_ordinary(rng: &mut SplitMix64, cfg: &MlmConfig) -> u32 {
    loop {
        let id = rng.below(cfg.vocab_size) as u32;
        if !cfg.special.contains(id) {
            return id;
        }
    }
}

/// Seeded MLM batches from one token stream, epoch after epoch.
///
/// The stream is packed into `[CLS] body [SEP]` sequences (`body` = `seq_len - 2` consecutive
/// stream tokens). Batch `s` holds the sequences drawn at slots `s * batch_size ..` of a
/// seeded per-epoch shuffle, and the sequence at slot `k` is masked with a generator seeded by
/// `(seed, k)`: every batch is a pure function of `(seed, s)`, masks differ between epochs
/// (dynamic masking), and resuming is setting the step.
#[derive(Clone, Debug)]
pub struct MlmBatcher {
    cfg: MlmConfig,
    cursor: Cursor,
}

impl MlmBatcher {
    /// A batcher at step 0 over `stream` (token ids without special tokens).
    pub fn new(stream: impl Into<Arc<[u32]>>, cfg: MlmConfig) -> Result<Self, DataError> {
        cfg.validate()?;
        let cursor = Cursor::new(
            stream.into(),
            cfg.vocab_size,
            |len| Packing::new(len, cfg.body_len()),
            0,
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
        cfg: MlmConfig,
        state: &BatcherState,
    ) -> Result<Self, DataError> {
        let mut batcher = Self::new(stream, cfg)?;
        batcher.cursor.resume(state)?;
        Ok(batcher)
    }

    /// The state to save for [`MlmBatcher::resume`].
    pub fn state(&self) -> BatcherState {
        self.cursor.state()
    }

    /// The configuration.
    pub fn config(&self) -> &MlmConfig {
        &self.cfg
    }

    /// Batches handed out so far (the step of the next batch).
    pub fn step(&self) -> u64 {
        self.cursor.step()
    }

    /// Sequences in one epoch.
    pub fn sequences_per_epoch(&self) -> usize {
        self.cursor.sequences_per_epoch()
    }

    /// Batches in one epoch (fractional: batches may straddle two epochs).
    pub fn steps_per_epoch(&self) -> f64 {
        self.cursor.steps_per_epoch()
    }

    /// Epochs consumed so far (fractional).
    pub fn epoch(&self) -> f64 {
        self.step() as f64 / self.steps_per_epoch()
    }

    /// Moves to step `step`: the next batch is the one an uninterrupted batcher gives there.
    ///
    /// O(1) (the epoch's order is recomputed lazily): resuming a run from its step count.
    pub fn set_step(&mut self, step: u64) {
        self.cursor.set_step(step);
    }

    /// The next batch.
    pub fn next_batch(&mut self) -> MlmBatch {
        let step = self.cursor.advance();
        self.batch_at(step)
    }

    /// The batch at step `step`, without moving the batcher.
    pub fn batch_at(&mut self, step: u64) -> MlmBatch {
        let cfg = self.cfg;
        let mut batch = MlmBatch::with_capacity(cfg.batch_size, cfg.seq_len);
        for (slot, body) in self.cursor.rows(step) {
            let mut rng = SplitMix64::new(mix(cfg.seed, MASK_STREAM, slot));
            batch.push_row(body, &cfg, &mut rng);
        }
        batch
    }
}

/// Number of `seq_len` sequences a stream of `stream_len` tokens packs into.
pub fn n_sequences(stream_len: usize, seq_len: usize) -> usize {
    stream_len / seq_len.saturating_sub(2).max(1)
}

/// Tokens (specials included) that one epoch over a stream of `stream_len` tokens feeds.
pub fn tokens_per_epoch(stream_len: usize, seq_len: usize) -> usize {
    n_sequences(stream_len, seq_len) * seq_len
}

/// A fixed masked evaluation set: the same batches on every call with the same arguments.
///
/// Takes `n_sequences` packed sequences spread evenly over `valid` (sequence
/// `i * available / n_sequences`), masks sequence `i` with a generator seeded by
/// `(cfg.seed, i)`, and groups them into batches of `cfg.batch_size` (the last may be smaller).
pub fn eval_batches(
    valid: &[u32],
    cfg: &MlmConfig,
    n_sequences: usize,
) -> Result<Vec<MlmBatch>, DataError> {
    cfg.validate()?;
    check_ids(valid, cfg.vocab_size)?;
    let packing = Packing::new(valid.len(), cfg.body_len())?;
    let unit = format!("of length {}", cfg.seq_len);
    let mut batches = Vec::new();
    for group in packing.spread(n_sequences, cfg.batch_size, valid.len(), &unit)? {
        let mut batch = MlmBatch::with_capacity(group.len(), cfg.seq_len);
        for (i, chunk) in group {
            let mut rng = SplitMix64::new(mix(cfg.seed, EVAL_STREAM, i as u64));
            batch.push_row(&valid[packing.range(chunk)], cfg, &mut rng);
        }
        batches.push(batch);
    }
    Ok(batches)
}
