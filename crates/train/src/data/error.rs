//! Typed errors of the data pipeline.

use std::path::PathBuf;

/// An error reading the corpus or tokenizer, or building batches.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read (or un-gzipped).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A corpus file is not valid UTF-8.
    #[error("{path}: not valid UTF-8 text ({source})")]
    Utf8 {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::string::FromUtf8Error,
    },
    /// A tokenizer file could not be loaded, or the tokenizer failed on the text of a file.
    #[error("{path}: tokenizer error: {message}")]
    Tokenizer {
        /// The tokenizer or corpus file involved.
        path: PathBuf,
        /// What the tokenizers crate reported.
        message: String,
    },
    /// A special token is missing from the tokenizer's vocabulary.
    #[error("{path}: the vocabulary has no special token {token}")]
    MissingSpecialToken {
        /// The tokenizer file.
        path: PathBuf,
        /// The missing token, e.g. `[MASK]`.
        token: String,
    },
    /// A corpus split holds no text.
    #[error("{path}: the corpus file holds no text")]
    EmptyCorpus {
        /// The file.
        path: PathBuf,
    },
    /// The tokenizer has more tokens than the model's vocabulary.
    #[error("{path}: the tokenizer has {tokens} tokens, the model's vocabulary only {vocab_size}")]
    VocabTooLarge {
        /// The tokenizer file.
        path: PathBuf,
        /// Tokens in the tokenizer.
        tokens: usize,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// Batching parameters that cannot work (sequence too short, stream too short, ...).
    #[error("invalid batching setup: {0}")]
    Invalid(String),
}
