//! The bundled corpus tokenized for one family, and the batches of its objective: masked-LM
//! for BERT, next-token for GPT-2. Shared by `cargo xtask pretrain` and the experiment.

use crate::data::causal::{CausalBatcher, CausalConfig, causal_eval_batches, load_causal_split};
use crate::data::{
    DataError, MlmBatcher, MlmConfig, SpecialIds, Split, eval_batches, load_corpus, load_tokenizer,
};
use crate::trainer::{Batch, BatchSource};
use bert2bert_checkpoint::Family;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The default tokenizer folder of a family under `assets`.
pub fn default_tokenizer_dir(assets: &Path, family: Family) -> PathBuf {
    match family {
        Family::Bert => assets.join("tokenizer"),
        Family::Gpt2 => assets.join("tokenizer-gpt2"),
    }
}

/// The bundled corpus tokenized for one family: the training and validation streams.
pub struct Streams {
    family: Family,
    tokenizer: PathBuf,
    vocab: usize,
    train: Arc<[u32]>,
    valid: Vec<u32>,
    special: Option<SpecialIds>,
    mask_prob: f64,
}

impl Streams {
    /// Tokenizes the corpus folder `corpus_dir` with the tokenizer in `tokenizer_dir`.
    pub fn load(
        family: Family,
        corpus_dir: &Path,
        tokenizer_dir: &Path,
    ) -> Result<Self, DataError> {
        let tok_path = tokenizer_dir.join("tokenizer.json");
        let tokenizer = load_tokenizer(&tok_path)?;
        let vocab = tokenizer.get_vocab_size(true);
        Ok(match family {
            Family::Bert => {
                let special = SpecialIds::from_tokenizer(&tokenizer, &tok_path)?;
                let corpus = load_corpus(corpus_dir, &tokenizer)?;
                Self {
                    family,
                    tokenizer: tok_path,
                    vocab,
                    train: corpus.train.into(),
                    valid: corpus.valid,
                    special: Some(special),
                    mask_prob: MlmConfig::BERT_MASK_PROB,
                }
            }
            Family::Gpt2 => Self {
                family,
                tokenizer: tok_path,
                vocab,
                train: load_causal_split(corpus_dir, &tokenizer, Split::Train)?.into(),
                valid: load_causal_split(corpus_dir, &tokenizer, Split::Valid)?,
                special: None,
                mask_prob: MlmConfig::BERT_MASK_PROB,
            },
        })
    }

    /// The same streams with masked-LM batches that predict `mask_prob` of the tokens
    /// (BERT: 0.15); next-token batches do not use it.
    pub fn with_mask_prob(mut self, mask_prob: f64) -> Self {
        self.mask_prob = mask_prob;
        self
    }

    /// The fraction of tokens a masked-LM batch predicts.
    pub fn mask_prob(&self) -> f64 {
        self.mask_prob
    }

    /// Size of the tokenizer's vocabulary.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Tokens in the training split.
    pub fn train_tokens(&self) -> usize {
        self.train.len()
    }

    /// Entropy (nats) of the training split's unigram distribution: the loss of a model that
    /// knows word frequencies and nothing else.
    pub fn unigram_entropy(&self) -> f64 {
        unigram_entropy(&self.train, self.vocab)
    }

    /// Fails when the tokenizer has more tokens than `vocab_size`, a model's vocabulary.
    pub fn check_fits(&self, vocab_size: usize) -> Result<(), DataError> {
        if self.vocab > vocab_size {
            return Err(DataError::VocabTooLarge {
                path: self.tokenizer.clone(),
                tokens: self.vocab,
                vocab_size,
            });
        }
        Ok(())
    }

    fn mlm(&self, seq_len: usize, batch_size: usize, vocab: usize, seed: u64) -> MlmConfig {
        MlmConfig {
            special: self.special.expect("BERT streams carry special ids"),
            mask_prob: self.mask_prob,
            ..MlmConfig::new(seq_len, batch_size, vocab, seed)
        }
    }

    /// Seeded training batches of the family's objective, for a model of `vocab` tokens, and
    /// the optimizer steps per pass over the training split.
    pub fn batcher(
        &self,
        vocab: usize,
        batch_size: usize,
        seq_len: usize,
        seed: u64,
    ) -> Result<(Box<dyn BatchSource>, f64), DataError> {
        Ok(match self.family {
            Family::Bert => {
                let b = MlmBatcher::new(
                    self.train.clone(),
                    self.mlm(seq_len, batch_size, vocab, seed),
                )?;
                let spe = b.steps_per_epoch();
                (Box::new(b), spe)
            }
            Family::Gpt2 => {
                let cfg = CausalConfig {
                    seq_len,
                    batch_size,
                    vocab_size: vocab,
                    seed,
                };
                let b = CausalBatcher::new(self.train.clone(), cfg)?;
                let spe = b.steps_per_epoch();
                (Box::new(b), spe)
            }
        })
    }

    /// The fixed held-out set: `n` validation sequences, the same whatever the run's seed.
    pub fn eval(&self, vocab: usize, seq_len: usize, n: usize) -> Result<Vec<Batch>, DataError> {
        Ok(match self.family {
            Family::Bert => eval_batches(&self.valid, &self.mlm(seq_len, 32, vocab, 0), n)?
                .into_iter()
                .map(Batch::Mlm)
                .collect(),
            Family::Gpt2 => {
                let cfg = CausalConfig {
                    seq_len,
                    batch_size: 32,
                    vocab_size: vocab,
                    seed: 0,
                };
                causal_eval_batches(&self.valid, &cfg, n)?
                    .into_iter()
                    .map(Batch::Causal)
                    .collect()
            }
        })
    }
}

/// Entropy (nats) of the unigram distribution of `stream` over `vocab` ids (ids outside are
/// not counted).
fn unigram_entropy(stream: &[u32], vocab: usize) -> f64 {
    let mut counts = vec![0u64; vocab.max(1)];
    for &t in stream {
        if let Some(c) = counts.get_mut(t as usize) {
            *c += 1;
        }
    }
    let n: u64 = counts.iter().sum();
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n as f64;
            -p * p.ln()
        })
        .sum()
}

/// The training and held-out data for a run.
pub struct Data {
    /// Training batches (seeded, resumable).
    pub batcher: Box<dyn BatchSource>,
    /// The fixed held-out batches.
    pub eval: Vec<Batch>,
    /// Optimizer steps per pass over the training split.
    pub steps_per_epoch: f64,
}

/// Tokenizes the corpus folder `corpus_dir` with the tokenizer in `tokenizer_dir` and builds the batches of
/// `family`'s objective: masked-LM for BERT (predicting `mask_prob` of the tokens), next-token
/// for GPT-2.
#[allow(clippy::too_many_arguments)]
pub fn load_data(
    family: Family,
    corpus_dir: &Path,
    tokenizer_dir: &Path,
    vocab_size: usize,
    batch_size: usize,
    seq_len: usize,
    seed: u64,
    eval_sequences: usize,
    mask_prob: f64,
) -> Result<Data, DataError> {
    let streams = Streams::load(family, corpus_dir, tokenizer_dir)?.with_mask_prob(mask_prob);
    streams.check_fits(vocab_size)?;
    let (batcher, steps_per_epoch) = streams.batcher(vocab_size, batch_size, seq_len, seed)?;
    Ok(Data {
        batcher,
        eval: streams.eval(vocab_size, seq_len, eval_sequences)?,
        steps_per_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unigram_entropy_of_known_distributions() {
        // Uniform over 4 ids: ln 4.
        assert!((unigram_entropy(&[0, 1, 2, 3, 3, 2, 1, 0], 4) - 4f64.ln()).abs() < 1e-12);
        // One id only: no uncertainty.
        assert_eq!(unigram_entropy(&[7, 7, 7], 8), 0.0);
        // p = (3/4, 1/4); an id outside the vocabulary is not counted.
        let h = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        assert!((unigram_entropy(&[1, 1, 1, 2, 99], 4) - h).abs() < 1e-12);
    }
}
