//! The shipped WordPiece tokenizer and its special tokens.

use std::path::Path;

use tokenizers::Tokenizer;

use super::DataError;

/// The tokenizer file, relative to the assets folder.
pub const TOKENIZER_FILE: &str = "tokenizer/tokenizer.json";

/// The special tokens, in id order: the shipped tokenizer gives them ids 0 to 4.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Loads a `tokenizer.json` (Hugging Face tokenizers format).
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, DataError> {
    Tokenizer::from_file(path).map_err(|e| DataError::Tokenizer {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The ids of the BERT special tokens in one vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpecialIds {
    /// `[PAD]`.
    pub pad: u32,
    /// `[UNK]`.
    pub unk: u32,
    /// `[CLS]`, first token of every sequence.
    pub cls: u32,
    /// `[SEP]`, last token of every sequence.
    pub sep: u32,
    /// `[MASK]`, the masked-token placeholder.
    pub mask: u32,
}

impl SpecialIds {
    /// The ids of the shipped tokenizer (`[PAD]`=0, `[UNK]`=1, `[CLS]`=2, `[SEP]`=3, `[MASK]`=4).
    pub const SHIPPED: Self = Self {
        pad: 0,
        unk: 1,
        cls: 2,
        sep: 3,
        mask: 4,
    };

    /// Looks the special tokens up in `tokenizer`; `path` names the file in errors.
    pub fn from_tokenizer(tokenizer: &Tokenizer, path: &Path) -> Result<Self, DataError> {
        let id = |token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| DataError::MissingSpecialToken {
                    path: path.to_path_buf(),
                    token: token.to_string(),
                })
        };
        Ok(Self {
            pad: id("[PAD]")?,
            unk: id("[UNK]")?,
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            mask: id("[MASK]")?,
        })
    }

    /// Whether `id` is one of the special tokens.
    pub fn contains(&self, id: u32) -> bool {
        [self.pad, self.unk, self.cls, self.sep, self.mask].contains(&id)
    }
}
