//! `Streams` and `load_data`: the corpus tokenized for either family, its batches and held-out
//! set, and the vocabulary check, on a small corpus written here with the bundled tokenizers.

use bert2bert_checkpoint::Family;
use bert2bert_train::data::{self, DataError, Split, default_assets_dir};
use bert2bert_train::trainer::Batch;
use bert2bert_train::{Streams, default_tokenizer_dir, load_data};
use std::io::Write;
use std::path::Path;

/// A corpus folder of a few short plays (the tokenizers stay the bundled ones).
fn small_corpus(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let words = [
        "the", "king", "queen", "speaks", "of", "love", "and", "war", "my", "lord", "good",
        "night", "sweet", "prince",
    ];
    for (split, docs) in [(Split::Train, 6), (Split::Valid, 2)] {
        let mut text = String::new();
        for d in 0..docs {
            for i in 0..300 {
                text += words[(i * 7 + d * 3 + i / 5) % words.len()];
                text += if i % 11 == 10 { ".\n" } else { " " };
            }
            text += "\n\x0c\n";
        }
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(text.as_bytes()).unwrap();
        std::fs::write(dir.join(split.file()), enc.finish().unwrap()).unwrap();
    }
}

#[test]
fn streams_give_each_family_its_objective() {
    let tmp = tempfile::tempdir().unwrap();
    small_corpus(tmp.path());
    let bundled = default_assets_dir();
    for family in [Family::Bert, Family::Gpt2] {
        let tok_dir = default_tokenizer_dir(&bundled, family);
        let s = Streams::load(family, tmp.path(), &tok_dir).unwrap();
        assert_eq!(s.vocab(), 8192, "{family:?}");
        assert!(s.train_tokens() > 1000, "{family:?}: {}", s.train_tokens());
        let tok = data::load_tokenizer(&tok_dir.join("tokenizer.json")).unwrap();
        let expected = match family {
            Family::Bert => data::load_corpus(tmp.path(), &tok).unwrap().train.len(),
            Family::Gpt2 => data::causal::load_causal_split(tmp.path(), &tok, Split::Train)
                .unwrap()
                .len(),
        };
        assert_eq!(s.train_tokens(), expected);
        // 14 words (and a few separators): the entropy lies well below ln 8192.
        let h = s.unigram_entropy();
        assert!(h > 1.5 && h < 4.5, "{family:?}: {h}");

        let (mut b, spe) = s.batcher(s.vocab(), 2, 16, 3).unwrap();
        assert!(spe > 1.0);
        let first = b.next_batch().unwrap();
        assert_eq!(first.dims(), (2, 16));
        assert!(matches!(
            (&first, family),
            (Batch::Mlm(_), Family::Bert) | (Batch::Causal(_), Family::Gpt2)
        ));
        // The same seed draws the same stream; the held-out set ignores the seed.
        let (mut again, _) = s.batcher(s.vocab(), 2, 16, 3).unwrap();
        assert_eq!(again.next_batch().unwrap(), first);
        let eval = s.eval(s.vocab(), 16, 5).unwrap();
        assert_eq!(eval.iter().map(|b| b.dims().0).sum::<usize>(), 5);
        assert_eq!(eval, s.eval(s.vocab(), 16, 5).unwrap());

        // load_data: the same pieces, for a model of the tokenizer's vocabulary.
        let d = load_data(family, tmp.path(), &tok_dir, 8192, 2, 16, 3, 5, 0.15).unwrap();
        assert_eq!(d.eval, eval);
        assert_eq!(d.steps_per_epoch, spe);
        let mut batcher = d.batcher;
        assert_eq!(batcher.next_batch().unwrap(), first);

        // A model with a smaller vocabulary than the tokenizer is refused, naming the file.
        s.check_fits(8192).unwrap();
        let err = s.check_fits(100).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::VocabTooLarge {
                    tokens: 8192,
                    vocab_size: 100,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
        assert!(load_data(family, tmp.path(), &tok_dir, 100, 2, 16, 3, 5, 0.15).is_err());
    }
}

#[test]
fn the_mask_fraction_sets_how_many_tokens_a_bert_batch_predicts() {
    let tmp = tempfile::tempdir().unwrap();
    small_corpus(tmp.path());
    let tok_dir = default_tokenizer_dir(&default_assets_dir(), Family::Bert);
    let masked = |p: f64| {
        let s = Streams::load(Family::Bert, tmp.path(), &tok_dir)
            .unwrap()
            .with_mask_prob(p);
        assert_eq!(s.mask_prob(), p);
        let (mut b, _) = s.batcher(s.vocab(), 4, 64, 3).unwrap();
        let count = |b: &Batch| match b {
            Batch::Mlm(m) => m.masked.len(),
            Batch::Causal(_) => panic!("a BERT stream gave next-token batches"),
        };
        let train = count(&b.next_batch().unwrap());
        let eval: usize = s.eval(s.vocab(), 64, 8).unwrap().iter().map(count).sum();
        (train, eval)
    };
    // 62 maskable tokens a sequence: round(0.15 * 62) = 9, round(0.4 * 62) = 25.
    assert_eq!(masked(0.15), (4 * 9, 8 * 9));
    assert_eq!(masked(0.4), (4 * 25, 8 * 25));
    // The default is BERT's.
    let s = Streams::load(Family::Bert, tmp.path(), &tok_dir).unwrap();
    assert_eq!(s.mask_prob(), 0.15);
    // Out of (0, 1) is refused when the batches are made.
    let s = s.with_mask_prob(1.0);
    match s.batcher(s.vocab(), 4, 64, 3) {
        Err(DataError::Invalid(why)) => assert!(why.contains("mask_prob 1"), "{why}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("mask_prob 1 was accepted"),
    }
}
