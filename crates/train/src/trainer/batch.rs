//! Batches on the device: the host batches of both objectives uploaded, the endless
//! [`BatchSource`] the loop draws from, and seeded synthetic batches for tests and benchmarks.

use super::*;

/// A masked batch on the host, as the data pipeline produces it.
pub type TrainBatch = MlmBatch;

// The upload lives here, with the model code, so the data module stays free of candle.
impl MlmBatch {
    /// Uploads the batch to `device`.
    pub fn to_device(&self, device: &Device) -> Result<DeviceBatch> {
        let mut targets = Vec::with_capacity(self.masked.len());
        for &i in &self.masked {
            let l = *self.labels.get(i).ok_or_else(|| {
                TrainError::Data(format!(
                    "masked index {i} outside {} labels",
                    self.labels.len()
                ))
            })?;
            if l < 0 {
                return Err(TrainError::Data(format!(
                    "position {i} is listed as masked but its label is {l}"
                )));
            }
            targets.push(l as u32);
        }
        Ok(DeviceBatch::new(
            &self.input_ids,
            &self.token_type_ids,
            &self.attention_mask,
            &self.masked,
            &targets,
            self.batch_size,
            self.seq_len,
            device,
        )?)
    }
}

/// A host batch of either objective: masked-LM (BERT) or next-token (GPT-2).
#[derive(Clone, Debug, PartialEq)]
pub enum Batch {
    /// Masked-language-model positions and targets.
    Mlm(TrainBatch),
    /// Next-token inputs and targets.
    Causal(CausalBatch),
}

impl Batch {
    /// Sequences and tokens per sequence.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Batch::Mlm(m) => (m.batch_size, m.seq_len),
            Batch::Causal(c) => (c.batch_size, c.seq_len),
        }
    }

    /// Tokens in the batch (sequences x sequence length).
    pub fn tokens(&self) -> u64 {
        let (b, s) = self.dims();
        (b * s) as u64
    }

    /// Positions whose token is predicted (the weight of this batch's mean loss).
    pub fn predicted(&self) -> usize {
        match self {
            Batch::Mlm(m) => m.masked.len(),
            Batch::Causal(c) => c.n_tokens(),
        }
    }
}

impl From<TrainBatch> for Batch {
    fn from(b: TrainBatch) -> Self {
        Batch::Mlm(b)
    }
}

impl From<CausalBatch> for Batch {
    fn from(b: CausalBatch) -> Self {
        Batch::Causal(b)
    }
}

/// An endless, seeded stream of training batches.
pub trait BatchSource {
    /// The next batch.
    fn next_batch(&mut self) -> Result<Batch>;

    /// Skips `n` batches (used to resume at the exact data position).
    fn skip(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            self.next_batch()?;
        }
        Ok(())
    }
}

/// Seeded random MLM batches (uniform tokens, 15% predicted): for tests and throughput benchmarks.
#[derive(Clone, Debug)]
pub struct SyntheticBatches {
    rng: SplitMix64,
    vocab: usize,
    batch_size: usize,
    seq_len: usize,
}

impl SyntheticBatches {
    /// Batches of `batch_size` x `seq_len` tokens below `vocab`, seeded.
    pub fn new(vocab: usize, batch_size: usize, seq_len: usize, seed: u64) -> Self {
        Self {
            rng: SplitMix64::new(seed),
            vocab,
            batch_size,
            seq_len,
        }
    }
}

impl SyntheticBatches {
    /// The next masked batch.
    pub fn next_mlm(&mut self) -> TrainBatch {
        let n = self.batch_size * self.seq_len;
        // Ids 0..5 are the special tokens of the bundled vocabulary; 4 is [MASK].
        let low = 5.min(self.vocab - 1);
        let mut input_ids = Vec::with_capacity(n);
        let mut labels = vec![-100i64; n];
        let mut masked = Vec::new();
        for (i, label) in labels.iter_mut().enumerate() {
            let tok = (low + self.rng.below(self.vocab - low)) as u32;
            if self.rng.uniform() < 0.15 {
                *label = tok as i64;
                masked.push(i);
                input_ids.push(4.min(self.vocab as u32 - 1));
            } else {
                input_ids.push(tok);
            }
        }
        if masked.is_empty() {
            labels[0] = input_ids[0] as i64;
            masked.push(0);
        }
        TrainBatch {
            input_ids,
            token_type_ids: vec![0; n],
            attention_mask: vec![1; n],
            labels,
            masked,
            batch_size: self.batch_size,
            seq_len: self.seq_len,
        }
    }
}

impl BatchSource for SyntheticBatches {
    fn next_batch(&mut self) -> Result<Batch> {
        Ok(Batch::Mlm(self.next_mlm()))
    }
}

impl BatchSource for crate::data::MlmBatcher {
    fn next_batch(&mut self) -> Result<Batch> {
        Ok(Batch::Mlm(crate::data::MlmBatcher::next_batch(self)))
    }
}

impl BatchSource for CausalBatcher {
    fn next_batch(&mut self) -> Result<Batch> {
        Ok(Batch::Causal(CausalBatcher::next_batch(self)))
    }
}
