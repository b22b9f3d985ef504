//! MLM data: the bundled corpus, the tokenizer, packed and masked batches.
//!
//! The corpus (38 Shakespeare plays, `assets/corpus/`) and the WordPiece tokenizer
//! (`assets/tokenizer/`) ship with the repository; nothing is downloaded. See `docs/data.md`.

pub mod causal;
mod corpus;
mod error;
mod mlm;
pub mod pack;
mod tokenizer;

pub use corpus::{
    DEFAULT_CORPUS, DOC_SEPARATOR, Split, Tokenized, default_assets_dir, default_corpus_dir,
    load_corpus, read_documents, read_split, tokenize_documents,
};
pub use error::DataError;
pub use mlm::{
    IGNORE_INDEX, MlmBatch, MlmBatcher, MlmConfig, eval_batches, n_sequences, tokens_per_epoch,
};
pub use pack::BatcherState;
pub use tokenizer::{SPECIAL_TOKENS, SpecialIds, TOKENIZER_FILE, load_tokenizer};
