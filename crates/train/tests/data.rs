//! The data pipeline: shipped corpus and tokenizer, packing, MLM masking, resume, eval set.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bert2bert_train::data::pack::{EpochOrder, Packing};
use bert2bert_train::data::{
    self, BatcherState, DataError, IGNORE_INDEX, MlmBatch, MlmBatcher, MlmConfig, SPECIAL_TOKENS,
    SpecialIds, Split, TOKENIZER_FILE, Tokenized,
};
use tokenizers::Tokenizer;

const VOCAB: usize = 8192;

fn assets() -> PathBuf {
    data::default_assets_dir()
}

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| data::load_tokenizer(&assets().join(TOKENIZER_FILE)).unwrap())
}

fn corpus() -> &'static Tokenized {
    static CORPUS: OnceLock<Tokenized> = OnceLock::new();
    CORPUS.get_or_init(|| data::load_corpus(&data::default_corpus_dir(), tokenizer()).unwrap())
}

/// The first `n` training tokens: enough for the statistics, quick to batch.
fn train_slice(n: usize) -> Vec<u32> {
    corpus().train[..n].to_vec()
}

/// A stream whose tokens are all distinct (5, 6, 7, ...), so a body tells its chunk.
fn distinct_stream(len: usize) -> (Vec<u32>, usize) {
    ((5..5 + len as u32).collect(), len + 5)
}

/// The unmasked body (without `[CLS]`/`[SEP]`) of every row.
fn original_rows(batch: &MlmBatch) -> Vec<Vec<u32>> {
    (0..batch.batch_size)
        .map(|r| {
            let row = r * batch.seq_len..(r + 1) * batch.seq_len;
            batch.input_ids[row.clone()]
                .iter()
                .zip(&batch.labels[row])
                .map(|(&i, &l)| if l == IGNORE_INDEX { i } else { l as u32 })
                .collect::<Vec<_>>()[1..batch.seq_len - 1]
                .to_vec()
        })
        .collect()
}

#[test]
fn shipped_tokenizer_has_documented_special_ids_and_round_trips() {
    let tok = tokenizer();
    let path = assets().join(TOKENIZER_FILE);
    assert_eq!(
        SpecialIds::from_tokenizer(tok, &path).unwrap(),
        SpecialIds::SHIPPED
    );
    for (id, token) in SPECIAL_TOKENS.iter().enumerate() {
        assert_eq!(tok.id_to_token(id as u32).as_deref(), Some(*token));
    }
    assert_eq!(tok.get_vocab_size(true), VOCAB);

    let text = "To be, or not to be: that is the question. Whither wilt thou, Ophelia?";
    let enc = tok.encode(text, true).unwrap();
    let ids = enc.get_ids();
    assert_eq!(ids[0], SpecialIds::SHIPPED.cls);
    assert_eq!(*ids.last().unwrap(), SpecialIds::SHIPPED.sep);
    assert!(!ids.contains(&SpecialIds::SHIPPED.unk), "{ids:?}");
    // Lowercasing normalizer, whitespace is not kept: compare without it.
    let decoded = tok.decode(ids, true).unwrap();
    let squash = |s: &str| s.to_lowercase().split_whitespace().collect::<String>();
    assert_eq!(squash(&decoded), squash(text));
    // A word the vocabulary lacks splits into ## pieces and decodes back whole.
    let enc = tok.encode("Antidisestablishmentarianism", false).unwrap();
    assert!(enc.get_tokens().len() > 1);
    assert!(enc.get_tokens()[1..].iter().all(|t| t.starts_with("##")));
    assert_eq!(
        tok.decode(enc.get_ids(), true).unwrap(),
        "antidisestablishmentarianism"
    );
}

#[test]
fn hugging_face_tokenizer_files_agree_with_tokenizer_json() {
    let dir = assets().join("tokenizer");
    let vocab_txt = std::fs::read_to_string(dir.join("vocab.txt")).unwrap();
    let lines: Vec<&str> = vocab_txt.lines().collect();
    assert_eq!(lines.len(), VOCAB);
    for (id, token) in lines.iter().enumerate() {
        assert_eq!(tokenizer().token_to_id(token), Some(id as u32), "{token}");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["do_lower_case"], true);
    let map: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("special_tokens_map.json")).unwrap(),
    )
    .unwrap();
    for (key, token) in [
        ("pad_token", "[PAD]"),
        ("unk_token", "[UNK]"),
        ("cls_token", "[CLS]"),
        ("sep_token", "[SEP]"),
        ("mask_token", "[MASK]"),
    ] {
        assert_eq!(map[key], token);
        assert_eq!(config[key], token);
        let id = tokenizer().token_to_id(token).unwrap().to_string();
        assert_eq!(config["added_tokens_decoder"][&id]["content"], token);
    }
}

#[test]
fn corpus_splits_hold_every_play_with_a_five_percent_tail() {
    let train = data::read_split(&data::default_corpus_dir(), Split::Train).unwrap();
    let valid = data::read_split(&data::default_corpus_dir(), Split::Valid).unwrap();
    assert_eq!(train.len(), 38);
    assert_eq!(valid.len(), 38);
    assert!(train[0].starts_with("A Midsummer Night's Dream\n\nACT I"));
    for doc in train.iter().chain(&valid) {
        assert!(!doc.contains(['*', '_', '#', '\\', '\x0c']), "markup left");
    }
    let chars = |d: &[String]| d.iter().map(|s| s.len()).sum::<usize>() as f64;
    let frac = chars(&valid) / (chars(&train) + chars(&valid));
    assert!((0.045..0.06).contains(&frac), "valid fraction {frac}");
    // The validation text is not training text: its longer lines (almost) never occur there.
    let train_lines: HashSet<&str> = train.iter().flat_map(|d| d.lines()).collect();
    let long: Vec<&str> = valid
        .iter()
        .flat_map(|d| d.lines())
        .filter(|l| l.len() > 40)
        .collect();
    assert!(long.len() > 3000, "{}", long.len());
    let leaked = long.iter().filter(|l| train_lines.contains(**l)).count();
    assert!(leaked * 50 < long.len(), "{leaked} of {} lines", long.len());

    let c = corpus();
    let tok_frac = c.valid.len() as f64 / (c.train.len() + c.valid.len()) as f64;
    assert!(c.train.len() > 1_000_000, "{}", c.train.len());
    assert!((0.04..0.065).contains(&tok_frac), "{tok_frac}");
    let unk = |s: &[u32]| s.iter().filter(|&&t| t == SpecialIds::SHIPPED.unk).count();
    assert!(unk(&c.train) + unk(&c.valid) < 100);
    assert!(
        c.train
            .iter()
            .chain(&c.valid)
            .all(|&t| (t as usize) < VOCAB && ![0, 2, 3, 4].contains(&t))
    );
}

#[test]
fn the_bible_corpus_holds_every_book_with_a_five_percent_tail_and_its_tokenizer_covers_it() {
    // assets/corpus-kjv (scripts/extract_kjv.py) and assets/tokenizer-kjv-2k, as their README
    // describes them: the numbers the regime preset was sized with.
    let dir = assets().join("corpus-kjv");
    let train = data::read_split(&dir, Split::Train).unwrap();
    let valid = data::read_split(&dir, Split::Valid).unwrap();
    assert_eq!((train.len(), valid.len()), (66, 66));
    assert!(train[0].starts_with("In the beginning God created the heaven and the earth.\n"));
    assert!(valid[65].ends_with("The grace of our Lord Jesus Christ be with you all. Amen."));
    let chars = |d: &[String]| d.iter().map(|s| s.chars().count()).sum::<usize>();
    assert_eq!((chars(&train), chars(&valid)), (3_927_106, 211_730));
    // No verse numbers left, no markup.
    let numbered = verse_references(&train);
    assert_eq!(numbered, 0, "lines that still start with a verse reference");
    let frac = chars(&valid) as f64 / (chars(&train) + chars(&valid)) as f64;
    assert!((0.045..0.06).contains(&frac), "valid fraction {frac}");

    let tok = data::load_tokenizer(&assets().join("tokenizer-kjv-2k/tokenizer.json")).unwrap();
    assert_eq!(tok.get_vocab_size(true), 2048);
    let c = data::load_corpus(&dir, &tok).unwrap();
    assert_eq!(c.train.len(), 1_017_088);
    let unk = SpecialIds::SHIPPED.unk;
    assert!(!c.train.iter().chain(&c.valid).any(|&t| t == unk));
}

#[test]
fn the_two_bibles_corpus_extends_the_king_james_one_and_holds_out_the_same_passages() {
    // assets/corpus-bibles (scripts/extract_bibles.py) and assets/tokenizer-bibles-2k, as their
    // README describes them.
    let dir = assets().join("corpus-bibles");
    let train = data::read_split(&dir, Split::Train).unwrap();
    let valid = data::read_split(&dir, Split::Valid).unwrap();
    assert_eq!((train.len(), valid.len()), (146, 146));
    // The King James books first, exactly as in corpus-kjv.
    let kjv = assets().join("corpus-kjv");
    assert!(train[..66] == data::read_split(&kjv, Split::Train).unwrap()[..]);
    assert!(valid[..66] == data::read_split(&kjv, Split::Valid).unwrap()[..]);
    // Then the World English Bible: the same canon, then the deuterocanonical books.
    assert!(train[66].starts_with("In the beginning, God created the heavens and the earth.\n"));
    assert!(train[132].starts_with("The book of the words of Tobit, the son of Tobiel"));
    assert!(
        valid[131].ends_with("The grace of the Lord Jesus Christ be with all the saints. Amen.")
    );
    // The same passages held out in both translations: Genesis from 48:8 on, and Romans'
    // doxology (printed by the module inside 14:23) at the held-out end, not in training.
    assert!(valid[0].starts_with("And Israel beheld Joseph's sons, and said, Who are these?\n"));
    assert!(valid[66].starts_with("Israel saw Joseph's sons, and said, \"Who are these?\"\n"));
    let doxology = "Now to him who is able to establish you";
    assert!(valid[110].lines().last().unwrap().starts_with(doxology));
    assert!(!train.iter().any(|d| d.contains(doxology)));
    let chars = |d: &[String]| d.iter().map(|s| s.chars().count()).sum::<usize>();
    assert_eq!((chars(&train), chars(&valid)), (8_492_940, 458_602));
    let frac = chars(&valid) as f64 / (chars(&train) + chars(&valid)) as f64;
    assert!((0.045..0.06).contains(&frac), "valid fraction {frac}");
    // No markup, footnote glossary, curly quotes or verse numbers left.
    for (name, docs) in [("train", &train), ("valid", &valid)] {
        let bad = docs
            .iter()
            .flat_map(|d| d.lines())
            .filter(|l| {
                l.contains([
                    '<', '>', '&', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}',
                ])
            })
            .count();
        assert_eq!(bad, 0, "{name}: lines with markup or curly quotes");
        assert_eq!(
            verse_references(docs),
            0,
            "{name}: lines with a verse reference"
        );
    }
    assert!(!valid.iter().any(|d| d.contains("Glossary")));

    let tok = data::load_tokenizer(&assets().join("tokenizer-bibles-2k/tokenizer.json")).unwrap();
    assert_eq!(tok.get_vocab_size(true), 2048);
    let c = data::load_corpus(&dir, &tok).unwrap();
    assert_eq!(c.train.len(), 2_252_840);
    let unk = SpecialIds::SHIPPED.unk;
    assert!(!c.train.iter().chain(&c.valid).any(|&t| t == unk));
}

/// Lines of `docs` that begin like `Ge1:1 ` (a reference the extraction should have dropped).
fn verse_references(docs: &[String]) -> usize {
    docs.iter()
        .flat_map(|d| d.lines())
        .filter(|l| {
            let head = l.split(' ').next().unwrap_or("");
            head.contains(':') && head.ends_with(|c: char| c.is_ascii_digit())
        })
        .count()
}

#[test]
fn corpus_and_tokenizer_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.txt.gz");
    let err = data::read_documents(&missing).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err}");
    assert!(err.to_string().contains("nope.txt.gz"));

    let plain = dir.path().join("plain.txt.gz");
    std::fs::write(&plain, "not gzip").unwrap();
    let err = data::read_documents(&plain).unwrap_err();
    assert!(
        matches!(&err, DataError::Io { path, .. } if path == &plain),
        "{err}"
    );

    let gz = |name: &str, bytes: &[u8]| -> PathBuf {
        let path = dir.path().join(name);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        path
    };
    let bad_utf8 = gz("bad.txt.gz", &[b'a', 0xff, 0xfe]);
    let err = data::read_documents(&bad_utf8).unwrap_err();
    assert!(matches!(err, DataError::Utf8 { .. }), "{err}");
    let empty = gz("empty.txt.gz", b"\n\x0c\n  \n");
    assert!(matches!(
        data::read_documents(&empty).unwrap_err(),
        DataError::EmptyCorpus { .. }
    ));
    let two = gz("two.txt.gz", b"first play\nline\n\x0c\nsecond play\n");
    assert_eq!(
        data::read_documents(&two).unwrap(),
        vec!["first play\nline".to_string(), "second play".to_string()]
    );

    let bad_json = dir.path().join("tokenizer.json");
    std::fs::write(&bad_json, "{").unwrap();
    let err = data::load_tokenizer(&bad_json).unwrap_err();
    assert!(matches!(err, DataError::Tokenizer { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"));

    // A tokenizer whose vocabulary lacks [MASK].
    let json = std::fs::read_to_string(assets().join(TOKENIZER_FILE)).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["added_tokens"].as_array_mut().unwrap().pop();
    v["model"]["vocab"]
        .as_object_mut()
        .unwrap()
        .remove("[MASK]");
    let no_mask = dir.path().join("no_mask.json");
    std::fs::write(&no_mask, v.to_string()).unwrap();
    let tok = data::load_tokenizer(&no_mask).unwrap();
    let err = SpecialIds::from_tokenizer(&tok, &no_mask).unwrap_err();
    assert!(
        matches!(&err, DataError::MissingSpecialToken { token, .. } if token == "[MASK]"),
        "{err}"
    );
    assert!(err.to_string().contains("no_mask.json"));
}

#[test]
fn packing_covers_the_stream_without_gaps() {
    for (len, chunk) in [(1000, 62), (124, 62), (61 + 62, 62), (5, 1)] {
        let p = Packing::new(len, chunk).unwrap();
        assert_eq!(p.n_chunks, len / chunk);
        let mut next = 0;
        for i in 0..p.n_chunks {
            let r = p.range(i);
            assert_eq!(r.start, next);
            assert_eq!(r.len(), chunk);
            next = r.end;
        }
        assert_eq!(next, p.covered());
        assert!(len - p.covered() < chunk);
    }
    assert!(Packing::new(61, 62).is_err());
    assert!(Packing::new(10, 0).is_err());
}

#[test]
fn epoch_order_is_a_fresh_permutation_each_epoch() {
    let n = 50;
    let mut order = EpochOrder::new(n, 7);
    let epochs: Vec<Vec<usize>> = (0..3)
        .map(|e| {
            (0..n as u64)
                .map(|k| order.item(e * n as u64 + k))
                .collect()
        })
        .collect();
    for perm in &epochs {
        let mut sorted = perm.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..n).collect::<Vec<_>>());
    }
    assert_ne!(epochs[0], epochs[1]);
    assert_ne!(epochs[1], epochs[2]);
    assert_ne!(epochs[0], (0..n).collect::<Vec<_>>());
    // Random access into an earlier epoch gives the same items.
    assert_eq!(order.item(3), epochs[0][3]);
    let mut other = EpochOrder::new(n, 8);
    let other_epoch: Vec<usize> = (0..n as u64).map(|k| other.item(k)).collect();
    assert_ne!(other_epoch, epochs[0], "another seed, another order");
}

#[test]
fn masking_rate_and_80_10_10_split_are_bert_s() {
    let cfg = MlmConfig::new(64, 32, VOCAB, 1234);
    let mut batcher = MlmBatcher::new(train_slice(200_000), cfg).unwrap();
    let special = SpecialIds::SHIPPED;
    let (mut masked, mut as_mask, mut random, mut kept, mut positions) = (0, 0, 0, 0, 0);
    let mut per_column = vec![0usize; cfg.seq_len];
    for _ in 0..200 {
        let b = batcher.next_batch();
        assert_eq!((b.batch_size, b.seq_len), (32, 64));
        assert_eq!(b.input_ids.len(), b.n_tokens());
        assert!(b.attention_mask.iter().all(|&m| m == 1));
        assert!(b.token_type_ids.iter().all(|&t| t == 0));
        let mut expected_masked = Vec::new();
        for r in 0..b.batch_size {
            let row = &b.input_ids[r * 64..(r + 1) * 64];
            assert_eq!(row[0], special.cls);
            assert_eq!(row[63], special.sep);
            let labels = &b.labels[r * 64..(r + 1) * 64];
            assert_eq!(labels[0], IGNORE_INDEX);
            assert_eq!(labels[63], IGNORE_INDEX);
            let n = labels.iter().filter(|&&l| l != IGNORE_INDEX).count();
            // 62 maskable tokens (the corpus holds no [UNK] here): round(0.15 * 62) = 9.
            assert_eq!(n, 9);
            for (c, &l) in labels.iter().enumerate() {
                if l == IGNORE_INDEX {
                    continue;
                }
                expected_masked.push(r * 64 + c);
                per_column[c] += 1;
                assert!(!special.contains(l as u32), "special token {l} predicted");
                masked += 1;
                let input = row[c];
                if input == special.mask {
                    as_mask += 1;
                } else if input == l as u32 {
                    kept += 1;
                } else {
                    assert!(!special.contains(input) && (input as usize) < VOCAB);
                    random += 1;
                }
            }
            positions += 62;
        }
        assert_eq!(b.masked, expected_masked);
        assert_eq!(
            b.masked_labels(),
            expected_masked
                .iter()
                .map(|&i| b.labels[i] as u32)
                .collect::<Vec<_>>()
        );
    }
    let rate = masked as f64 / positions as f64;
    assert!((rate - 9.0 / 62.0).abs() < 1e-12, "{rate}");
    // 57 600 predictions: one standard deviation of the 80% share is 0.0017, of 10% 0.0013.
    let share = |n: usize| n as f64 / masked as f64;
    assert!((share(as_mask) - 0.8).abs() < 0.01, "{}", share(as_mask));
    // A random draw equal to the original counts as kept (p = 1 / 8187).
    assert!((share(random) - 0.1).abs() < 0.008, "{}", share(random));
    assert!((share(kept) - 0.1).abs() < 0.008, "{}", share(kept));
    // Every maskable column is chosen about equally often (929 expected each).
    let expected = masked as f64 / 62.0;
    for (c, &n) in per_column.iter().enumerate().take(63).skip(1) {
        assert!(
            (n as f64 - expected).abs() < 0.2 * expected,
            "column {c}: {n}"
        );
    }
}

#[test]
fn every_sequence_gets_a_mask_and_special_tokens_are_never_masked() {
    // Bodies of 2 tokens: round(0.15 * 2) = 0, raised to 1.
    let (stream, vocab) = distinct_stream(400);
    let mut b = MlmBatcher::new(stream, MlmConfig::new(4, 16, vocab, 3)).unwrap();
    for _ in 0..20 {
        let batch = b.next_batch();
        assert_eq!(batch.masked.len(), 16);
        for (r, &m) in batch.masked.iter().enumerate() {
            assert_eq!(m / 4, r);
            assert!((1..3).contains(&(m % 4)));
        }
    }
    // [UNK] in the stream is never chosen; the other tokens are.
    let unk = SpecialIds::SHIPPED.unk;
    let stream: Vec<u32> = (0..620)
        .map(|i| if i % 2 == 0 { unk } else { 100 })
        .collect();
    let mut b = MlmBatcher::new(stream, MlmConfig::new(64, 4, 200, 9)).unwrap();
    for _ in 0..10 {
        let batch = b.next_batch();
        for &i in &batch.masked {
            assert_eq!(batch.labels[i], 100);
        }
        // 31 maskable tokens per row: round(4.65) = 5.
        assert_eq!(batch.masked.len(), 4 * 5);
    }
}

#[test]
fn same_seed_same_batches_different_seed_different() {
    let stream = train_slice(50_000);
    let cfg = MlmConfig::new(64, 8, VOCAB, 42);
    let run = |cfg: MlmConfig| {
        let mut b = MlmBatcher::new(stream.clone(), cfg).unwrap();
        (0..5).map(|_| b.next_batch()).collect::<Vec<_>>()
    };
    let a = run(cfg);
    assert_eq!(a, run(cfg));
    let other = run(MlmConfig { seed: 43, ..cfg });
    for (x, y) in a.iter().zip(&other) {
        assert_ne!(x.input_ids, y.input_ids);
        assert_ne!(x.masked, y.masked);
    }
    let mut b = MlmBatcher::new(stream.clone(), cfg).unwrap();
    assert_eq!(b.batch_at(3), a[3]);
    assert_eq!(b.step(), 0);
}

#[test]
fn resume_from_state_continues_exactly() {
    // 40 sequences, 6 per batch: batches straddle epoch boundaries.
    let (stream, vocab) = distinct_stream(40 * 14 + 5);
    let cfg = MlmConfig::new(16, 6, vocab, 11);
    let mut straight = MlmBatcher::new(stream.clone(), cfg).unwrap();
    let all: Vec<MlmBatch> = (0..25).map(|_| straight.next_batch()).collect();

    let mut first = MlmBatcher::new(stream.clone(), cfg).unwrap();
    for _ in 0..13 {
        first.next_batch();
    }
    let saved = serde_json::to_string(&first.state()).unwrap();
    let state: BatcherState = serde_json::from_str(&saved).unwrap();
    assert_eq!(state.step, 13);
    let mut resumed = MlmBatcher::resume(stream.clone(), cfg, &state).unwrap();
    for expected in &all[13..] {
        assert_eq!(&resumed.next_batch(), expected);
    }
    assert_eq!(resumed.state(), straight.state());
    let mut seeked = MlmBatcher::new(stream.clone(), cfg).unwrap();
    seeked.set_step(20);
    assert_eq!(seeked.next_batch(), all[20]);
    seeked.set_step(2);
    assert_eq!(seeked.next_batch(), all[2]);

    // A state from another seed, shape or stream is refused.
    let other_seed = MlmConfig { seed: 12, ..cfg };
    assert!(matches!(
        MlmBatcher::resume(stream.clone(), other_seed, &state),
        Err(DataError::Invalid(_))
    ));
    assert!(MlmBatcher::resume(stream[..300].to_vec(), cfg, &state).is_err());
}

#[test]
fn an_epoch_visits_every_sequence_once_with_fresh_masks_next_epoch() {
    let body = 14;
    let (stream, vocab) = distinct_stream(40 * body + 9);
    let cfg = MlmConfig::new(body + 2, 8, vocab, 5);
    let mut b = MlmBatcher::new(stream.clone(), cfg).unwrap();
    assert_eq!(b.sequences_per_epoch(), 40);
    assert_eq!(b.steps_per_epoch(), 5.0);
    assert_eq!(data::n_sequences(stream.len(), cfg.seq_len), 40);
    assert_eq!(data::tokens_per_epoch(stream.len(), cfg.seq_len), 40 * 16);

    let epoch = |b: &mut MlmBatcher| {
        let mut seen = Vec::new();
        for _ in 0..5 {
            let batch = b.next_batch();
            for (r, body_ids) in original_rows(&batch).into_iter().enumerate() {
                let chunk = (body_ids[0] as usize - 5) / body;
                assert_eq!(body_ids, stream[chunk * body..(chunk + 1) * body].to_vec());
                let masked: Vec<usize> = batch
                    .masked
                    .iter()
                    .filter(|&&i| i / cfg.seq_len == r)
                    .map(|&i| i % cfg.seq_len)
                    .collect();
                seen.push((chunk, masked));
            }
        }
        seen
    };
    let e0 = epoch(&mut b);
    assert!((b.epoch() - 1.0).abs() < 1e-12);
    let e1 = epoch(&mut b);
    for e in [&e0, &e1] {
        let chunks: HashSet<usize> = e.iter().map(|(c, _)| *c).collect();
        assert_eq!(chunks.len(), 40, "every sequence exactly once per epoch");
    }
    let order = |e: &[(usize, Vec<usize>)]| e.iter().map(|(c, _)| *c).collect::<Vec<_>>();
    assert_ne!(order(&e0), order(&e1));
    // Dynamic masking: the same sequence is masked differently in the next epoch.
    let mask_of =
        |e: &[(usize, Vec<usize>)], c: usize| e.iter().find(|x| x.0 == c).unwrap().1.clone();
    let changed = (0..40)
        .filter(|&c| mask_of(&e0, c) != mask_of(&e1, c))
        .count();
    assert!(changed > 30, "{changed}");
}

#[test]
fn eval_set_is_fixed_and_spread_over_the_validation_split() {
    let valid = &corpus().valid;
    let cfg = MlmConfig::new(64, 32, VOCAB, 0);
    let a = data::eval_batches(valid, &cfg, 100).unwrap();
    assert_eq!(a, data::eval_batches(valid, &cfg, 100).unwrap());
    assert_eq!(
        a.iter().map(|b| b.batch_size).collect::<Vec<_>>(),
        vec![32, 32, 32, 4]
    );
    let b = data::eval_batches(valid, &MlmConfig { seed: 1, ..cfg }, 100).unwrap();
    assert_ne!(a, b);
    // Rows are whole, distinct validation chunks, the last near the end of the split.
    let rows: Vec<Vec<u32>> = a.iter().flat_map(original_rows).collect();
    assert_eq!(rows.len(), 100);
    let distinct: HashSet<&Vec<u32>> = rows.iter().collect();
    assert_eq!(distinct.len(), 100);
    let n = data::n_sequences(valid.len(), 64);
    let last = 99 * n / 100;
    assert_eq!(rows[99], valid[last * 62..(last + 1) * 62].to_vec());
    assert!(last * 100 > 95 * n);
    for batch in &a {
        assert_eq!(batch.masked.len(), batch.batch_size * 9);
    }
    assert!(matches!(
        data::eval_batches(valid, &cfg, n + 1),
        Err(DataError::Invalid(_))
    ));
    assert!(data::eval_batches(valid, &cfg, 0).is_err());
}

#[test]
fn bad_batching_setups_are_refused() {
    let stream: Vec<u32> = vec![10; 100];
    let ok = MlmConfig::new(16, 4, 50, 0);
    assert!(MlmBatcher::new(stream.clone(), ok).is_ok());
    for cfg in [
        MlmConfig { seq_len: 2, ..ok },
        MlmConfig {
            batch_size: 0,
            ..ok
        },
        MlmConfig {
            mask_prob: 0.0,
            ..ok
        },
        MlmConfig {
            mask_prob: 1.0,
            ..ok
        },
        MlmConfig {
            vocab_size: 5,
            ..ok
        },
        MlmConfig { seq_len: 200, ..ok },
    ] {
        assert!(
            matches!(
                MlmBatcher::new(stream.clone(), cfg),
                Err(DataError::Invalid(_))
            ),
            "{cfg:?}"
        );
    }
    let mut bad = stream.clone();
    bad[57] = 50;
    let err = MlmBatcher::new(bad, ok).unwrap_err();
    assert!(err.to_string().contains("position 57"), "{err}");
}

#[test]
fn load_corpus_matches_tokenizing_each_split() {
    // load_corpus is read_split + tokenize_documents: check one split end to end on a
    // small piece, against the tokenizer's own whole-text encoding.
    let docs = data::read_split(&data::default_corpus_dir(), Split::Valid).unwrap();
    let piece = vec![docs[0].clone(), docs[1].clone()];
    let ids = data::tokenize_documents(tokenizer(), &piece, Path::new("valid")).unwrap();
    let whole = tokenizer()
        .encode(format!("{}\n{}", piece[0], piece[1]), false)
        .unwrap();
    assert_eq!(ids, whole.get_ids());
    let c = corpus();
    assert!(c.valid.starts_with(&ids));

    // Truncation or padding in a tokenizer.json does not cut or pad the corpus stream.
    let mut short = tokenizer().clone();
    short
        .with_truncation(Some(tokenizers::TruncationParams {
            max_length: 8,
            ..Default::default()
        }))
        .unwrap();
    short.with_padding(Some(tokenizers::PaddingParams::default()));
    assert_eq!(
        data::tokenize_documents(&short, &piece, Path::new("valid")).unwrap(),
        ids
    );
}
