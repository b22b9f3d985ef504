//! Trains the shipped BERT WordPiece tokenizer on the corpus's training split and writes the
//! Hugging Face tokenizer files into `assets/tokenizer/`.
//!
//! ```text
//! cargo run -p bert2bert-train --example train_tokenizer -- [VOCAB_SIZE] [ASSETS_DIR] [FOLDER] [CORPUS]
//! ```
//!
//! Training is not bit-for-bit reproducible (the trainer breaks ties between equally frequent
//! merges through hash-map order), so the files are committed and tests never assert ids from
//! a fresh run. Defaults: vocabulary 8192, the repository's `assets/`.

mod common;

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Result, ensure};
use bert2bert_train::data::{self, SPECIAL_TOKENS, SpecialIds, Split};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, TokenizerBuilder, TokenizerImpl};

type BertTokenizer =
    TokenizerImpl<WordPiece, BertNormalizer, BertPreTokenizer, BertProcessing, WordPieceDecoder>;

/// Longest sequence the Hugging Face files advertise (`model_max_length`).
const MODEL_MAX_LENGTH: usize = 512;

fn main() -> Result<()> {
    let (vocab_size, corpus, out) = common::parse_args(
        "train_tokenizer [VOCAB_SIZE] [ASSETS_DIR] [FOLDER] [CORPUS]",
        "tokenizer",
    )?;

    let docs = data::read_split(&corpus, Split::Train)?;
    let lines: Vec<&str> = docs
        .iter()
        .flat_map(|d| d.lines())
        .filter(|l| !l.trim().is_empty())
        .collect();
    eprintln!(
        "training on {} documents, {} lines",
        docs.len(),
        lines.len()
    );

    let special = SpecialIds::SHIPPED;
    let mut tokenizer: BertTokenizer = TokenizerBuilder::new()
        .with_model(WordPiece::default())
        .with_normalizer(Some(BertNormalizer::default()))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), special.sep),
            ("[CLS]".into(), special.cls),
        )))
        .with_decoder(Some(WordPieceDecoder::default()))
        .build()
        .map_err(anyhow::Error::msg)?;
    let mut trainer = WordPieceTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .limit_alphabet(1000)
        .initial_alphabet(HashSet::new())
        .show_progress(false)
        .special_tokens(
            SPECIAL_TOKENS
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect(),
        )
        .build();
    tokenizer
        .train(&mut trainer, lines.iter())
        .map_err(anyhow::Error::msg)?;

    let json_path = common::save_tokenizer(&tokenizer, &out, "vocab.txt")?;
    write_hf_files(&out)?;

    // Check what was written through the same path the library uses.
    let loaded = data::load_tokenizer(&json_path)?;
    let ids = SpecialIds::from_tokenizer(&loaded, &json_path)?;
    ensure!(
        ids == special,
        "special ids {ids:?}, expected {special:?} (the trainer puts them first, in order)"
    );
    let train_tokens = data::tokenize_documents(&loaded, &docs, &corpus.join(Split::Train.file()))?;
    let unk = train_tokens.iter().filter(|&&t| t == ids.unk).count();
    eprintln!(
        "wrote {}: vocabulary {}, {} training tokens ({} [UNK])",
        out.display(),
        loaded.get_vocab_size(true),
        train_tokens.len(),
        unk
    );
    Ok(())
}

/// `tokenizer_config.json` and `special_tokens_map.json`, so that `BertTokenizerFast` (and
/// `AutoTokenizer`) load the folder.
fn write_hf_files(out: &Path) -> Result<()> {
    let special_map = serde_json::json!({
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    });
    let mut added = serde_json::Map::new();
    for (id, token) in SPECIAL_TOKENS.iter().enumerate() {
        added.insert(id.to_string(), common::special_token_entry(token));
    }
    let config = serde_json::json!({
        "added_tokens_decoder": added,
        "clean_up_tokenization_spaces": true,
        "cls_token": "[CLS]",
        "do_basic_tokenize": true,
        "do_lower_case": true,
        "mask_token": "[MASK]",
        "model_max_length": MODEL_MAX_LENGTH,
        "never_split": null,
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "strip_accents": null,
        "tokenize_chinese_chars": true,
        "tokenizer_class": "BertTokenizer",
        "unk_token": "[UNK]",
    });
    common::write_hf_files(out, special_map, config)
}
