//! Shared by the tokenizer-training examples (`train_tokenizer`, `train_bpe`): the command
//! line and writing the Hugging Face tokenizer files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bert2bert_train::data;
use serde::Serialize;
use tokenizers::{Decoder, Model, Normalizer, PostProcessor, PreTokenizer, TokenizerImpl};

/// `[VOCAB_SIZE] [ASSETS_DIR] [FOLDER] [CORPUS]` from the command line (defaults 8192, the
/// repository's `assets/`, `default_folder` and the plays, `corpus`); returns the vocabulary
/// size, the corpus folder and the output folder, both inside the assets; `usage` is printed for
/// extra arguments.
pub fn parse_args(usage: &str, default_folder: &str) -> Result<(usize, PathBuf, PathBuf)> {
    let mut args = std::env::args().skip(1);
    let vocab_size: usize = match args.next() {
        Some(v) => v
            .parse()
            .with_context(|| format!("vocabulary size {v:?}"))?,
        None => 8192,
    };
    let assets = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(data::default_assets_dir);
    let out = assets.join(args.next().unwrap_or_else(|| default_folder.to_owned()));
    let corpus = assets.join(
        args.next()
            .unwrap_or_else(|| data::DEFAULT_CORPUS.to_owned()),
    );
    if args.next().is_some() {
        bail!("usage: {usage}");
    }
    Ok((vocab_size, corpus, out))
}

/// Writes `tokenizer.json` and the model's own files (named by `model_files` in errors) into
/// `out`, creating it; returns the path of `tokenizer.json`.
pub fn save_tokenizer<M, N, PT, PP, D>(
    tokenizer: &TokenizerImpl<M, N, PT, PP, D>,
    out: &Path,
    model_files: &str,
) -> Result<PathBuf>
where
    M: Model + Serialize,
    N: Normalizer + Serialize,
    PT: PreTokenizer + Serialize,
    PP: PostProcessor + Serialize,
    D: Decoder + Serialize,
{
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json_path = out.join("tokenizer.json");
    tokenizer
        .save(&json_path, true)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("writing {}", json_path.display()))?;
    tokenizer
        .get_model()
        .save(out, None)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("writing {}/{model_files}", out.display()))?;
    Ok(json_path)
}

/// The `added_tokens_decoder` entry of special token `content` in `tokenizer_config.json`.
pub fn special_token_entry(content: &str) -> serde_json::Value {
    serde_json::json!({
        "content": content,
        "lstrip": false,
        "normalized": false,
        "rstrip": false,
        "single_word": false,
        "special": true,
    })
}

/// Writes `special_tokens_map.json` and `tokenizer_config.json` into `out` (pretty JSON, a
/// final newline), the files `transformers` reads beside `tokenizer.json`.
pub fn write_hf_files(
    out: &Path,
    special_map: serde_json::Value,
    config: serde_json::Value,
) -> Result<()> {
    for (name, value) in [
        ("special_tokens_map.json", special_map),
        ("tokenizer_config.json", config),
    ] {
        let path = out.join(name);
        let text = serde_json::to_string_pretty(&value)? + "\n";
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
