//! Typed errors of the model and the trainer.

use std::path::PathBuf;

/// Everything that can go wrong while building, training or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A tensor operation failed (shape mismatch, device error, ...).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// Reading or writing a checkpoint folder failed.
    #[error(transparent)]
    Checkpoint(#[from] bert2bert_checkpoint::CheckpointError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A JSON file (trainer state, metrics) is malformed.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The model or its weights cannot be trained as asked.
    #[error("model: {0}")]
    Model(String),
    /// The training configuration is inconsistent.
    #[error("training configuration: {0}")]
    Config(String),
    /// A loss or gradient stopped being finite.
    #[error(
        "non-finite {what} at step {step}: training diverged (try a lower --lr or a longer --warmup)"
    )]
    Diverged {
        /// What went non-finite (loss, gradient norm).
        what: &'static str,
        /// The step.
        step: usize,
    },
    /// The CUDA device could not be opened.
    #[error("cannot open CUDA device 0 (build with `--features cuda`, see docs/gpu.md)")]
    NoCuda(#[source] candle_core::Error),
    /// The data pipeline failed.
    #[error("data: {0}")]
    Data(String),
}

/// Result with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;

/// Wraps an I/O error with the path it concerns.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}
