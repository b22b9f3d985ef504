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
        let d = load_data(family, tmp.path(), &tok_dir, 8192, 2, 16, 3, 5).unwrap();
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
        assert!(load_data(family, tmp.path(), &tok_dir, 100, 2, 16, 3, 5).is_err());
    }
}
