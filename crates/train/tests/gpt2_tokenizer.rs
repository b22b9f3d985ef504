//! The committed byte-level BPE tokenizer (`assets/tokenizer-gpt2/`).

use bert2bert_train::data::{self, Split};

/// The repository's `assets/`, from the run-time `CARGO_MANIFEST_DIR` that cargo sets for tests
/// (a shared target dir may hold a library built from another checkout, whose compile-time
/// path is gone), falling back to the compile-time one.
fn assets_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(|d| std::path::PathBuf::from(d).join("../../assets"))
        .unwrap_or_else(bert2bert_train::data::default_assets_dir)
}

fn tokenizer() -> tokenizers::Tokenizer {
    let path = assets_dir().join("tokenizer-gpt2/tokenizer.json");
    data::load_tokenizer(&path).expect("committed tokenizer loads")
}

#[test]
fn vocabulary_and_end_of_text_id() {
    let t = tokenizer();
    assert_eq!(t.get_vocab_size(true), 8192);
    // Documented in assets/README.md and docs/data.md: <|endoftext|> is id 0.
    assert_eq!(t.token_to_id("<|endoftext|>"), Some(0));
    // Every byte is a symbol of its own, so no text needs an unknown token.
    let vocab = t.get_vocab(true);
    for c in tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet() {
        assert!(
            vocab.contains_key(&c.to_string()),
            "byte symbol {c:?} missing"
        );
    }
    // The Hugging Face side files agree with tokenizer.json.
    let dir = assets_dir().join("tokenizer-gpt2");
    let vocab_json: std::collections::HashMap<String, u32> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("vocab.json")).unwrap()).unwrap();
    assert_eq!(vocab_json.len(), 8192);
    for (token, id) in &vocab_json {
        assert_eq!(vocab.get(token), Some(id), "{token}");
    }
    let merges = std::fs::read_to_string(dir.join("merges.txt")).unwrap();
    // 8192 = 1 special + 256 bytes + merges.
    assert_eq!(merges.lines().skip(1).count(), 8192 - 257);
}

#[test]
fn round_trips_text_byte_for_byte() {
    let t = tokenizer();
    let samples = [
        "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer",
        "  leading spaces, trailing spaces  \n\n\ttabs\r\nand CRLF",
        "Unicode the corpus never saw: naïve café, Ελληνικά, 日本語, emoji 🦀.",
        "\x0c form feed and \u{0} NUL",
    ];
    for s in samples {
        let enc = t.encode(s, false).unwrap();
        assert!(!enc.get_ids().is_empty());
        assert_eq!(t.decode(enc.get_ids(), false).unwrap(), s);
    }
    // A whole validation play round-trips, and the BPE compresses it (> 3 bytes per token on
    // the committed merges; raw bytes would be 1).
    let docs = data::read_split(&data::default_corpus_dir(), Split::Valid).unwrap();
    let doc = &docs[0];
    let enc = t.encode(doc.as_str(), false).unwrap();
    assert_eq!(t.decode(enc.get_ids(), false).unwrap(), *doc);
    assert!(doc.len() as f64 / enc.len() as f64 > 3.0);
}

#[test]
fn end_of_text_is_one_special_token() {
    let t = tokenizer();
    let enc = t.encode("the end<|endoftext|>The start", false).unwrap();
    assert_eq!(enc.get_ids().iter().filter(|&&i| i == 0).count(), 1);
    assert_eq!(
        t.decode(enc.get_ids(), false).unwrap(),
        "the end<|endoftext|>The start"
    );
    assert_eq!(t.decode(enc.get_ids(), true).unwrap(), "the endThe start");
}
