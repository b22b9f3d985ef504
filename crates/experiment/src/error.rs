//! Typed errors of the experiment.

use bert2bert_checkpoint::CheckpointError;
use bert2bert_expand::ExpandError;
use bert2bert_train::TrainError;
use bert2bert_train::data::DataError;
use std::path::PathBuf;

/// Everything that can stop an experiment. Variants with a `context` display it alone, their
/// cause through [`std::error::Error::source`] (the command line prints the whole chain).
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// A misuse of the options (the command line exits with code 2).
    #[error("{0}")]
    Usage(String),
    /// The plan, a stored experiment or a model does not fit what the experiment needs.
    #[error("{0}")]
    Invalid(String),
    /// A file or folder could not be read, written, created or removed.
    #[error("{context}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (plan, summary) is malformed.
    #[error("{context}")]
    Json {
        /// What was being parsed, naming the file.
        context: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A checkpoint folder could not be read.
    #[error("{context}")]
    Checkpoint {
        /// What was being read, naming the folder.
        context: String,
        /// The cause (boxed: it is large, and errors travel in every `Result`).
        #[source]
        source: Box<CheckpointError>,
    },
    /// A setting's source model folder is missing or unreadable.
    #[error(
        "the source model {} is missing or unreadable (the bundled models: see assets/README.md)",
        dir.display()
    )]
    Source {
        /// The folder.
        dir: PathBuf,
        /// Why it could not be used.
        #[source]
        source: Box<ExperimentError>,
    },
    /// A run's checkpoint could not be resumed.
    #[error(
        "resuming {} (use --restart if the experiment's settings changed)",
        dir.display()
    )]
    Resume {
        /// The run's folder.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: Box<TrainError>,
    },
    /// Growth or a baseline's initialisation failed on the source's data.
    #[error(transparent)]
    Expand(#[from] ExpandError),
    /// Building, training, evaluating or saving a model failed.
    #[error(transparent)]
    Train(Box<TrainError>),
    /// The corpus, the tokenizer or the batches failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The bundled plot font could not be registered.
    #[error("the bundled font DejaVuSans.ttf is invalid")]
    Font,
    /// A plot could not be drawn or written.
    #[error("drawing {}", path.display())]
    Plot {
        /// The PNG file.
        path: PathBuf,
        /// What plotters reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The generated part of a document differs from what the summary generates (or is absent).
    #[error("{0}")]
    Doc(String),
    /// Worker processes of `--jobs` failed.
    #[error("{} run(s) failed: {}", failed.len(), failed.join("; "))]
    Workers {
        /// Each failed run: its name, exit status and log file.
        failed: Vec<String>,
    },
}

impl ExperimentError {
    /// Classifies a growth refusal as `cargo xtask grow` does: a target the method cannot reach,
    /// or an option the family cannot honour, is a misuse; anything else is bad data.
    pub fn from_expand(e: ExpandError) -> Self {
        use ExpandError as E;
        match e {
            E::ZeroTarget { .. }
            | E::Shrink { .. }
            | E::Indivisible { .. }
            | E::HeadSize { .. } => Self::Usage(format!("{e} (check the target flags)")),
            E::Unsupported { .. } => Self::Usage(e.to_string()),
            other => Self::Expand(other),
        }
    }
}

/// Wraps an I/O error with what was being done.
pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExperimentError {
    let context = context.into();
    move |source| ExperimentError::Io { context, source }
}

/// Wraps a JSON error with what was being parsed.
pub(crate) fn json(
    context: impl Into<String>,
) -> impl FnOnce(serde_json::Error) -> ExperimentError {
    let context = context.into();
    move |source| ExperimentError::Json { context, source }
}

/// Wraps a checkpoint error with what was being read.
pub(crate) fn checkpoint(
    context: impl Into<String>,
) -> impl FnOnce(CheckpointError) -> ExperimentError {
    let context = context.into();
    move |source| ExperimentError::Checkpoint {
        context,
        source: Box::new(source),
    }
}

/// `serde_json::to_string_pretty` of a value that always serializes, with a final newline.
pub(crate) fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("serialisable") + "\n"
}

// Boxed: training errors are large, and an error travels in every `Result` of the crate.
impl From<TrainError> for ExperimentError {
    fn from(e: TrainError) -> Self {
        Self::Train(Box::new(e))
    }
}
