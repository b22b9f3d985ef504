//! What to grow into and how: the target shape and the method's options.

use crate::error::ExpandError;
use bert2bert_checkpoint::{BertConfig, Gpt2Config, Model};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// The shape to grow into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Number of layers L_t.
    pub layers: usize,
    /// Hidden size D_t.
    pub hidden: usize,
    /// Attention heads A_t (head size D_t / A_t must equal the source's).
    pub heads: usize,
    /// FFN inner size F_t.
    pub intermediate: usize,
}

/// Refuses a zero target size, then one smaller than the source's; `sizes` holds
/// `(what, source, target)`, checked in that order.
pub(crate) fn check_sizes(sizes: &[(&'static str, usize, usize)]) -> Result<(), ExpandError> {
    if let Some(&(what, _, _)) = sizes.iter().find(|s| s.2 == 0) {
        return Err(ExpandError::ZeroTarget { what });
    }
    match sizes.iter().find(|s| s.2 < s.1) {
        Some(&(what, from, to)) => Err(ExpandError::Shrink { what, from, to }),
        None => Ok(()),
    }
}

impl Target {
    /// Checks that this target can grow from `source` (any family): nothing zero, nothing
    /// smaller, the head size kept.
    pub(crate) fn check_growth_from(&self, source: &Target) -> Result<(), ExpandError> {
        check_sizes(&[
            ("layers", source.layers, self.layers),
            ("hidden size", source.hidden, self.hidden),
            ("intermediate size", source.intermediate, self.intermediate),
            ("heads", source.heads, self.heads),
        ])?;
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(ExpandError::Indivisible {
                hidden: self.hidden,
                heads: self.heads,
            });
        }
        let dh = source.hidden / source.heads;
        if self.hidden / self.heads != dh {
            let suggested = if self.hidden.is_multiple_of(dh) {
                (self.hidden / dh).to_string()
            } else {
                format!("none: hidden {} is not a multiple of {dh}", self.hidden)
            };
            return Err(ExpandError::HeadSize {
                from: dh,
                to: self.hidden / self.heads,
                hidden: self.hidden,
                heads: self.heads,
                suggested,
            });
        }
        Ok(())
    }

    /// The shape of a BERT config.
    pub fn of(config: &BertConfig) -> Self {
        Self {
            layers: config.num_hidden_layers,
            hidden: config.hidden_size,
            heads: config.num_attention_heads,
            intermediate: config.intermediate_size,
        }
    }

    /// The shape of a GPT-2 config (`n_inner: null` is 4 x `n_embd`).
    pub fn of_gpt2(config: &Gpt2Config) -> Self {
        Self {
            layers: config.n_layer,
            hidden: config.n_embd,
            heads: config.n_head,
            intermediate: config.inner_dim(),
        }
    }

    /// The shape of any model.
    pub fn of_model(model: &Model) -> Self {
        match model {
            Model::Bert(m) => Self::of(&m.config),
            Model::Gpt2(m) => Self::of_gpt2(&m.config),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} layers x {} hidden, {} heads, FFN {}",
            self.layers, self.hidden, self.heads, self.intermediate
        )
    }
}

/// The width-growth method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Function-preserving initialization (spec section 4).
    #[default]
    Fpi,
    /// Advanced knowledge initialization: new units from the layer above (spec section 6).
    Aki,
}

/// How new units pick their source unit (spec section 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MapKind {
    /// Without replacement, cycling through the source units: copy counts differ by at most one.
    #[default]
    Balanced,
    /// Uniformly with replacement (the paper's rule).
    Random,
    /// Pre-LN models only (GPT-2): D_t = k D_s + r as k balanced copies of the hidden units
    /// plus r mean-units, with LayerNorm and epsilon scaling (spec section 5): exact at any
    /// width ratio. Heads and FFN grow as with `Balanced`.
    Exact,
}

/// Which dimensions AKI fills from the layer above.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AkiScope {
    /// New heads and new FFN neurons only; the residual stream uses FPI.
    #[default]
    Internal,
    /// Also the new hidden (residual) units written by W_O, W_2 and the layer's LayerNorms.
    All,
}

/// How layers are added (spec section 7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Depth {
    /// The paper's stacking: k copies of 1..L_s, then the top L_t - k L_s layers.
    #[default]
    Stack,
    /// Each layer repeated in place (1, 1, 2, 2, ...), the top layers once more.
    Interleave,
    /// Pre-LN models only (GPT-2): placed like `Interleave`; each added block is a copy of the
    /// block below it with the attention and MLP output projections (weights and biases) zero,
    /// so it is an exact identity.
    Identity,
}

/// All growth options. The default is FPI with balanced maps, stacking, seed 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GrowOptions {
    /// FPI or AKI.
    pub method: Method,
    /// Index-map rule for new units.
    pub map: MapKind,
    /// What AKI applies to (ignored by FPI).
    pub aki_scope: AkiScope,
    /// Depth-growth rule.
    pub depth: Depth,
    /// Seed of every index map.
    pub seed: u64,
}

/// A string that names no variant of an option.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{given}` (expected one of: {expected})")]
pub struct ParseOptionError {
    /// Which option.
    pub what: &'static str,
    /// The string given.
    pub given: String,
    /// The accepted names.
    pub expected: &'static str,
}

macro_rules! named_enum {
    ($ty:ty, $what:literal, $( $v:path => $name:literal ),+ ) => {
        impl $ty {
            /// The option's name on the command line and in reports.
            pub fn name(self) -> &'static str {
                match self { $( $v => $name ),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
        impl FromStr for $ty {
            type Err = ParseOptionError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s.to_ascii_lowercase().as_str() {
                    $( $name => Ok($v), )+
                    _ => Err(ParseOptionError {
                        what: $what,
                        given: s.to_owned(),
                        expected: concat!($( $name, " " ),+).trim_ascii_end(),
                    }),
                }
            }
        }
    };
}

named_enum!(Method, "method", Method::Fpi => "fpi", Method::Aki => "aki");
named_enum!(MapKind, "map", MapKind::Balanced => "balanced", MapKind::Random => "random", MapKind::Exact => "exact");
named_enum!(AkiScope, "AKI scope", AkiScope::Internal => "internal", AkiScope::All => "all");
named_enum!(Depth, "depth rule", Depth::Stack => "stack", Depth::Interleave => "interleave", Depth::Identity => "identity");
