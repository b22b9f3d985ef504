//! Typed errors of the checkpoint layer: every variant names the file, and the tensor where one is involved.

use std::path::PathBuf;

/// Everything that can go wrong while reading or writing a checkpoint folder.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// An operating-system error on a file or folder.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The model folder has no `config.json`.
    #[error("{path}: missing config.json (a Hugging Face model folder needs one)")]
    MissingConfig {
        /// The expected config path.
        path: PathBuf,
    },
    /// A JSON file (config or shard index) does not parse.
    #[error("{path}: malformed JSON: {source}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A required config field is absent or has the wrong type.
    #[error("{path}: required field `{field}` is missing or not {expected}")]
    ConfigField {
        /// The config file.
        path: PathBuf,
        /// The field name.
        field: String,
        /// What type was expected.
        expected: &'static str,
    },
    /// The config's values contradict each other or the method's requirements.
    #[error("{path}: invalid config: {reason}")]
    ConfigInvalid {
        /// The config file.
        path: PathBuf,
        /// Why it is invalid.
        reason: String,
    },
    /// The model family or a feature of it is not supported.
    #[error("{path}: unsupported architecture: {reason}")]
    Unsupported {
        /// The config file.
        path: PathBuf,
        /// What is unsupported.
        reason: String,
    },
    /// The folder holds neither `model.safetensors` nor a shard index.
    #[error(
        "{path}: no model.safetensors or model.safetensors.index.json (only safetensors weights are read; convert .bin files first)"
    )]
    MissingWeights {
        /// The model folder.
        path: PathBuf,
    },
    /// A safetensors file is shorter than its own header says.
    #[error("{path}: truncated: file is {len} bytes but {what} needs {needed}")]
    Truncated {
        /// The safetensors file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
        /// How many bytes were needed.
        needed: u64,
        /// What needed them.
        what: String,
    },
    /// A safetensors header is not valid JSON or not of the expected form.
    #[error("{path}: safetensors header is invalid: {reason}")]
    Header {
        /// The safetensors file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// One tensor's entry or data is invalid (offsets, overlap, dtype, size).
    #[error("{path}: tensor `{tensor}`: {reason}")]
    Tensor {
        /// The file that holds the tensor.
        path: PathBuf,
        /// The tensor name as stored.
        tensor: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A tensor's shape contradicts the config.
    #[error("{path}: tensor `{tensor}` has shape {found:?}, but config.json implies {expected:?}")]
    Shape {
        /// The file that holds the tensor.
        path: PathBuf,
        /// The tensor name as stored.
        tensor: String,
        /// Shape found in the file.
        found: Vec<usize>,
        /// Shape implied by config.json.
        expected: Vec<usize>,
    },
    /// A shard index names a shard file that does not exist.
    #[error("{path}: shard `{shard}` (holding tensor `{tensor}`) does not exist")]
    MissingShard {
        /// The shard index file.
        path: PathBuf,
        /// The shard file name as written in the index.
        shard: String,
        /// The first tensor the index places in that shard.
        tensor: String,
    },
    /// A tensor the architecture needs is absent.
    #[error("{path}: required tensor `{tensor}` is missing")]
    MissingTensor {
        /// The weights file (or folder for sharded sets).
        path: PathBuf,
        /// The tensor name that was looked for.
        tensor: String,
    },
    /// A tensor the architecture does not know: refused rather than silently dropped.
    #[error(
        "{path}: unexpected tensor `{tensor}`: not part of a {family} checkpoint as this tool knows it"
    )]
    UnexpectedTensor {
        /// The file that holds it.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The detected family.
        family: &'static str,
    },
    /// A weight holds NaN or infinite values.
    #[error(
        "{path}: tensor `{tensor}` holds {count} non-finite value(s) (first: {first} at flat index {index})"
    )]
    NonFinite {
        /// The file that holds it.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// How many values are NaN or infinite.
        count: usize,
        /// Flat index of the first.
        index: usize,
        /// The first such value.
        first: f32,
    },
    /// The output folder exists and overwriting was not asked for.
    #[error("{path}: output folder already exists (ask for overwrite to replace it)")]
    OutputExists {
        /// The output folder.
        path: PathBuf,
    },
    /// The output folder is, lies inside, or contains an input: writing would destroy it.
    #[error(
        "{output}: the output folder {} the {role} {input}; writing there would replace or change what is read, so nothing was done (choose an output folder outside it)", relation.phrase()
    )]
    OutputOverlapsInput {
        /// The output folder as given.
        output: PathBuf,
        /// The input, resolved.
        input: PathBuf,
        /// What the input is (source, init, assets, ...).
        role: String,
        /// How they overlap.
        relation: crate::paths::Overlap,
    },
    /// The config's layer count contradicts the layers the weights hold.
    #[error("{path}: `{field}` is {claimed}, but {weights} holds {found}")]
    LayerCount {
        /// The config file.
        path: PathBuf,
        /// The field (`num_hidden_layers`, `n_layer`).
        field: &'static str,
        /// What the config claims.
        claimed: usize,
        /// The weights file (or shard index).
        weights: PathBuf,
        /// What the weights hold, in words ("3 layers (indices 0 to 2)").
        found: String,
    },
    /// What a load or growth would allocate does not fit in the memory available.
    #[error(
        "{path}: {what} needs about {} of memory, but {} is available ({source_of}); refused before allocating", crate::memory::human(*needed), crate::memory::human(*available as u128)
    )]
    OutOfMemory {
        /// The file or folder being read or written.
        path: PathBuf,
        /// What would allocate ("loading the weights", "growing ...").
        what: String,
        /// Bytes it would hold.
        needed: u128,
        /// Bytes available.
        available: u64,
        /// Where the available figure comes from.
        source_of: String,
    },
    /// A write was refused before anything was written, because the model failed its checks.
    #[error("{path}: not written: {source}")]
    NotWritten {
        /// The output folder that was not created or changed.
        path: PathBuf,
        /// Why the model was refused.
        #[source]
        source: Box<CheckpointError>,
    },
    /// A model handed to the writer is internally inconsistent.
    #[error("invalid model: {0}")]
    InvalidModel(String),
}

/// Result alias of this crate.
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.into();
    move |source| CheckpointError::Io { path, source }
}
