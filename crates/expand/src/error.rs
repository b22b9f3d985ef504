//! Typed errors of growth and verification.

use bert2bert_checkpoint::CheckpointError;

/// Everything that can refuse a growth or a verification.
#[derive(Debug, thiserror::Error)]
pub enum ExpandError {
    /// A model of another family was handed to a family-specific path.
    #[error("the {path} growth path was handed a {found} model")]
    WrongFamily {
        /// The path's family.
        path: &'static str,
        /// The model's family.
        found: &'static str,
    },
    /// A target dimension is zero.
    #[error("target {what} is 0")]
    ZeroTarget {
        /// Which dimension.
        what: &'static str,
    },
    /// The target is smaller than the source in some dimension.
    #[error("target {what} {to} is smaller than the source's {from}: growth never shrinks a model")]
    Shrink {
        /// Which dimension (layers, hidden size, heads, intermediate size).
        what: &'static str,
        /// The source's size.
        from: usize,
        /// The target's size.
        to: usize,
    },
    /// The target's hidden size does not split into its heads.
    #[error("target hidden size {hidden} is not divisible by its {heads} attention heads")]
    Indivisible {
        /// Target hidden size.
        hidden: usize,
        /// Target heads.
        heads: usize,
    },
    /// The target would change the head size, which growth keeps fixed.
    #[error(
        "target head size {to} (hidden {hidden} / {heads} heads) differs from the source's {from}: \
         heads grow in number, never in size (use {suggested} heads)"
    )]
    HeadSize {
        /// Source head size.
        from: usize,
        /// Target head size.
        to: usize,
        /// Target hidden size.
        hidden: usize,
        /// Target heads.
        heads: usize,
        /// Heads that would keep the head size, when the hidden size allows.
        suggested: String,
    },
    /// A target shape the growth cannot honour (Llama family: heads that cannot keep every
    /// grouped-query-attention group).
    #[error("invalid target: {0}")]
    Target(String),
    /// The source model is internally inconsistent.
    #[error("invalid source model: {0}")]
    InvalidModel(#[from] CheckpointError),
    /// A tensor name the grown model does not have.
    #[error("no tensor `{0}` in the grown model")]
    UnknownTensor(String),
    /// An option the model's family cannot honour.
    #[error("{option} is not available for {family} models: {reason}")]
    Unsupported {
        /// The option, as on the command line (`--map exact`).
        option: &'static str,
        /// The model's family.
        family: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// Two models cannot be compared, or the comparison's settings are invalid.
    #[error("cannot verify: {0}")]
    Verify(String),
}
