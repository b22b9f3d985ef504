//! Trains the byte-level BPE tokenizer for GPT-2 models on the corpus's training split and
//! writes the Hugging Face tokenizer files into `assets/tokenizer-gpt2/`.
//!
//! ```text
//! cargo run -p bert2bert-train --example train_bpe -- [VOCAB_SIZE] [ASSETS_DIR] [FOLDER] [CORPUS]
//! ```
//!
//! Training is not bit-for-bit reproducible (the trainer breaks ties between equally frequent
//! merges through hash-map order), so the files are committed and tests only use the committed
//! ones. Defaults: vocabulary 8192 (256 byte symbols, `<|endoftext|>` and the merges), the
//! repository's `assets/`.

mod common;

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Result, ensure};
use bert2bert_train::data::{self, Split};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::byte_level::ByteLevel as ByteLevelProcessor;
use tokenizers::{AddedToken, TokenizerBuilder, TokenizerImpl};

type BpeTokenizer =
    TokenizerImpl<BPE, NormalizerWrapper, ByteLevel, ByteLevelProcessor, ByteLevelDecoder>;

/// The end-of-text token: the trainer gives special tokens the first ids, so it is id 0.
const EOT: &str = "<|endoftext|>";

/// Longest sequence the Hugging Face files advertise (`model_max_length`, GPT-2's 1024).
const MODEL_MAX_LENGTH: usize = 1024;

fn main() -> Result<()> {
    let (vocab_size, corpus, out) = common::parse_args(
        "train_bpe [VOCAB_SIZE] [ASSETS_DIR] [FOLDER] [CORPUS]",
        "tokenizer-gpt2",
    )?;

    let docs = data::read_split(&corpus, Split::Train)?;
    eprintln!("training on {} documents", docs.len());

    // GPT-2's setup: no normalizer, byte-level pre-tokenizer without a prefix space (so decoding
    // gives back the exact bytes), byte-level decoder.
    let mut tokenizer: BpeTokenizer = TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_normalizer(None)
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_post_processor(Some(ByteLevelProcessor::new(false, true, true)))
        .with_decoder(Some(ByteLevelDecoder::new(false, true, true)))
        .build()
        .map_err(anyhow::Error::msg)?;
    let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
    let mut trainer = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .initial_alphabet(alphabet)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(EOT, true)])
        .build();
    tokenizer
        .train(&mut trainer, docs.iter())
        .map_err(anyhow::Error::msg)?;

    let json_path = common::save_tokenizer(&tokenizer, &out, "vocab.json, merges.txt")?;
    write_hf_files(&out)?;

    // Check what was written through the same path the library uses.
    let loaded = data::load_tokenizer(&json_path)?;
    ensure!(
        loaded.token_to_id(EOT) == Some(0),
        "{EOT} has id {:?}, expected 0",
        loaded.token_to_id(EOT)
    );
    let train_tokens = data::tokenize_documents(&loaded, &docs, &corpus.join(Split::Train.file()))?;
    let bytes: usize = docs.iter().map(String::len).sum();
    eprintln!(
        "wrote {}: vocabulary {}, {} training tokens ({:.2} bytes per token)",
        out.display(),
        loaded.get_vocab_size(true),
        train_tokens.len(),
        bytes as f64 / train_tokens.len() as f64
    );
    Ok(())
}

/// `tokenizer_config.json` and `special_tokens_map.json`, so that `GPT2TokenizerFast` (and
/// `AutoTokenizer`) load the folder.
fn write_hf_files(out: &Path) -> Result<()> {
    let special_map = serde_json::json!({
        "bos_token": EOT,
        "eos_token": EOT,
        "unk_token": EOT,
    });
    let config = serde_json::json!({
        "add_bos_token": false,
        "add_prefix_space": false,
        "added_tokens_decoder": { "0": common::special_token_entry(EOT) },
        "bos_token": EOT,
        "clean_up_tokenization_spaces": false,
        "eos_token": EOT,
        "errors": "replace",
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": null,
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": EOT,
    });
    common::write_hf_files(out, special_map, config)
}
