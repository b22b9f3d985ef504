//! Encodes the first lines of a corpus file with a tokenizer and prints them with their ids as
//! JSON (`{"lines": [...], "ids": [[...], ...]}`): the reference `scripts/hf_tokenizer_check.py
//! --ids` compares Hugging Face transformers' ids against.
//!
//! ```text
//! cargo run -p bert2bert-train --example encode_lines -- TOKENIZER_JSON CORPUS_GZ [MAX_LINES]
//! ```

use anyhow::{Context, Result};
use bert2bert_train::data::{load_tokenizer, read_documents};
use std::path::PathBuf;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: encode_lines TOKENIZER_JSON CORPUS_GZ [MAX_LINES]";
    let tok = PathBuf::from(args.next().context(usage)?);
    let corpus = PathBuf::from(args.next().context(usage)?);
    let max: usize = args.next().map_or(Ok(2000), |s| s.parse())?;
    let tokenizer = load_tokenizer(&tok)?;
    let lines: Vec<String> = read_documents(&corpus)?
        .iter()
        .flat_map(|d| d.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| !l.trim().is_empty())
        .take(max)
        .collect();
    let mut ids = Vec::with_capacity(lines.len());
    for l in &lines {
        // Plain encoding, as `tokenizer.encode(text)` in transformers (GPT-2 adds no specials).
        let e = tokenizer
            .encode(l.as_str(), true)
            .map_err(|e| anyhow::anyhow!("{}: {e}", tok.display()))?;
        ids.push(e.get_ids().to_vec());
    }
    println!(
        "{}",
        serde_json::json!({ "tokenizer": tok, "lines": lines, "ids": ids })
    );
    Ok(())
}
