//! The causal-LM batcher: coverage, determinism, resume, the fixed evaluation set.

use bert2bert_train::data::causal::{
    self, CausalBatcher, CausalConfig, END_OF_TEXT, END_OF_TEXT_ID, causal_eval_batches,
};
use bert2bert_train::data::{self, Split};

/// The repository's `assets/`, from the run-time `CARGO_MANIFEST_DIR` that cargo sets for tests
/// (a shared target dir may hold a library built from another checkout, whose compile-time
/// path is gone), falling back to the compile-time one.
fn assets_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(|d| std::path::PathBuf::from(d).join("../../assets"))
        .unwrap_or_else(bert2bert_train::data::default_assets_dir)
}

/// A stream whose token at position p is p % vocab, so a window's position is readable.
fn stream(len: usize, vocab: usize) -> Vec<u32> {
    (0..len).map(|p| (p % vocab) as u32).collect()
}

fn cfg(seq_len: usize, batch_size: usize, seed: u64) -> CausalConfig {
    CausalConfig {
        seq_len,
        batch_size,
        vocab_size: 100_000,
        seed,
    }
}

#[test]
fn one_epoch_predicts_every_next_token_pair_once() {
    // 1001 tokens, windows of 10 + 1: 100 windows cover targets 1..=1000, nothing dropped.
    let s = stream(1001, 100_000);
    let mut b = CausalBatcher::new(s.clone(), cfg(10, 4, 7)).unwrap();
    assert_eq!(b.sequences_per_epoch(), 100);
    let mut hits = vec![0u32; s.len()];
    for _ in 0..25 {
        let batch = b.next_batch();
        assert_eq!(batch.input_ids.len(), 40);
        for (x, y) in batch.input_ids.iter().zip(&batch.targets) {
            // Target is the token right after the input in the stream.
            assert_eq!(*y, *x + 1);
            hits[*y as usize] += 1;
        }
    }
    assert_eq!(hits[0], 0, "position 0 is never a target");
    assert!(hits[1..].iter().all(|&h| h == 1), "gap or double: {hits:?}");
    // The order is shuffled, not the stream order.
    let mut b = CausalBatcher::new(s, cfg(10, 4, 7)).unwrap();
    let first: Vec<usize> = (0..100).map(|k| b.window_at_slot(k)).collect();
    assert_ne!(first, (0..100).collect::<Vec<_>>());
    // The next epoch is a different permutation of the same windows.
    let second: Vec<usize> = (100..200).map(|k| b.window_at_slot(k)).collect();
    assert_ne!(first, second);
    let mut sorted = second.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());
}

#[test]
fn a_short_tail_is_dropped_and_too_short_streams_are_errors() {
    // 1005 tokens: still 100 windows (targets up to 1000); 4 tail tokens unused.
    let b = CausalBatcher::new(stream(1005, 100_000), cfg(10, 4, 7)).unwrap();
    assert_eq!(b.sequences_per_epoch(), 100);
    assert_eq!(b.window(99), 990..1001);
    assert!(CausalBatcher::new(stream(10, 100_000), cfg(10, 4, 7)).is_err());
    assert!(CausalBatcher::new(stream(11, 100_000), cfg(10, 4, 7)).is_ok());
    assert!(CausalBatcher::new(stream(11, 100_000), cfg(0, 4, 7)).is_err());
    assert!(CausalBatcher::new(stream(11, 100_000), cfg(10, 0, 7)).is_err());
    // An id outside the vocabulary is named.
    let err = CausalBatcher::new(
        stream(50, 20),
        CausalConfig {
            vocab_size: 10,
            ..cfg(4, 2, 1)
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("position 10"), "{err}");
}

#[test]
fn batches_are_a_pure_function_of_seed_and_step() {
    let s = stream(5000, 1000);
    let mut a = CausalBatcher::new(s.clone(), cfg(16, 3, 42)).unwrap();
    let mut b = CausalBatcher::new(s.clone(), cfg(16, 3, 42)).unwrap();
    let mut c = CausalBatcher::new(s.clone(), cfg(16, 3, 43)).unwrap();
    let mut differs = false;
    for step in 0..300 {
        let x = a.next_batch();
        assert_eq!(x, b.next_batch());
        differs |= x != c.next_batch();
        // Random access (any order, across epochs) gives the same batch.
        assert_eq!(x, b.batch_at(step));
    }
    assert!(differs, "another seed gives another order");
    assert_eq!(a.step(), 300);
}

#[test]
fn resume_continues_exactly() {
    let s = stream(3000, 1000);
    let mut a = CausalBatcher::new(s.clone(), cfg(8, 5, 9)).unwrap();
    for _ in 0..123 {
        a.next_batch();
    }
    let state = a.state();
    let json = serde_json::to_string(&state).unwrap();
    let mut r = CausalBatcher::resume(
        s.clone(),
        cfg(8, 5, 9),
        &serde_json::from_str(&json).unwrap(),
    )
    .unwrap();
    for _ in 0..200 {
        assert_eq!(a.next_batch(), r.next_batch());
    }
    // A state from another seed or stream is refused.
    assert!(CausalBatcher::resume(s.clone(), cfg(8, 5, 10), &state).is_err());
    assert!(CausalBatcher::resume(stream(2000, 1000), cfg(8, 5, 9), &state).is_err());
}

#[test]
fn eval_set_is_fixed_and_spread() {
    let s = stream(2001, 100_000);
    let c = cfg(20, 4, 1);
    let e = causal_eval_batches(&s, &c, 10).unwrap();
    assert_eq!(e.len(), 3);
    assert_eq!(e[2].batch_size, 2);
    // Window i * 100 / 10: starts at 0, 200, ..., 1800.
    let starts: Vec<u32> = e
        .iter()
        .flat_map(|b| b.input_ids.chunks(20).map(|r| r[0]).collect::<Vec<_>>())
        .collect();
    assert_eq!(starts, (0..10).map(|i| i * 200).collect::<Vec<u32>>());
    // Seed-independent and repeatable.
    assert_eq!(e, causal_eval_batches(&s, &cfg(20, 4, 99), 10).unwrap());
    assert!(causal_eval_batches(&s, &c, 101).is_err());
    assert!(causal_eval_batches(&s, &c, 0).is_err());
}

#[test]
fn corpus_stream_separates_documents_with_end_of_text() {
    let assets = assets_dir();
    let path = assets.join(causal::BPE_TOKENIZER_FILE);
    let t = data::load_tokenizer(&path).unwrap();
    assert_eq!(t.token_to_id(END_OF_TEXT), Some(END_OF_TEXT_ID));
    let corpus = data::default_corpus_dir();
    let docs = data::read_split(&corpus, Split::Valid).unwrap();
    let s = causal::load_causal_split(&corpus, &t, Split::Valid).unwrap();
    let eot: Vec<usize> = (0..s.len()).filter(|&i| s[i] == END_OF_TEXT_ID).collect();
    assert_eq!(eot.len(), docs.len());
    assert_eq!(*eot.last().unwrap(), s.len() - 1);
    // The first document decodes back to its text exactly.
    assert_eq!(t.decode(&s[..eot[0]], false).unwrap(), docs[0]);
    // The WordPiece tokenizer has no <|endoftext|>: a clear error, not a silent id.
    let wp = data::load_tokenizer(&assets.join(data::TOKENIZER_FILE)).unwrap();
    let err = causal::causal_stream(&wp, &docs, &path).unwrap_err();
    assert!(err.to_string().contains(END_OF_TEXT), "{err}");
}
