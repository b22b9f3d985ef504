//! Packing a token stream into fixed-length chunks and visiting them in a seeded order.
//!
//! Shared by the MLM batcher and a causal-LM batcher: both cut one long stream into chunks of
//! equal length and read them epoch by epoch in a shuffled order that is a pure function of
//! `(seed, slot)`, so a run resumes exactly from a step count.

use std::ops::Range;

use bert2bert_checkpoint::random::SplitMix64;

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
