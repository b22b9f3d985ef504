//! A corpus folder (the bundled plays, or another one under the assets): gzipped plain text,
//! one document per play or book, and its tokenization.

use std::io::Read;
use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use super::DataError;

/// The line that separates two documents in a corpus file: a lone form feed.
pub const DOC_SEPARATOR: &str = "\n\x0c\n";

/// One of the two fixed corpus splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// About 95% of every play: its text up to the held-out tail.
    Train,
    /// The trailing 5% (by characters, cut between speeches) of every play.
    Valid,
}

impl Split {
    /// The split's file, relative to a corpus folder.
    pub fn file(self) -> &'static str {
        match self {
            Split::Train => "train.txt.gz",
            Split::Valid => "valid.txt.gz",
        }
    }
}

/// The bundled corpus's folder under the assets (Shakespeare's plays).
pub const DEFAULT_CORPUS: &str = "corpus";

/// The repository's `assets/` folder (resolved at compile time from this crate's location).
pub fn default_assets_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets")
}

/// The bundled corpus's folder, `assets/corpus/`.
pub fn default_corpus_dir() -> PathBuf {
    default_assets_dir().join(DEFAULT_CORPUS)
}

/// Reads a gzipped corpus file and splits it into documents (trimmed, empty ones dropped).
pub fn read_documents(path: &Path) -> Result<Vec<String>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let text = String::from_utf8(bytes).map_err(|source| DataError::Utf8 {
        path: path.to_path_buf(),
        source,
    })?;
    let docs: Vec<String> = text
        .split(DOC_SEPARATOR)
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .collect();
    if docs.is_empty() {
        return Err(DataError::EmptyCorpus {
            path: path.to_path_buf(),
        });
    }
    Ok(docs)
}

/// Reads the documents of one split from the corpus folder `corpus_dir`.
pub fn read_split(corpus_dir: &Path, split: Split) -> Result<Vec<String>, DataError> {
    read_documents(&corpus_dir.join(split.file()))
}

/// Token ids of documents, concatenated in order with no special tokens between them.
///
/// `path` names the corpus file in errors.
pub fn tokenize_documents(
    tokenizer: &Tokenizer,
    docs: &[String],
    path: &Path,
) -> Result<Vec<u32>, DataError> {
    // One encoding per document, in parallel over documents: fewer, larger encodings cost less
    // than one per line, and give the same ids, since the BERT normalizer turns newlines into
    // spaces and the pre-tokenizer splits on them.
    let inputs: Vec<&str> = docs.iter().map(String::as_str).collect();
    // A tokenizer.json may carry truncation or padding settings meant for model inputs; a
    // corpus stream must have neither.
    let unpadded;
    let tokenizer = if tokenizer.get_truncation().is_some() || tokenizer.get_padding().is_some() {
        let mut t = tokenizer.clone();
        t.with_padding(None);
        t.with_truncation(None).map_err(|e| DataError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        unpadded = t;
        &unpadded
    } else {
        tokenizer
    };
    let encodings =
        tokenizer
            .encode_batch_fast(inputs, false)
            .map_err(|e| DataError::Tokenizer {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
    let total = encodings.iter().map(|e| e.len()).sum();
    let mut ids = Vec::with_capacity(total);
    for e in &encodings {
        ids.extend_from_slice(e.get_ids());
    }
    Ok(ids)
}

/// The two corpus splits as token streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokenized {
    /// The training split, all plays concatenated.
    pub train: Vec<u32>,
    /// The validation split, all play tails concatenated.
    pub valid: Vec<u32>,
}

/// Reads and tokenizes both splits of the corpus folder `corpus_dir`.
pub fn load_corpus(corpus_dir: &Path, tokenizer: &Tokenizer) -> Result<Tokenized, DataError> {
    let split = |s: Split| {
        let path = corpus_dir.join(s.file());
        let docs = read_documents(&path)?;
        tokenize_documents(tokenizer, &docs, &path)
    };
    Ok(Tokenized {
        train: split(Split::Train)?,
        valid: split(Split::Valid)?,
    })
}
