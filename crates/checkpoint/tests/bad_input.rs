//! Bad input: every corruption gets its own typed error whose message names the file, the tensor
//! where one is involved, and the reason; failed writes leave nothing behind.
//!
//! Each case starts from a valid random model written by the crate and breaks one thing.

mod common;

use bert2bert_checkpoint::{CheckpointError, Model, ModelDir, WriteOptions, read_model_dir};
use common::*;
use serde_json::Value;

const WORD: &str = "bert.embeddings.word_embeddings.weight";
const FFN_IN: &str = "bert.encoder.layer.0.intermediate.dense.weight";

#[test]
fn missing_config_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let (err, msg) = read_err(&dir);
    let CheckpointError::MissingConfig { path } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(path, &dir.join("config.json"));
    assert_names(&msg, &["m/config.json", "missing config.json"]);
}

#[test]
fn malformed_config_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    std::fs::write(dir.join("config.json"), "{\"model_type\": \"bert\",,}").unwrap();
    let (err, msg) = read_err(&dir);
    assert!(matches!(&err, CheckpointError::Json { path, .. } if path.ends_with("config.json")));
    assert_names(&msg, &["m/config.json", "malformed JSON", "line 1"]);
}

#[test]
fn config_not_an_object() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    std::fs::write(dir.join("config.json"), "[1, 2]").unwrap();
    let (err, msg) = read_err(&dir);
    assert!(
        matches!(&err, CheckpointError::ConfigInvalid { .. }),
        "{err:?}"
    );
    assert_names(&msg, &["m/config.json", "not a JSON object"]);
}

#[test]
fn required_config_field_missing_or_mistyped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    edit_config(&dir, |c| {
        c.remove("hidden_size");
    });
    let (err, msg) = read_err(&dir);
    assert!(
        matches!(&err, CheckpointError::ConfigField { field, .. } if field == "hidden_size"),
        "{err:?}"
    );
    assert_names(&msg, &["m/config.json", "`hidden_size`", "missing"]);

    edit_config(&dir, |c| {
        c.insert("hidden_size".into(), Value::from("sixteen"));
    });
    let (err, msg) = read_err(&dir);
    assert!(matches!(&err, CheckpointError::ConfigField { field, .. } if field == "hidden_size"));
    assert_names(&msg, &["`hidden_size`", "a positive integer"]);
}

#[test]
fn model_type_missing_or_unsupported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    edit_config(&dir, |c| {
        c.insert("model_type".into(), Value::from("roberta"));
    });
    let (err, msg) = read_err(&dir);
    assert!(
        matches!(&err, CheckpointError::Unsupported { .. }),
        "{err:?}"
    );
    assert_names(
        &msg,
        &[
            "m/config.json",
            "model_type `roberta`",
            "supported: bert, gpt2",
        ],
    );

    edit_config(&dir, |c| {
        c.remove("model_type");
        c.remove("architectures");
    });
    let (err, msg) = read_err(&dir);
    assert!(matches!(&err, CheckpointError::ConfigField { field, .. } if field == "model_type"));
    assert_names(&msg, &["m/config.json", "`model_type`"]);
}

#[test]
fn unsupported_activation_and_position_embedding() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    edit_config(&dir, |c| {
        c.insert("hidden_act".into(), Value::from("swish"));
    });
    let (err, msg) = read_err(&dir);
    assert!(
        matches!(&err, CheckpointError::Unsupported { .. }),
        "{err:?}"
    );
    assert_names(&msg, &["m/config.json", "hidden_act `swish`"]);

    edit_config(&dir, |c| {
        c.insert("hidden_act".into(), Value::from("gelu"));
        c.insert(
            "position_embedding_type".into(),
            Value::from("relative_key"),
        );
    });
    let (err, msg) = read_err(&dir);
    assert!(
        matches!(&err, CheckpointError::Unsupported { .. }),
        "{err:?}"
    );
    assert_names(&msg, &["position_embedding_type `relative_key`"]);
}

#[test]
fn hidden_size_not_divisible_by_heads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    edit_config(&dir, |c| {
        c.insert("num_attention_heads".into(), Value::from(3));
    });
    let (err, msg) = read_err(&dir);
    assert!(
        matches!(&err, CheckpointError::ConfigInvalid { .. }),
        "{err:?}"
    );
    assert_names(
        &msg,
        &[
            "m/config.json",
            "hidden_size 16 is not divisible by num_attention_heads 3",
        ],
    );
}

#[test]
fn missing_weights_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    std::fs::remove_file(weights(&dir)).unwrap();
    std::fs::write(dir.join("pytorch_model.bin"), b"not read").unwrap();
    let (err, msg) = read_err(&dir);
    assert!(matches!(&err, CheckpointError::MissingWeights { path } if path == &dir));
    assert_names(&msg, &["no model.safetensors", "convert .bin"]);
}

#[test]
fn file_shorter_than_its_length_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    std::fs::write(weights(&dir), [1u8, 2, 3]).unwrap();
    let (err, msg) = read_err(&dir);
    assert!(
        matches!(
            &err,
            CheckpointError::Truncated {
                len: 3,
                needed: 8,
                ..
            }
        ),
        "{err:?}"
    );
    assert_names(
        &msg,
        &["m/model.safetensors", "truncated", "8-byte header length"],
    );
}

#[test]
fn file_shorter_than_its_header_length() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let bytes = std::fs::read(weights(&dir)).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    std::fs::write(weights(&dir), &bytes[..8 + n as usize / 2]).unwrap();
    let (err, msg) = read_err(&dir);
    let CheckpointError::Truncated { path, needed, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!((path, *needed), (&weights(&dir), 8 + n));
    assert_names(
        &msg,
        &[
            "m/model.safetensors",
            "truncated",
            &format!("{n}-byte header"),
        ],
    );
}

#[test]
fn header_length_absurd() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let mut bytes = std::fs::read(weights(&dir)).unwrap();
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(weights(&dir), &bytes).unwrap();
    let (err, msg) = read_err(&dir);
    assert!(matches!(&err, CheckpointError::Header { .. }), "{err:?}");
    assert_names(&msg, &["m/model.safetensors", "exceeds"]);
}

#[test]
fn header_not_valid_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let mut bytes = std::fs::read(weights(&dir)).unwrap();
    // Break the JSON without changing its length: the closing brace becomes a comma.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let close = 8 + bytes[8..8 + n].iter().rposition(|&b| b == b'}').unwrap();
    bytes[close] = b',';
    std::fs::write(weights(&dir), &bytes).unwrap();
    let (err, msg) = read_err(&dir);
    assert!(matches!(&err, CheckpointError::Header { path, .. } if path == &weights(&dir)));
    assert_names(&msg, &["m/model.safetensors", "header is not valid JSON"]);
}

#[test]
fn header_entry_malformed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let mut st = RawSt::read(&weights(&dir));
    st.entry(WORD).insert("shape".into(), Value::from("50x16"));
    st.write(&weights(&dir));
    let (err, msg) = read_err(&dir);
    assert!(
        matches!(&err, CheckpointError::Tensor { tensor, .. } if tensor == WORD),
        "{err:?}"
    );
    assert_names(&msg, &["m/model.safetensors", WORD, "no array `shape`"]);
}

#[test]
fn tensor_offsets_outside_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let mut st = RawSt::read(&weights(&dir));
    let (b, e) = st.offsets(WORD);
    let len = st.data.len();
    st.entry(WORD)
        .insert("data_offsets".into(), serde_json::json!([b + len, e + len]));
    st.write(&weights(&dir));
    let (err, msg) = read_err(&dir);
    assert!(
        matches!(&err, CheckpointError::Tensor { tensor, .. } if tensor == WORD),
        "{err:?}"
    );
    assert_names(
        &msg,
        &["m/model.safetensors", WORD, "outside the data section"],
    );
}

#[test]
fn data_section_cut_short() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let mut st = RawSt::read(&weights(&dir));
    let last = st
        .names()
        .into_iter()
        .max_by_key(|n| st.offsets(n).1)
        .unwrap();
    st.data.truncate(st.data.len() - 4);
    st.write(&weights(&dir));
    let (err, msg) = read_err(&dir);
    assert!(
        matches!(&err, CheckpointError::Tensor { tensor, .. } if *tensor == last),
        "{err:?}"
    );
    assert_names(&msg, &["m/model.safetensors", &last, "file truncated?"]);
}

#[test]
fn tensor_offsets_wrong_size_or_backwards() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let mut st = RawSt::read(&weights(&dir));
    let (b, e) = st.offsets(WORD);
    st.entry(WORD)
        .insert("data_offsets".into(), serde_json::json!([b, e - 4]));
    st.write(&weights(&dir));
    let (err, msg) = read_err(&dir);
    assert!(matches!(&err, CheckpointError::Tensor { tensor, .. } if tensor == WORD));
    assert_names(
        &msg,
        &[WORD, &format!("hold {} bytes", e - 4 - b), "needs 3200"],
    );

    st.entry(WORD)
        .insert("data_offsets".into(), serde_json::json!([e, b]));
    st.write(&weights(&dir));
    let (_, msg) = read_err(&dir);
    assert_names(&msg, &[WORD, "run backwards"]);
}

#[test]
fn tensor_offsets_overlapping() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let mut st = RawSt::read(&weights(&dir));
    // Two tensors of the same size; the second is made to point into the first's bytes.
    let a = "bert.embeddings.LayerNorm.weight";
    let b = "bert.embeddings.LayerNorm.bias";
    let (ab, ae) = st.offsets(a);
    st.entry(b)
        .insert("data_offsets".into(), serde_json::json!([ab, ae]));
    st.write(&weights(&dir));
    let (err, msg) = read_err(&dir);
    assert!(matches!(&err, CheckpointError::Tensor { .. }), "{err:?}");
    assert_names(&msg, &["m/model.safetensors", a, b, "overlap"]);
}

#[test]
fn unknown_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let mut st = RawSt::read(&weights(&dir));
    st.entry(FFN_IN).insert("dtype".into(), Value::from("F4"));
    st.write(&weights(&dir));
    let (err, msg) = read_err(&dir);
    assert!(matches!(&err, CheckpointError::Tensor { tensor, .. } if tensor == FFN_IN));
    assert_names(&msg, &["m/model.safetensors", FFN_IN, "unknown dtype `F4`"]);
}

#[test]
fn weight_of_integer_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let mut st = RawSt::read(&weights(&dir));
    // Same byte count, so the header is valid; the loader refuses integers as weights.
    st.entry(FFN_IN).insert("dtype".into(), Value::from("I32"));
    st.write(&weights(&dir));
    let (err, msg) = read_err(&dir);
    assert!(matches!(&err, CheckpointError::Tensor { tensor, .. } if tensor == FFN_IN));
    assert_names(&msg, &[FFN_IN, "dtype I32 is not a float type"]);
}

#[test]
fn tensor_shape_contradicts_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    edit_config(&dir, |c| {
        c.insert("intermediate_size".into(), Value::from(48));
    });
    let (err, msg) = read_err(&dir);
    let CheckpointError::Shape {
        path,
        tensor,
        found,
        expected,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(path, &weights(&dir));
    assert_eq!(tensor, FFN_IN);
    assert_eq!(
        (found.as_slice(), expected.as_slice()),
        (&[32, 16][..], &[48, 16][..])
    );
    assert_names(
        &msg,
        &["m/model.safetensors", FFN_IN, "[32, 16]", "[48, 16]"],
    );
}

#[test]
fn required_tensor_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let mut st = RawSt::read(&weights(&dir));
    let gone = "bert.encoder.layer.1.attention.self.key.bias";
    st.remove(gone);
    st.write(&weights(&dir));
    let (err, msg) = read_err(&dir);
    assert!(
        matches!(&err, CheckpointError::MissingTensor { tensor, path } if tensor == gone && path == &weights(&dir)),
        "{err:?}"
    );
    assert_names(&msg, &["m/model.safetensors", gone, "required tensor"]);
}

#[test]
fn untied_config_without_decoder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    edit_config(&dir, |c| {
        c.insert("tie_word_embeddings".into(), Value::from(false));
    });
    let (err, msg) = read_err(&dir);
    assert!(
        matches!(&err, CheckpointError::MissingTensor { tensor, .. } if tensor == "cls.predictions.decoder.weight")
    );
    assert_names(&msg, &["cls.predictions.decoder.weight"]);
}

#[test]
fn nan_or_inf_in_a_weight() {
    for (bad, shown) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf")] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = valid_bert_dir(tmp.path(), "m");
        let mut st = RawSt::read(&weights(&dir));
        let t = "bert.encoder.layer.1.output.dense.weight";
        st.bytes_mut(t)[4 * 7..4 * 8].copy_from_slice(&bad.to_le_bytes());
        st.bytes_mut(t)[4 * 9..4 * 10].copy_from_slice(&bad.to_le_bytes());
        st.write(&weights(&dir));
        let (err, msg) = read_err(&dir);
        let CheckpointError::NonFinite {
            tensor,
            count,
            index,
            ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!((tensor.as_str(), *count, *index), (t, 2, 7));
        assert_names(&msg, &["m/model.safetensors", t, "2 non-finite", shown]);
    }
}

#[test]
fn nan_in_an_f16_weight() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    write_model(
        &Model::Bert(small_bert(2)),
        &dir,
        bert2bert_checkpoint::Dtype::F16,
    );
    let mut st = RawSt::read(&weights(&dir));
    st.bytes_mut(WORD)[0..2].copy_from_slice(&half::f16::NAN.to_le_bytes());
    st.write(&weights(&dir));
    let (err, msg) = read_err(&dir);
    assert!(matches!(&err, CheckpointError::NonFinite { tensor, index: 0, .. } if tensor == WORD));
    assert_names(&msg, &[WORD]);
}

#[test]
fn unexpected_extra_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let mut st = RawSt::read(&weights(&dir));
    let extra = "bert.encoder.layer.0.attention.self.rotary.weight";
    st.add(extra, "F32", &[4], &[0u8; 16]);
    st.write(&weights(&dir));
    let (err, msg) = read_err(&dir);
    assert!(
        matches!(&err, CheckpointError::UnexpectedTensor { tensor, family: "BERT", .. } if tensor == extra),
        "{err:?}"
    );
    assert_names(
        &msg,
        &[
            "m/model.safetensors",
            extra,
            "not part of a BERT checkpoint",
        ],
    );
}

#[test]
fn shard_index_pointing_at_a_missing_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let [_, second] = shard_folder(&dir);
    std::fs::remove_file(dir.join(&second)).unwrap();
    let (err, msg) = read_err(&dir);
    let CheckpointError::MissingShard {
        path,
        shard,
        tensor,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(path, &dir.join("model.safetensors.index.json"));
    assert_eq!(shard, &second);
    assert_names(
        &msg,
        &[
            "m/model.safetensors.index.json",
            &second,
            tensor,
            "does not exist",
        ],
    );
}

#[test]
fn shard_index_malformed_or_lying() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let [first, second] = shard_folder(&dir);
    let index = dir.join("model.safetensors.index.json");
    let good = std::fs::read_to_string(&index).unwrap();

    std::fs::write(&index, "{\"weight_map\": ").unwrap();
    let (err, msg) = read_err(&dir);
    assert!(matches!(&err, CheckpointError::Json { path, .. } if path == &index));
    assert_names(&msg, &["model.safetensors.index.json", "malformed JSON"]);

    std::fs::write(&index, "{\"metadata\": {}}").unwrap();
    let (err, msg) = read_err(&dir);
    assert!(matches!(&err, CheckpointError::ConfigField { field, .. } if field == "weight_map"));
    assert_names(&msg, &["model.safetensors.index.json", "`weight_map`"]);

    // The index places the word embeddings in the shard that does not hold them.
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    let held = v["weight_map"][WORD].as_str().unwrap().to_owned();
    let wrong = if held == first { &second } else { &first };
    v["weight_map"][WORD] = Value::from(wrong.as_str());
    std::fs::write(&index, v.to_string()).unwrap();
    let (err, msg) = read_err(&dir);
    assert!(matches!(&err, CheckpointError::MissingTensor { tensor, .. } if tensor == WORD));
    assert_names(&msg, &[wrong.as_str(), WORD]);

    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["weight_map"][WORD] = Value::from("../elsewhere.safetensors");
    std::fs::write(&index, v.to_string()).unwrap();
    let (err, msg) = read_err(&dir);
    assert!(
        matches!(&err, CheckpointError::ConfigInvalid { .. }),
        "{err:?}"
    );
    assert_names(
        &msg,
        &[
            "model.safetensors.index.json",
            "not a plain file name",
            WORD,
        ],
    );
}

#[test]
fn tensor_stored_in_two_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let [first, second] = shard_folder(&dir);
    // Copy one tensor of the first shard into the second as well.
    let a = RawSt::read(&dir.join(&first));
    let name = a.names()[0].clone();
    let e = a.header[&name].clone();
    let mut b = RawSt::read(&dir.join(&second));
    let shape: Vec<usize> = serde_json::from_value(e["shape"].clone()).unwrap();
    b.add(&name, e["dtype"].as_str().unwrap(), &shape, a.bytes(&name));
    b.write(&dir.join(&second));
    let (err, msg) = read_err(&dir);
    assert!(matches!(&err, CheckpointError::Tensor { tensor, .. } if *tensor == name));
    assert_names(&msg, &[&name, "also stored in", &first]);
}

#[test]
fn existing_folder_without_overwrite_is_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let md = ModelDir::new(
        tmp.path().into(),
        Model::Bert(small_bert(3)),
        bert2bert_checkpoint::Dtype::F32,
        vec![],
    );
    let err = md.write(&out, &WriteOptions::default()).unwrap_err();
    assert!(matches!(&err, CheckpointError::OutputExists { path } if path == &out));
    assert!(
        err.to_string()
            .contains("out: output folder already exists")
    );
    assert_eq!(listing(&out), ["keep.txt"]);
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );
    assert_eq!(listing(tmp.path()), ["out"], "no temporary left behind");
}

#[test]
fn failed_write_leaves_no_partial_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");

    // A model whose shapes contradict its config.
    let mut b = small_bert(4);
    b.config.intermediate_size = 40;
    let md = ModelDir::new(
        tmp.path().into(),
        Model::Bert(b),
        bert2bert_checkpoint::Dtype::F32,
        vec![],
    );
    let err = md.write(&out, &WriteOptions::default()).unwrap_err();
    let CheckpointError::NotWritten { path, source } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(path, &out);
    assert!(matches!(**source, CheckpointError::InvalidModel(_)));
    assert_names(
        &err.to_string(),
        &[
            "out: not written",
            "bert.encoder.layer.0.intermediate.dense.weight",
            "[32, 16]",
            "[40, 16]",
        ],
    );
    assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));

    // A NaN weight at write time, deep in the tensor list.
    let mut b = small_bert(4);
    b.layers[1].output.weight[[3, 5]] = f32::NAN;
    let md = ModelDir::new(
        tmp.path().into(),
        Model::Bert(b),
        bert2bert_checkpoint::Dtype::F32,
        vec![],
    );
    let err = md.write(&out, &WriteOptions::default()).unwrap_err();
    let t = "bert.encoder.layer.1.output.dense.weight";
    assert!(
        matches!(&err, CheckpointError::NonFinite { tensor, path, .. } if tensor == t && path == &out.join("model.safetensors"))
    );
    assert_names(&err.to_string(), &["out/model.safetensors", t, "NaN"]);
    assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));

    // A file to carry through that vanished: fails mid-write, after the weights.
    let md = ModelDir::new(
        tmp.path().into(),
        Model::Bert(small_bert(4)),
        bert2bert_checkpoint::Dtype::F32,
        vec!["tokenizer.json".into()],
    );
    let err = md.write(&out, &WriteOptions::default()).unwrap_err();
    assert!(matches!(&err, CheckpointError::Io { path, .. } if path.ends_with("tokenizer.json")));
    assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));
}

#[test]
fn failed_overwrite_keeps_the_old_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = valid_bert_dir(tmp.path(), "out");
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let mut b = small_bert(5);
    b.embeddings.word[[0, 0]] = f32::INFINITY;
    let md = ModelDir::new(
        tmp.path().into(),
        Model::Bert(b),
        bert2bert_checkpoint::Dtype::F32,
        vec![],
    );
    let opts = WriteOptions {
        overwrite: true,
        ..Default::default()
    };
    let err = md.write(&out, &opts).unwrap_err();
    assert!(matches!(&err, CheckpointError::NonFinite { tensor, .. } if tensor == WORD));
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before
    );
    assert_eq!(listing(tmp.path()), ["out"]);
}

#[test]
fn overwrite_replaces_the_folder_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let out = valid_bert_dir(tmp.path(), "out");
    std::fs::write(out.join("stale.txt"), "from the old model").unwrap();
    let new = Model::Bert(small_bert(6));
    let md = ModelDir::new(
        tmp.path().into(),
        new.clone(),
        bert2bert_checkpoint::Dtype::F32,
        vec![],
    );
    let opts = WriteOptions {
        overwrite: true,
        ..Default::default()
    };
    md.write(&out, &opts).unwrap();
    assert_eq!(
        listing(&out),
        ["config.json", "model.safetensors"],
        "stale file gone"
    );
    let read = read_model_dir(&out).unwrap();
    assert_eq!(read.model.named_tensors(), new.named_tensors());
    assert_eq!(
        listing(tmp.path()),
        ["out"],
        "no temporary or old copy left behind"
    );
}

#[test]
fn empty_tensor_with_huge_dims_is_refused_not_a_panic() {
    // No bytes, so the byte count checks out, but the dims multiply past isize::MAX: ndarray
    // cannot represent the shape. Found by review of the fuzz target; fixed in the parser.
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let mut st = RawSt::read(&weights(&dir));
    let big = 1usize << 62;
    st.add("bert.embeddings.position_ids", "F32", &[0, big, big], &[]);
    st.write(&weights(&dir));
    let store = bert2bert_checkpoint::safetensors::TensorStore::open_dir(&dir)
        .map(|s| s.read_f32("bert.embeddings.position_ids").map(|_| ()));
    let err = match store {
        Ok(Ok(())) => panic!("a shape ndarray cannot hold was accepted"),
        Ok(Err(e)) | Err(e) => e,
    };
    assert!(
        matches!(&err, CheckpointError::Tensor { tensor, .. } if tensor == "bert.embeddings.position_ids"),
        "{err:?}"
    );
    assert_names(
        &err.to_string(),
        &["m/model.safetensors", "position_ids", "overflows"],
    );
}
