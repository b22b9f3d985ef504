//! Packing a token stream into fixed-length chunks and visiting them in a seeded order.
//!
//! Shared by the MLM batcher and a causal-LM batcher: both cut one long stream into chunks of
//! equal length and read them epoch by epoch in a shuffled order that is a pure function of
//! `(seed, slot)`, so a run resumes exactly from a step count.

use std::ops::Range;
use std::sync::Arc;

use bert2bert_checkpoint::random::SplitMix64;
use serde::{Deserialize, Serialize};

use super::DataError;

/// A token stream cut into `n_chunks` back-to-back chunks of `chunk_len` tokens.
///
/// Chunk `i` is `stream[i * chunk_len .. (i + 1) * chunk_len]`; the tail shorter than one
/// chunk (fewer than `chunk_len` tokens) is not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packing {
    /// Tokens in each chunk.
    pub chunk_len: usize,
    /// Number of whole chunks in the stream.
    pub n_chunks: usize,
}

impl Packing {
    /// Packs a stream of `stream_len` tokens; fails if it holds no whole chunk.
    pub fn new(stream_len: usize, chunk_len: usize) -> Result<Self, DataError> {
        if chunk_len == 0 {
            return Err(DataError::Invalid("chunk length 0".into()));
        }
        let n_chunks = stream_len / chunk_len;
        if n_chunks == 0 {
            return Err(DataError::Invalid(format!(
                "a stream of {stream_len} tokens is shorter than one chunk of {chunk_len}"
            )));
        }
        Ok(Self {
            chunk_len,
            n_chunks,
        })
    }

    /// The stream positions of chunk `i`.
    pub fn range(&self, i: usize) -> Range<usize> {
        assert!(i < self.n_chunks, "chunk {i} of {}", self.n_chunks);
        i * self.chunk_len..(i + 1) * self.chunk_len
    }

    /// Tokens of the stream that some chunk covers.
    pub fn covered(&self) -> usize {
        self.n_chunks * self.chunk_len
    }

    /// `n` chunks spread evenly over the packing (sequence `i` is chunk `i * n_chunks / n`),
    /// grouped by `batch_size` (the last group may be smaller), each as `(i, chunk)` pairs.
    ///
    /// Fails for `n` = 0 or more than `n_chunks`; the error names the `stream_len` tokens and
    /// what a chunk is (`unit`).
    pub(crate) fn spread(
        &self,
        n: usize,
        batch_size: usize,
        stream_len: usize,
        unit: &str,
    ) -> Result<Vec<Vec<(usize, usize)>>, DataError> {
        if n == 0 || n > self.n_chunks {
            return Err(DataError::Invalid(format!(
                "{n} evaluation sequences asked, the validation stream of {stream_len} tokens \
                 holds {} {unit}",
                self.n_chunks
            )));
        }
        Ok((0..n)
            .step_by(batch_size)
            .map(|first| {
                (first..n.min(first + batch_size))
                    .map(|i| (i, i * self.n_chunks / n))
                    .collect()
            })
            .collect())
    }
}

/// Derives an independent 64-bit seed from a base seed, a stream tag and an index.
pub fn mix(seed: u64, stream: u64, index: u64) -> u64 {
    // Three rounds of SplitMix64 finalisation over the combined words: neighbouring
    // (seed, stream, index) triples give unrelated outputs.
    let mut g = SplitMix64::new(seed);
    let a = g.next_u64();
    let mut g = SplitMix64::new(a ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let b = g.next_u64();
    SplitMix64::new(b ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64()
}

/// Stream tag of the epoch permutations.
const ORDER_STREAM: u64 = 1;

/// Visits `n` items epoch after epoch, each epoch in its own seeded random order.
///
/// Slot `k` (the k-th item drawn since the start) is item `perm_e[k % n]` with
/// `e = k / n` and `perm_e` a Fisher-Yates shuffle seeded by `(seed, e)`: a pure function of
/// `(seed, k)`. The current epoch's permutation is cached.
#[derive(Clone, Debug)]
pub struct EpochOrder {
    n: usize,
    seed: u64,
    epoch: u64,
    perm: Vec<u32>,
}

impl EpochOrder {
    /// An order over `n` items (`n` > 0).
    pub fn new(n: usize, seed: u64) -> Self {
        assert!(n > 0 && n <= u32::MAX as usize, "EpochOrder over {n} items");
        let mut order = Self {
            n,
            seed,
            epoch: 0,
            perm: Vec::new(),
        };
        order.shuffle(0);
        order
    }

    /// Number of items in one epoch.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false: an order has at least one item.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The item drawn at slot `slot`.
    pub fn item(&mut self, slot: u64) -> usize {
        let epoch = slot / self.n as u64;
        if epoch != self.epoch {
            self.shuffle(epoch);
        }
        self.perm[(slot % self.n as u64) as usize] as usize
    }

    fn shuffle(&mut self, epoch: u64) {
        self.perm.clear();
        self.perm.extend(0..self.n as u32);
        let mut rng = SplitMix64::new(mix(self.seed, ORDER_STREAM, epoch));
        for i in (1..self.n).rev() {
            let j = rng.below(i + 1);
            self.perm.swap(i, j);
        }
        self.epoch = epoch;
    }
}

/// Fails if a token of `stream` is not below `vocab_size`, naming the first such position.
pub(crate) fn check_ids(stream: &[u32], vocab_size: usize) -> Result<(), DataError> {
    match stream.iter().position(|&t| t as usize >= vocab_size) {
        Some(i) => Err(DataError::Invalid(format!(
            "token {} at stream position {i} is outside the vocabulary of {vocab_size}",
            stream[i]
        ))),
        None => Ok(()),
    }
}

/// Where a batcher stands: enough to resume it exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatcherState {
    /// Batches handed out so far.
    pub step: u64,
    /// The seed it runs with.
    pub seed: u64,
    /// Its sequence length.
    pub seq_len: usize,
    /// Its batch size.
    pub batch_size: usize,
    /// Sequences in its stream (a changed corpus or tokenizer changes this).
    pub n_sequences: usize,
}

/// The part of a batcher that both objectives share: a packed stream, its seeded epoch order
/// and the step, with the resume rule. Only the row builder differs between batchers.
#[derive(Clone, Debug)]
pub(crate) struct Cursor {
    stream: Arc<[u32]>,
    packing: Packing,
    /// Tokens a row reads past its chunk (1 for a causal window's last target).
    overhang: usize,
    order: EpochOrder,
    /// Step, seed and shape; `n_sequences` is `packing.n_chunks`.
    state: BatcherState,
}

impl Cursor {
    /// A cursor at step 0 over `stream`, packed by `packing` (of the stream's length), rows
    /// reading `overhang` tokens past their chunk, batches of `batch_size` rows drawn in the
    /// order seeded by `seed`; `seq_len` is recorded in the state. Fails if a token is outside
    /// the vocabulary or the stream holds no row.
    pub(crate) fn new(
        stream: Arc<[u32]>,
        vocab_size: usize,
        packing: impl FnOnce(usize) -> Result<Packing, DataError>,
        overhang: usize,
        seed: u64,
        seq_len: usize,
        batch_size: usize,
    ) -> Result<Self, DataError> {
        check_ids(&stream, vocab_size)?;
        let packing = packing(stream.len())?;
        Ok(Self {
            order: EpochOrder::new(packing.n_chunks, seed),
            stream,
            packing,
            overhang,
            state: BatcherState {
                step: 0,
                seed,
                seq_len,
                batch_size,
                n_sequences: packing.n_chunks,
            },
        })
    }

    /// Continues from `state`; fails if it was taken with another seed, shape or stream length.
    pub(crate) fn resume(&mut self, state: &BatcherState) -> Result<(), DataError> {
        let expected = BatcherState {
            step: state.step,
            ..self.state
        };
        if *state != expected {
            return Err(DataError::Invalid(format!(
                "cannot resume: saved state {state:?} does not match this batcher {expected:?}"
            )));
        }
        self.state.step = state.step;
        Ok(())
    }

    /// The state to save for [`Cursor::resume`].
    pub(crate) fn state(&self) -> BatcherState {
        self.state
    }

    /// Batches handed out so far (the step of the next batch).
    pub(crate) fn step(&self) -> u64 {
        self.state.step
    }

    /// Moves to step `step` (O(1): the epoch's order is recomputed lazily).
    pub(crate) fn set_step(&mut self, step: u64) {
        self.state.step = step;
    }

    /// The current step, then moves to the next one.
    pub(crate) fn advance(&mut self) -> u64 {
        let step = self.state.step;
        self.state.step += 1;
        step
    }

    /// Sequences in one epoch.
    pub(crate) fn sequences_per_epoch(&self) -> usize {
        self.packing.n_chunks
    }

    /// Batches in one epoch (fractional: batches may straddle two epochs).
    pub(crate) fn steps_per_epoch(&self) -> f64 {
        self.packing.n_chunks as f64 / self.state.batch_size as f64
    }

    /// The stream positions row `i` reads: chunk `i` and the overhang.
    pub(crate) fn row_range(&self, i: usize) -> Range<usize> {
        let r = self.packing.range(i);
        r.start..r.end + self.overhang
    }

    /// The chunk drawn at slot `slot` (slot = step * batch_size + row).
    pub(crate) fn chunk_at_slot(&mut self, slot: u64) -> usize {
        self.order.item(slot)
    }

    /// The slots of batch `step`, each with the tokens its row reads.
    pub(crate) fn rows(&mut self, step: u64) -> impl Iterator<Item = (u64, &[u32])> + '_ {
        let batch_size = self.state.batch_size as u64;
        let Self {
            ref stream,
            ref packing,
            overhang,
            ref mut order,
            ..
        } = *self;
        (step * batch_size..(step + 1) * batch_size).map(move |slot| {
            let r = packing.range(order.item(slot));
            (slot, &stream[r.start..r.end + overhang])
        })
    }
}
