//! Name variants and layouts found in real checkpoints load to the same typed model, and what is
//! written back is what transformers expects.

mod common;

use bert2bert_checkpoint::random::{Heads, Init};
use bert2bert_checkpoint::safetensors::TensorStore;
use bert2bert_checkpoint::{Bert, BertConfig, Dtype, Model, WriteOptions, read_model_dir};
use common::*;
use serde_json::Value;
use std::path::PathBuf;

const WORD: &str = "bert.embeddings.word_embeddings.weight";
const DECODER: &str = "cls.predictions.decoder.weight";

fn bert(m: &Model) -> &Bert {
    m.as_bert().expect("a BERT")
}

#[test]
fn sharded_checkpoint_reads_back_equal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let single = read_model_dir(&dir).unwrap();
    let shards = shard_folder(&dir);
    assert!(!weights(&dir).exists());
    let sharded = read_model_dir(&dir).unwrap();
    assert_eq!(sharded.model, single.model);
    // Every tensor really came from one of the two shards, and both were used.
    let store = TensorStore::open_dir(&dir).unwrap();
    for s in &shards {
        assert!(
            store
                .names()
                .any(|n| store.file_of(n) == Some(&dir.join(s)))
        );
    }
    assert!(
        sharded.other_files.is_empty(),
        "shards are not carried through"
    );
    // Written back as one file, identical to the single-file original.
    let out = tmp.path().join("out");
    sharded.write(&out, &WriteOptions::default()).unwrap();
    let again = tmp.path().join("again");
    single.write(&again, &WriteOptions::default()).unwrap();
    assert_eq!(
        std::fs::read(weights(&out)).unwrap(),
        std::fs::read(weights(&again)).unwrap()
    );
}

#[test]
fn old_gamma_beta_layer_norm_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let modern = read_model_dir(&dir).unwrap();
    let mut st = RawSt::read(&weights(&dir));
    let mut renamed = 0;
    for name in st.names() {
        if let Some(p) = name.strip_suffix("LayerNorm.weight") {
            st.rename(&name, &format!("{p}LayerNorm.gamma"));
            renamed += 1;
        } else if let Some(p) = name.strip_suffix("LayerNorm.bias") {
            st.rename(&name, &format!("{p}LayerNorm.beta"));
            renamed += 1;
        }
    }
    assert_eq!(
        renamed,
        2 * (1 + 2 * 2 + 1),
        "embeddings, 2 per layer, MLM transform"
    );
    st.write(&weights(&dir));
    let old = read_model_dir(&dir).unwrap();
    assert_eq!(old.model, modern.model);
    assert!(old.dropped.is_empty());
    // Written back under today's names.
    let out = tmp.path().join("out");
    old.write(&out, &WriteOptions::default()).unwrap();
    let names = RawSt::read(&weights(&out)).names();
    assert!(
        names
            .iter()
            .all(|n| !n.ends_with(".gamma") && !n.ends_with(".beta"))
    );
    assert!(names.contains(&"bert.embeddings.LayerNorm.weight".to_owned()));
}

#[test]
fn bert_model_without_prefix_or_heads() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = BertConfig::new(40, 8, 1, 2, 16, 12);
    for heads in [
        Heads {
            mlm: false,
            pooler: false,
            nsp: false,
        },
        Heads {
            mlm: false,
            pooler: true,
            nsp: false,
        },
    ] {
        let b = Bert::random(&cfg, heads, Init::TEST, 9);
        assert!(!b.prefixed);
        let dir = tmp.path().join(format!("pooler-{}", heads.pooler));
        write_model(&Model::Bert(b.clone()), &dir, Dtype::F32);
        let names = RawSt::read(&weights(&dir)).names();
        assert!(names.contains(&"embeddings.word_embeddings.weight".to_owned()));
        assert!(
            names
                .iter()
                .all(|n| !n.starts_with("bert.") && !n.starts_with("cls."))
        );
        assert_eq!(
            names.contains(&"pooler.dense.weight".to_owned()),
            heads.pooler
        );
        let read = read_model_dir(&dir).unwrap();
        let rb = bert(&read.model);
        assert!(!rb.prefixed && rb.mlm.is_none() && rb.nsp.is_none());
        assert_eq!(rb.pooler.is_some(), heads.pooler);
        assert_eq!(read.model.named_tensors(), Model::Bert(b).named_tensors());
    }
}

#[test]
fn explicit_decoder_equal_to_embeddings_is_dropped_as_tied() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let plain = read_model_dir(&dir).unwrap();
    let mut st = RawSt::read(&weights(&dir));
    let word = st.bytes(WORD).to_vec();
    st.add(DECODER, "F32", &[50, 16], &word);
    st.write(&weights(&dir));
    let read = read_model_dir(&dir).unwrap();
    assert_eq!(read.model, plain.model);
    assert_eq!(read.dropped.len(), 1);
    assert_eq!(read.dropped[0].name, DECODER);
    assert!(
        read.dropped[0].reason.contains("tied"),
        "{:?}",
        read.dropped
    );
    let out = tmp.path().join("out");
    read.write(&out, &WriteOptions::default()).unwrap();
    assert!(
        !RawSt::read(&weights(&out))
            .names()
            .contains(&DECODER.to_owned())
    );
}

#[test]
fn untied_decoder_is_kept_and_written_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    edit_config(&dir, |c| {
        c.insert("tie_word_embeddings".into(), Value::from(false));
    });
    let mut st = RawSt::read(&weights(&dir));
    // A decoder (V, D) different from the embeddings: the embeddings scaled by 2.
    let dec: Vec<u8> = st
        .bytes(WORD)
        .chunks_exact(4)
        .flat_map(|c| (2.0 * f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes())
        .collect();
    st.add(DECODER, "F32", &[50, 16], &dec);
    st.write(&weights(&dir));
    let read = read_model_dir(&dir).unwrap();
    assert!(read.dropped.is_empty());
    let b = bert(&read.model);
    assert!(!b.config.tie_word_embeddings);
    let d = b.mlm.as_ref().unwrap().decoder.as_ref().expect("kept");
    assert_eq!(d.shape(), [16, 50], "held (in, out)");
    assert_eq!(d.t(), b.embeddings.word.mapv(|x| 2.0 * x));

    let out = tmp.path().join("out");
    read.write(&out, &WriteOptions::default()).unwrap();
    let back = RawSt::read(&weights(&out));
    assert_eq!(
        back.bytes(DECODER),
        dec.as_slice(),
        "stored (V, D) as before"
    );
    assert_eq!(read_config(&out)["tie_word_embeddings"], false);
    assert_eq!(read_model_dir(&out).unwrap().model, read.model);

    // Untied but equal today: still kept, since the config says they are separate weights.
    let mut st = RawSt::read(&weights(&dir));
    let word = st.bytes(WORD).to_vec();
    st.bytes_mut(DECODER).copy_from_slice(&word);
    st.write(&weights(&dir));
    let read = read_model_dir(&dir).unwrap();
    assert!(read.dropped.is_empty());
    assert!(bert(&read.model).mlm.as_ref().unwrap().decoder.is_some());
}

#[test]
fn decoder_differing_from_embeddings_under_a_tying_config_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let mut st = RawSt::read(&weights(&dir));
    st.add(DECODER, "F32", &[50, 16], &vec![0u8; 50 * 16 * 4]);
    st.write(&weights(&dir));
    let read = read_model_dir(&dir).unwrap();
    assert_eq!(read.dropped[0].name, DECODER);
    assert!(read.dropped[0].reason.contains("ignores the stored copy"));
    assert!(bert(&read.model).mlm.as_ref().unwrap().decoder.is_none());
}

#[test]
fn typed_config_changes_reach_config_json() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = small_bert(2);
    b.config.tie_word_embeddings = false;
    b.config.hidden_act = bert2bert_checkpoint::Activation::Relu;
    b.mlm.as_mut().unwrap().decoder = Some(b.embeddings.word.t().to_owned());
    let dir = tmp.path().join("m");
    write_model(&Model::Bert(b.clone()), &dir, Dtype::F32);
    let cfg = read_config(&dir);
    assert_eq!(cfg["tie_word_embeddings"], false);
    assert_eq!(cfg["hidden_act"], "relu");
    let read = read_model_dir(&dir).unwrap();
    assert_eq!(read.model.named_tensors(), Model::Bert(b).named_tensors());
    // A spelling variant of the same activation is kept as written.
    edit_config(&dir, |c| {
        c.insert("hidden_act".into(), Value::from("gelu_pytorch_tanh"));
    });
    let read = read_model_dir(&dir).unwrap();
    let out = tmp.path().join("out");
    read.write(&out, &WriteOptions::default()).unwrap();
    assert_eq!(read_config(&out)["hidden_act"], "gelu_pytorch_tanh");
}

#[test]
fn position_ids_buffer_is_dropped_on_purpose() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let plain = read_model_dir(&dir).unwrap();
    let mut st = RawSt::read(&weights(&dir));
    let ids: Vec<u8> = (0..20i64).flat_map(i64::to_le_bytes).collect();
    st.add("bert.embeddings.position_ids", "I64", &[1, 20], &ids);
    st.write(&weights(&dir));
    let read = read_model_dir(&dir).unwrap();
    assert_eq!(read.model, plain.model);
    assert_eq!(read.dropped.len(), 1);
    assert_eq!(read.dropped[0].name, "bert.embeddings.position_ids");
    assert!(read.dropped[0].reason.contains("buffer"));
    assert_eq!(
        read.dtype,
        Dtype::F32,
        "integer buffers do not decide the dtype"
    );
}

#[test]
fn half_precision_sources_keep_their_dtype_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let model = Model::Bert(small_bert(3));
    for src in [Dtype::F16, Dtype::BF16] {
        let dir = tmp.path().join(format!("src-{src}"));
        write_model(&model, &dir, src);
        let read = read_model_dir(&dir).unwrap();
        assert_eq!(read.dtype, src);
        let same = tmp.path().join(format!("same-{src}"));
        read.write(&same, &WriteOptions::default()).unwrap();
        let st = RawSt::read(&weights(&same));
        assert!(
            st.names()
                .iter()
                .all(|n| st.header[n]["dtype"] == src.name())
        );
        assert_eq!(
            std::fs::read(weights(&same)).unwrap(),
            std::fs::read(weights(&dir)).unwrap(),
            "{src}: the same bytes"
        );
        assert_eq!(read_config(&same)["torch_dtype"], src.torch_name().unwrap());

        let wide = tmp.path().join(format!("f32-from-{src}"));
        let opts = WriteOptions {
            dtype: Some(Dtype::F32),
            ..Default::default()
        };
        read.write(&wide, &opts).unwrap();
        let st = RawSt::read(&weights(&wide));
        assert!(st.names().iter().all(|n| st.header[n]["dtype"] == "F32"));
        assert_eq!(read_config(&wide)["torch_dtype"], "float32");
        let back = read_model_dir(&wide).unwrap();
        assert_eq!(back.dtype, Dtype::F32);
        assert_eq!(
            back.model.named_tensors(),
            read.model.named_tensors(),
            "{src} -> f32 is exact"
        );
        // And narrowing back gives the source bytes again.
        let narrow = tmp.path().join(format!("back-{src}"));
        let opts = WriteOptions {
            dtype: Some(src),
            ..Default::default()
        };
        back.write(&narrow, &opts).unwrap();
        assert_eq!(
            std::fs::read(weights(&narrow)).unwrap(),
            std::fs::read(weights(&dir)).unwrap()
        );
    }
}

#[test]
fn other_files_are_copied_through() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let files = [
        ("tokenizer.json", "{\"version\": \"1.0\"}"),
        ("vocab.txt", "[PAD]\n[UNK]\nhello\n"),
        (
            "1_Pooling/config.json",
            "{\"pooling_mode_mean_tokens\": true}",
        ),
        ("README.md", "# a model\n"),
    ];
    for (rel, text) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    // Not carried: hidden files and weights in other formats, which the new folder replaces.
    std::fs::write(dir.join(".gitattributes"), "*.bin filter=lfs").unwrap();
    std::fs::write(dir.join("pytorch_model.bin"), "old weights").unwrap();
    let read = read_model_dir(&dir).unwrap();
    let mut expect: Vec<PathBuf> = files.iter().map(|(r, _)| PathBuf::from(r)).collect();
    expect.sort();
    assert_eq!(read.other_files, expect);
    let out = tmp.path().join("out");
    read.write(&out, &WriteOptions::default()).unwrap();
    for (rel, text) in files {
        assert_eq!(
            std::fs::read_to_string(out.join(rel)).unwrap(),
            text,
            "{rel}"
        );
    }
    assert_eq!(
        listing(&out),
        [
            "1_Pooling",
            "README.md",
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "vocab.txt"
        ]
    );
}

#[test]
fn hf_bert_tiny_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("hf-bert-tiny");
    let a = read_model_dir(&src).unwrap();
    assert!(a.dropped.is_empty(), "{:?}", a.dropped);
    let out = tmp.path().join("out");
    a.write(&out, &WriteOptions::default()).unwrap();
    let b = read_model_dir(&out).unwrap();
    assert_eq!(a.model, b.model);
    assert_eq!(a.dtype, b.dtype);
    // Tensor by tensor, the stored bytes are those of the transformers-written file.
    let (s, o) = (RawSt::read(&weights(&src)), RawSt::read(&weights(&out)));
    let (mut sn, mut on) = (s.names(), o.names());
    sn.sort();
    on.sort();
    assert_eq!(sn, on);
    for n in &sn {
        assert_eq!(s.header[n]["dtype"], o.header[n]["dtype"], "{n}");
        assert_eq!(s.header[n]["shape"], o.header[n]["shape"], "{n}");
        assert_eq!(s.bytes(n), o.bytes(n), "{n}");
    }
}

#[test]
fn memory_estimates_match_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let store = TensorStore::open_dir(&dir).unwrap();
    let m = read_model_dir(&dir).unwrap();
    assert_eq!(store.total_f32_bytes(), 4 * m.model.num_parameters());
    assert_eq!(
        store.largest_f32_bytes(),
        4 * 50 * 16,
        "the word embeddings"
    );
}

/// Loads all-MiniLM-L6-v2 (a sentence-transformers `BertModel`) from the folder named by
/// `BERT2BERT_MINILM_DIR`, and checks the round trip is bit-exact. Skipped without it, except
/// under CI, where it fails.
#[test]
fn minilm_round_trips_bit_exactly() {
    let Some(src) = real_checkpoint("BERT2BERT_MINILM_DIR") else {
        return;
    };
    let a = read_model_dir(&src).unwrap();
    let b = bert(&a.model);
    let c = &b.config;
    assert_eq!(
        (
            c.vocab_size,
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads
        ),
        (30522, 384, 6, 12)
    );
    assert_eq!(c.intermediate_size, 1536);
    assert!(!b.prefixed && b.pooler.is_some() && b.mlm.is_none() && b.nsp.is_none());
    assert_eq!(a.dtype, Dtype::F32);
    let dropped: Vec<&str> = a.dropped.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(dropped, ["embeddings.position_ids"]);
    assert!(
        a.other_files
            .contains(&PathBuf::from("1_Pooling/config.json"))
    );
    assert!(a.other_files.contains(&PathBuf::from("tokenizer.json")));

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    a.write(&out, &WriteOptions::default()).unwrap();
    let (s, o) = (RawSt::read(&weights(&src)), RawSt::read(&weights(&out)));
    let mut sn: Vec<String> = s
        .names()
        .into_iter()
        .filter(|n| !dropped.contains(&n.as_str()))
        .collect();
    let mut on = o.names();
    sn.sort();
    on.sort();
    assert_eq!(sn, on);
    for n in &sn {
        assert_eq!(s.header[n]["shape"], o.header[n]["shape"], "{n}");
        assert_eq!(s.bytes(n), o.bytes(n), "{n}: bytes differ");
    }
    for f in &a.other_files {
        assert_eq!(
            std::fs::read(src.join(f)).unwrap(),
            std::fs::read(out.join(f)).unwrap(),
            "{}",
            f.display()
        );
    }
    let again = read_model_dir(&out).unwrap();
    assert_eq!(again.model.named_tensors(), a.model.named_tensors());
}

#[test]
fn a_missing_real_checkpoint_skips_locally_and_fails_under_ci() {
    let var = "BERT2BERT_MINILM_DIR";
    let ci = |v: &str| Some(std::ffi::OsString::from(v));
    assert_eq!(real_checkpoint_from(var, None, None), Ok(None));
    for off in ["", "0", "false"] {
        assert_eq!(
            real_checkpoint_from(var, None, ci(off)),
            Ok(None),
            "CI={off}"
        );
    }
    for on in ["1", "true"] {
        let err = real_checkpoint_from(var, None, ci(on)).unwrap_err();
        assert!(err.contains(var) && err.contains("CI"), "{err}");
        assert!(
            real_checkpoint_from(var, ci(""), ci(on)).is_err(),
            "an empty path is none"
        );
    }
    assert_eq!(
        real_checkpoint_from(var, ci("/m"), ci("1")),
        Ok(Some(PathBuf::from("/m")))
    );
}
