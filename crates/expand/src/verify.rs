//! Function-preservation check: source and grown model on the same seeded token batches,
//! compared layer by layer on the source's units.

use crate::error::ExpandError;
use crate::forward::{Batch, forward_bert};
use crate::options::Target;
use bert2bert_checkpoint::random::SplitMix64;
use bert2bert_checkpoint::{Bert, BertConfig, Model};
use ndarray::{Array2, ArrayView, Axis, Dimension, Slice};
use serde::Serialize;
use std::fmt;

/// The relative difference below which a growth counts as function-preserving (`--expect-exact`).
///
/// f32 carries 24 bits (6e-8 relative per rounding). A grown model sums k times more terms per
/// dot product and LayerNorm, in a different order, through a dozen layers whose LayerNorms can
/// amplify rounding by up to the inverse of a row's standard deviation; measured deviations of
/// exact growths stay below 2e-6 (docs/growth.md), while the smallest real deviation (a
/// non-integer width ratio) is above 1e-3. 1e-5 separates the two by more than a factor of 5
/// on either side.
pub const EXACT_REL_TOL: f32 = 1e-5;

/// How to verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyOptions {
    /// Number of batches.
    pub batches: usize,
    /// Tokens per sequence (at most `max_position_embeddings`).
    pub seq_len: usize,
    /// Sequences per batch.
    pub batch_size: usize,
    /// Seed of the token batches.
    pub seed: u64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            batches: 2,
            seq_len: 32,
            batch_size: 4,
            seed: 0,
        }
    }
}

/// The difference between a source and a grown output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diff {
    /// What is compared ("embeddings", "layer 3", "mlm logits", ...).
    pub name: String,
    /// max |grown - source| over every compared value.
    pub max_abs: f32,
    /// `max_abs / max |source|`: the largest error relative to the output's own scale.
    pub max_rel: f32,
}

/// A running max of |a - b| and |a|.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Acc {
    abs: f32,
    scale: f32,
}

impl Acc {
    pub(crate) fn add<D: Dimension>(
        &mut self,
        src: ArrayView<'_, f32, D>,
        grown: ArrayView<'_, f32, D>,
    ) {
        for (&a, &b) in src.iter().zip(grown.iter()) {
            let d = (a - b).abs();
            // NaN must not hide behind max: it counts as an infinite difference.
            self.abs = if d.is_nan() {
                f32::INFINITY
            } else {
                self.abs.max(d)
            };
            self.scale = self.scale.max(a.abs());
        }
    }

    pub(crate) fn diff(self, name: String) -> Diff {
        Diff {
            name,
            max_abs: self.abs,
            max_rel: self.abs / self.scale.max(f32::MIN_POSITIVE),
        }
    }
}

/// The result of a verification.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Source shape.
    pub source: Target,
    /// Grown shape.
    pub grown: Target,
    /// The options used.
    pub options: VerifyOptions,
    /// Embeddings output ("layer 0"), then the output of each layer present in both models,
    /// compared index by index on the source's hidden units.
    pub layers: Vec<Diff>,
    /// The last layer's output of each model (differs from the last of `layers` when depth grew).
    pub final_hidden: Diff,
    /// MLM logits, when both models have an MLM head.
    pub mlm_logits: Option<Diff>,
    /// NSP logits, when both models have pooler and NSP head. Their `max_rel` is relative to
    /// the size of the summed terms, `max sum_i |pooled_i W_ij| + |b_j|`, not to the logits,
    /// which can cancel to near zero.
    pub nsp_logits: Option<Diff>,
    /// LM logits (GPT-2).
    pub lm_logits: Option<Diff>,
    /// The largest `max_rel` of all the above.
    pub max_rel: f32,
    /// The tolerance `exact` was judged by.
    pub tolerance: f32,
    /// Whether every `max_rel` is within `tolerance`.
    pub exact: bool,
}

impl VerifyReport {
    /// Every compared output.
    pub fn diffs(&self) -> impl Iterator<Item = &Diff> {
        self.layers
            .iter()
            .chain(std::iter::once(&self.final_hidden))
            .chain(self.mlm_logits.iter())
            .chain(self.nsp_logits.iter())
            .chain(self.lm_logits.iter())
    }

    /// A few human-readable lines.
    pub fn summary(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "{} -> {}: {} batches of {} x {} tokens, seed {}",
            self.source, self.grown, o.batches, o.batch_size, o.seq_len, o.seed
        )?;
        writeln!(f, "{:<16} {:>12} {:>12}", "output", "max abs", "max rel")?;
        for d in self.diffs() {
            writeln!(
                f,
                "{:<16} {:>12.3e} {:>12.3e}",
                d.name, d.max_abs, d.max_rel
            )?;
        }
        write!(
            f,
            "max relative difference {:.3e}: {} (tolerance {:.0e})",
            self.max_rel,
            if self.exact {
                "function preserved"
            } else {
                "function changed"
            },
            self.tolerance
        )
    }
}

/// Seeded random batch for `config`: uniform token ids, a segment split, and a random amount
/// of right padding per sequence (at least one real token).
pub fn random_batch(
    config: &BertConfig,
    batch_size: usize,
    seq_len: usize,
    rng: &mut SplitMix64,
) -> Batch {
    let mut ids = Array2::<u32>::zeros((batch_size, seq_len));
    let mut types = Array2::<u32>::zeros((batch_size, seq_len));
    let mut mask = Array2::<u8>::zeros((batch_size, seq_len));
    for b in 0..batch_size {
        let len = 1 + rng.below(seq_len);
        let split = rng.below(seq_len + 1);
        for t in 0..seq_len {
            ids[[b, t]] = rng.below(config.vocab_size) as u32;
            types[[b, t]] = if t >= split {
                (config.type_vocab_size - 1).min(1) as u32
            } else {
                0
            };
            mask[[b, t]] = u8::from(t < len);
        }
    }
    Batch {
        input_ids: ids,
        token_type_ids: types,
        attention_mask: mask,
    }
}

fn bert_of<'m>(m: &'m Model, which: &str) -> Result<&'m Bert, ExpandError> {
    m.as_bert().ok_or_else(|| {
        ExpandError::Verify(format!(
            "the {which} model is {}, only BERT is supported",
            m.family().name()
        ))
    })
}

/// Runs `source` and `grown` on the same seeded batches and reports their differences.
pub fn verify(
    source: &Model,
    grown: &Model,
    opts: &VerifyOptions,
) -> Result<VerifyReport, ExpandError> {
    match (source, grown) {
        (Model::Gpt2(s), Model::Gpt2(g)) => crate::gpt2::verify_gpt2(s, g, opts),
        (Model::Gpt2(_), Model::Bert(_)) | (Model::Bert(_), Model::Gpt2(_)) => {
            Err(ExpandError::Verify(format!(
                "the source is {} but the grown model is {}",
                source.family().name(),
                grown.family().name()
            )))
        }
        (Model::Bert(_), Model::Bert(_)) => verify_bert(source, grown, opts),
    }
}

fn verify_bert(
    source: &Model,
    grown: &Model,
    opts: &VerifyOptions,
) -> Result<VerifyReport, ExpandError> {
    let (s, g) = (bert_of(source, "source")?, bert_of(grown, "grown")?);
    s.validate()?;
    g.validate()?;
    let (cs, cg) = (&s.config, &g.config);
    if opts.batches == 0 || opts.batch_size == 0 || opts.seq_len == 0 {
        return Err(ExpandError::Verify(
            "batches, batch size and sequence length must be positive".into(),
        ));
    }
    if cg.hidden_size < cs.hidden_size {
        return Err(ExpandError::Verify(format!(
            "the grown model's hidden size {} is smaller than the source's {}",
            cg.hidden_size, cs.hidden_size
        )));
    }
    if cg.vocab_size != cs.vocab_size || cg.type_vocab_size != cs.type_vocab_size {
        return Err(ExpandError::Verify(format!(
            "vocabularies differ: source {} tokens / {} types, grown {} / {}",
            cs.vocab_size, cs.type_vocab_size, cg.vocab_size, cg.type_vocab_size
        )));
    }
    let max_len = cs.max_position_embeddings.min(cg.max_position_embeddings);
    if opts.seq_len > max_len {
        return Err(ExpandError::Verify(format!(
            "sequence length {} exceeds max_position_embeddings {max_len}",
            opts.seq_len
        )));
    }
    let n_layers = s.layers.len().min(g.layers.len());
    let mut layers = vec![Acc::default(); n_layers + 1];
    let (mut last, mut mlm, mut nsp) = (Acc::default(), Acc::default(), Acc::default());
    let units = Slice::from(0..cs.hidden_size);
    let mut rng = SplitMix64::new(opts.seed);
    for _ in 0..opts.batches {
        let batch = random_batch(cs, opts.batch_size, opts.seq_len, &mut rng);
        let a = forward_bert(s, &batch)?;
        let b = forward_bert(g, &batch)?;
        for (l, acc) in layers.iter_mut().enumerate() {
            let gb = b.hidden_states[l].slice_axis(Axis(2), units);
            acc.add(a.hidden_states[l].view(), gb);
        }
        let (ha, hb) = (
            a.hidden_states.last().expect("L + 1 states"),
            b.hidden_states.last().expect("L + 1 states"),
        );
        last.add(ha.view(), hb.slice_axis(Axis(2), units));
        if let (Some(x), Some(y)) = (&a.mlm_logits, &b.mlm_logits) {
            mlm.add(x.view(), y.view());
        }
        if let (Some(x), Some(y)) = (&a.nsp_logits, &b.nsp_logits) {
            nsp.add(x.view(), y.view());
            // Two logits per sequence can cancel to near zero while their terms are O(1): the
            // scale of an NSP logit is the size of what it sums, max_b,j sum_i |p_bi W_ij| + |b_j|.
            if let (Some(p), Some(w)) = (&a.pooled, &s.nsp) {
                let terms = p.mapv(f32::abs).dot(&w.weight.mapv(f32::abs)) + w.bias.mapv(f32::abs);
                nsp.scale = terms.iter().fold(nsp.scale, |m, &v| m.max(v));
            }
        }
    }
    let layers: Vec<Diff> = layers
        .into_iter()
        .enumerate()
        .map(|(l, acc)| {
            acc.diff(if l == 0 {
                "embeddings".into()
            } else {
                format!("layer {l}")
            })
        })
        .collect();
    let final_hidden = last.diff("final hidden".into());
    let mlm_logits = (s.mlm.is_some() && g.mlm.is_some()).then(|| mlm.diff("mlm logits".into()));
    let both_nsp = s.nsp.is_some() && s.pooler.is_some() && g.nsp.is_some() && g.pooler.is_some();
    let nsp_logits = both_nsp.then(|| nsp.diff("nsp logits".into()));
    let max_rel = layers
        .iter()
        .chain(std::iter::once(&final_hidden))
        .chain(mlm_logits.iter())
        .chain(nsp_logits.iter())
        .map(|d| d.max_rel)
        .fold(
            0.0f32,
            |a, b| if b.is_nan() { f32::INFINITY } else { a.max(b) },
        );
    Ok(VerifyReport {
        source: Target::of(cs),
        grown: Target::of(cg),
        options: *opts,
        layers,
        final_hidden,
        mlm_logits,
        nsp_logits,
        lm_logits: None,
        max_rel,
        tolerance: EXACT_REL_TOL,
        exact: max_rel <= EXACT_REL_TOL,
    })
}

/// Refuses a decoder-only comparison (GPT-2, Llama family) that cannot run: empty batches, a
/// grown model narrower than its source, different vocabularies, or sequences longer than
/// `max_len` positions (`positions` names the config field in the message).
pub(crate) fn check_decoder_pair(
    opts: &VerifyOptions,
    hidden: (usize, usize),
    vocab: (usize, usize),
    max_len: usize,
    positions: &str,
) -> Result<(), ExpandError> {
    if opts.batches == 0 || opts.batch_size == 0 || opts.seq_len == 0 {
        return Err(ExpandError::Verify(
            "batches, batch size and sequence length must be positive".into(),
        ));
    }
    if hidden.1 < hidden.0 {
        return Err(ExpandError::Verify(format!(
            "the grown model's hidden size {} is smaller than the source's {}",
            hidden.1, hidden.0
        )));
    }
    if vocab.1 != vocab.0 {
        return Err(ExpandError::Verify(format!(
            "vocabularies differ: source {} tokens, grown {}",
            vocab.0, vocab.1
        )));
    }
    if opts.seq_len > max_len {
        return Err(ExpandError::Verify(format!(
            "sequence length {} exceeds {positions} {max_len}",
            opts.seq_len
        )));
    }
    Ok(())
}

/// The report of a decoder-only comparison (GPT-2, Llama family): one accumulated difference
/// per compared layer (`layers[0]` the embeddings, `layers[l]` source layer l against grown
/// layer `aligned[l - 1]`), the last hidden states and the LM logits.
pub(crate) fn decoder_report(
    source: Target,
    grown: Target,
    options: &VerifyOptions,
    layers: Vec<Acc>,
    aligned: &[usize],
    last: Acc,
    logits: Acc,
) -> VerifyReport {
    let layers: Vec<_> = layers
        .into_iter()
        .enumerate()
        .map(|(l, acc)| {
            acc.diff(match l {
                0 => "embeddings".into(),
                l if aligned[l - 1] == l => format!("layer {l}"),
                l => format!("layer {l}/grown {}", aligned[l - 1]),
            })
        })
        .collect();
    let final_hidden = last.diff("final hidden".into());
    let lm_logits = Some(logits.diff("lm logits".into()));
    let max_rel = layers
        .iter()
        .chain(std::iter::once(&final_hidden))
        .chain(lm_logits.iter())
        .map(|d| d.max_rel)
        .fold(
            0.0f32,
            |a, b| if b.is_nan() { f32::INFINITY } else { a.max(b) },
        );
    VerifyReport {
        source,
        grown,
        options: *options,
        layers,
        final_hidden,
        mlm_logits: None,
        nsp_logits: None,
        lm_logits,
        max_rel,
        tolerance: EXACT_REL_TOL,
        exact: max_rel <= EXACT_REL_TOL,
    }
}
