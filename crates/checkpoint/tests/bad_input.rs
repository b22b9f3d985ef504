//! Bad input: every corruption gets its own typed error whose message names the file, the tensor
//! where one is involved, and the reason; failed writes leave nothing behind; temporaries of
//! killed writers are cleaned up by the next write.
//!
//! Each read case starts from a valid random model written by the crate and breaks one thing.

mod common;

use bert2bert_checkpoint::{AtomicDir, CheckpointError, Dtype, Model, ModelDir, WriteOptions};
use bert2bert_checkpoint::{Bert, read_model_dir};
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

const WORD: &str = "bert.embeddings.word_embeddings.weight";
const FFN_IN: &str = "bert.encoder.layer.0.intermediate.dense.weight";
const INDEX: &str = "model.safetensors.index.json";

/// Sets the data offsets of tensor `name` in `dir/model.safetensors`.
fn set_offsets(dir: &Path, name: &str, b: usize, e: usize) {
    edit_weights(dir, |st| {
        st.entry(name)
            .insert("data_offsets".into(), serde_json::json!([b, e]));
    });
}

/// Shards `dir` and edits the `weight_map` entry of the word embeddings with `f` (given the index
/// and the two shard names).
fn edit_index(dir: &Path, f: impl FnOnce(&mut Value, &[String; 2])) {
    let shards = shard_folder(dir);
    let index = dir.join(INDEX);
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    f(&mut v, &shards);
    std::fs::write(&index, v.to_string()).unwrap();
}

/// Every read-side case of the error catalogue (docs/checkpoint.md) on a BERT folder.
fn bert_cases() -> Vec<BadCase> {
    vec![
        BadCase {
            name: "missing config.json",
            breaks: |dir| {
                std::fs::remove_file(dir.join("config.json")).unwrap();
                vec![]
            },
            is: |e, dir, _| matches!(e, CheckpointError::MissingConfig { path } if path == &dir.join("config.json")),
            names: &["m/config.json", "missing config.json"],
        },
        BadCase {
            name: "malformed config.json",
            breaks: |dir| {
                std::fs::write(dir.join("config.json"), "{\"model_type\": \"bert\",,}").unwrap();
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::Json { path, .. } if path.ends_with("config.json")),
            names: &["m/config.json", "malformed JSON", "line 1"],
        },
        BadCase {
            name: "config not an object",
            breaks: |dir| {
                std::fs::write(dir.join("config.json"), "[1, 2]").unwrap();
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::ConfigInvalid { .. }),
            names: &["m/config.json", "not a JSON object"],
        },
        BadCase {
            name: "required field missing",
            breaks: |dir| {
                edit_config(dir, |c| {
                    c.remove("hidden_size");
                });
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::ConfigField { field, .. } if field == "hidden_size"),
            names: &["m/config.json", "`hidden_size`", "missing"],
        },
        BadCase {
            name: "required field mistyped",
            breaks: |dir| {
                set(dir, "hidden_size", Value::from("sixteen"));
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::ConfigField { field, .. } if field == "hidden_size"),
            names: &["`hidden_size`", "a positive integer"],
        },
        BadCase {
            name: "unsupported model_type",
            breaks: |dir| {
                set(dir, "model_type", Value::from("roberta"));
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::Unsupported { .. }),
            names: &[
                "m/config.json",
                "model_type `roberta`",
                "supported: bert, gpt2",
            ],
        },
        BadCase {
            name: "no model_type nor architectures",
            breaks: |dir| {
                edit_config(dir, |c| {
                    c.remove("model_type");
                    c.remove("architectures");
                });
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::ConfigField { field, .. } if field == "model_type"),
            names: &["m/config.json", "`model_type`"],
        },
        BadCase {
            name: "unsupported activation",
            breaks: |dir| {
                set(dir, "hidden_act", Value::from("swish"));
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::Unsupported { .. }),
            names: &["m/config.json", "hidden_act `swish`"],
        },
        BadCase {
            name: "unsupported position embedding",
            breaks: |dir| {
                set(dir, "position_embedding_type", Value::from("relative_key"));
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::Unsupported { .. }),
            names: &["position_embedding_type `relative_key`"],
        },
        BadCase {
            name: "hidden size not divisible by heads",
            breaks: |dir| {
                set(dir, "num_attention_heads", Value::from(3));
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::ConfigInvalid { .. }),
            names: &[
                "m/config.json",
                "hidden_size 16 is not divisible by num_attention_heads 3",
            ],
        },
        BadCase {
            name: "config claims a billion layers over two (issue 11: once an abort)",
            breaks: |dir| {
                set(dir, "num_hidden_layers", Value::from(1_000_000_000u64));
                vec![]
            },
            is: |e, dir, _| {
                matches!(e, CheckpointError::LayerCount { path, field: "num_hidden_layers", claimed: 1_000_000_000, weights: w, .. }
                    if path == &dir.join("config.json") && w == &weights(dir))
            },
            names: &[
                "m/config.json",
                "`num_hidden_layers` is 1000000000",
                "m/model.safetensors holds 2 layer(s) (bert.encoder.layer.0 to bert.encoder.layer.1)",
            ],
        },
        BadCase {
            name: "config claims fewer layers than stored",
            breaks: |dir| {
                set(dir, "num_hidden_layers", Value::from(1));
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::LayerCount { claimed: 1, .. }),
            names: &[
                "m/config.json",
                "`num_hidden_layers` is 1",
                "holds 2 layer(s)",
            ],
        },
        BadCase {
            name: "sharded set with a config claiming a billion layers",
            breaks: |dir| {
                shard_folder(dir);
                set(dir, "num_hidden_layers", Value::from(1_000_000_000u64));
                vec![]
            },
            is: |e, dir, _| matches!(e, CheckpointError::LayerCount { weights, .. } if weights == &dir.join(INDEX)),
            names: &["m/config.json", "`num_hidden_layers` is 1000000000", INDEX],
        },
        BadCase {
            name: "missing weights file",
            breaks: |dir| {
                std::fs::remove_file(weights(dir)).unwrap();
                std::fs::write(dir.join("pytorch_model.bin"), b"not read").unwrap();
                vec![]
            },
            is: |e, dir, _| matches!(e, CheckpointError::MissingWeights { path } if path == dir),
            names: &["no model.safetensors", "convert .bin"],
        },
        BadCase {
            name: "file shorter than its length prefix",
            breaks: |dir| {
                std::fs::write(weights(dir), [1u8, 2, 3]).unwrap();
                vec![]
            },
            is: |e, _, _| {
                matches!(
                    e,
                    CheckpointError::Truncated {
                        len: 3,
                        needed: 8,
                        ..
                    }
                )
            },
            names: &["m/model.safetensors", "truncated", "8-byte header length"],
        },
        BadCase {
            name: "file shorter than its header length",
            breaks: |dir| {
                let bytes = std::fs::read(weights(dir)).unwrap();
                let n = header_len(&weights(dir));
                std::fs::write(weights(dir), &bytes[..8 + n as usize / 2]).unwrap();
                vec![format!("{n}-byte header")]
            },
            is: |e, dir, _| {
                matches!(e, CheckpointError::Truncated { path, needed, .. }
                    if path == &weights(dir) && *needed == 8 + header_len(&weights(dir)))
            },
            names: &["m/model.safetensors", "truncated"],
        },
        BadCase {
            name: "header length absurd",
            breaks: |dir| {
                let mut bytes = std::fs::read(weights(dir)).unwrap();
                bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                std::fs::write(weights(dir), &bytes).unwrap();
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::Header { .. }),
            names: &["m/model.safetensors", "exceeds"],
        },
        BadCase {
            name: "header not valid JSON",
            breaks: |dir| {
                let mut bytes = std::fs::read(weights(dir)).unwrap();
                // Break the JSON without changing its length: the closing brace becomes a comma.
                let n = header_len(&weights(dir)) as usize;
                let close = 8 + bytes[8..8 + n].iter().rposition(|&b| b == b'}').unwrap();
                bytes[close] = b',';
                std::fs::write(weights(dir), &bytes).unwrap();
                vec![]
            },
            is: |e, dir, _| matches!(e, CheckpointError::Header { path, .. } if path == &weights(dir)),
            names: &["m/model.safetensors", "header is not valid JSON"],
        },
        BadCase {
            name: "header entry malformed",
            breaks: |dir| {
                edit_weights(dir, |st| {
                    st.entry(WORD).insert("shape".into(), Value::from("50x16"));
                });
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::Tensor { tensor, .. } if tensor == WORD),
            names: &["m/model.safetensors", WORD, "no array `shape`"],
        },
        BadCase {
            name: "tensor offsets outside the data",
            breaks: |dir| {
                let st = RawSt::read(&weights(dir));
                let ((b, e), len) = (st.offsets(WORD), st.data.len());
                set_offsets(dir, WORD, b + len, e + len);
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::Tensor { tensor, .. } if tensor == WORD),
            names: &["m/model.safetensors", WORD, "outside the data section"],
        },
        BadCase {
            name: "data section cut short",
            breaks: |dir| {
                let mut st = RawSt::read(&weights(dir));
                let last = st
                    .names()
                    .into_iter()
                    .max_by_key(|n| st.offsets(n).1)
                    .unwrap();
                st.data.truncate(st.data.len() - 4);
                st.write(&weights(dir));
                vec![last]
            },
            is: |e, _, found| matches!(e, CheckpointError::Tensor { tensor, .. } if *tensor == found[0]),
            names: &["m/model.safetensors", "file truncated?"],
        },
        BadCase {
            name: "tensor offsets of the wrong size",
            breaks: |dir| {
                let (b, e) = RawSt::read(&weights(dir)).offsets(WORD);
                set_offsets(dir, WORD, b, e - 4);
                vec![format!("hold {} bytes", e - 4 - b)]
            },
            is: |e, _, _| matches!(e, CheckpointError::Tensor { tensor, .. } if tensor == WORD),
            names: &[WORD, "needs 3200"],
        },
        BadCase {
            name: "tensor offsets backwards",
            breaks: |dir| {
                let (b, e) = RawSt::read(&weights(dir)).offsets(WORD);
                set_offsets(dir, WORD, e, b);
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::Tensor { tensor, .. } if tensor == WORD),
            names: &[WORD, "run backwards"],
        },
        BadCase {
            name: "tensor offsets overlapping",
            breaks: |dir| {
                // Two tensors of the same size; the second is made to point into the first's bytes.
                let (b, e) = RawSt::read(&weights(dir)).offsets("bert.embeddings.LayerNorm.weight");
                set_offsets(dir, "bert.embeddings.LayerNorm.bias", b, e);
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::Tensor { .. }),
            names: &[
                "m/model.safetensors",
                "bert.embeddings.LayerNorm.weight",
                "bert.embeddings.LayerNorm.bias",
                "overlap",
            ],
        },
        BadCase {
            name: "unknown dtype",
            breaks: |dir| {
                edit_weights(dir, |st| {
                    st.entry(FFN_IN).insert("dtype".into(), Value::from("F4"));
                });
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::Tensor { tensor, .. } if tensor == FFN_IN),
            names: &["m/model.safetensors", FFN_IN, "unknown dtype `F4`"],
        },
        BadCase {
            name: "weight of an integer dtype",
            breaks: |dir| {
                // Same byte count, so the header is valid; the loader refuses integers as weights.
                edit_weights(dir, |st| {
                    st.entry(FFN_IN).insert("dtype".into(), Value::from("I32"));
                });
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::Tensor { tensor, .. } if tensor == FFN_IN),
            names: &[FFN_IN, "dtype I32 is not a float type"],
        },
        BadCase {
            name: "tensor shape contradicts config",
            breaks: |dir| {
                set(dir, "intermediate_size", Value::from(48));
                vec![]
            },
            is: |e, dir, _| {
                matches!(e, CheckpointError::Shape { path, tensor, found, expected }
                    if path == &weights(dir) && tensor == FFN_IN
                        && found == &[32, 16] && expected == &[48, 16])
            },
            names: &["m/model.safetensors", FFN_IN, "[32, 16]", "[48, 16]"],
        },
        BadCase {
            name: "required tensor missing",
            breaks: |dir| {
                edit_weights(dir, |st| {
                    st.remove("bert.encoder.layer.1.attention.self.key.bias")
                });
                vec![]
            },
            is: |e, dir, _| {
                matches!(e, CheckpointError::MissingTensor { tensor, path }
                    if tensor == "bert.encoder.layer.1.attention.self.key.bias" && path == &weights(dir))
            },
            names: &[
                "m/model.safetensors",
                "bert.encoder.layer.1.attention.self.key.bias",
                "required tensor",
            ],
        },
        BadCase {
            name: "untied config without a decoder",
            breaks: |dir| {
                set(dir, "tie_word_embeddings", Value::from(false));
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::MissingTensor { tensor, .. } if tensor == "cls.predictions.decoder.weight"),
            names: &["cls.predictions.decoder.weight"],
        },
        BadCase {
            name: "NaN in a weight",
            breaks: |dir| poison(dir, f32::NAN),
            is: is_two_bad_values,
            names: &["m/model.safetensors", POISONED, "2 non-finite", "NaN"],
        },
        BadCase {
            name: "infinity in a weight",
            breaks: |dir| poison(dir, f32::INFINITY),
            is: is_two_bad_values,
            names: &["m/model.safetensors", POISONED, "2 non-finite", "inf"],
        },
        BadCase {
            name: "NaN in an F16 weight",
            breaks: |dir| {
                std::fs::remove_dir_all(dir).unwrap();
                write_model(&Model::Bert(small_bert(2)), dir, Dtype::F16);
                edit_weights(dir, |st| {
                    st.bytes_mut(WORD)[0..2].copy_from_slice(&half::f16::NAN.to_le_bytes());
                });
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::NonFinite { tensor, index: 0, .. } if tensor == WORD),
            names: &[WORD],
        },
        BadCase {
            name: "unexpected extra tensor",
            breaks: |dir| {
                edit_weights(dir, |st| st.add(EXTRA, "F32", &[4], &[0u8; 16]));
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::UnexpectedTensor { tensor, family: "BERT", .. } if tensor == EXTRA),
            names: &[
                "m/model.safetensors",
                EXTRA,
                "not part of a BERT checkpoint",
            ],
        },
        BadCase {
            name: "shard index pointing at a missing shard",
            breaks: |dir| {
                let [_, second] = shard_folder(dir);
                std::fs::remove_file(dir.join(&second)).unwrap();
                vec![second]
            },
            is: |e, dir, found| {
                matches!(e, CheckpointError::MissingShard { path, shard, tensor }
                    if path == &dir.join(INDEX) && *shard == found[0] && e.to_string().contains(tensor.as_str()))
            },
            names: &["m/model.safetensors.index.json", "does not exist"],
        },
        BadCase {
            name: "shard index not JSON",
            breaks: |dir| {
                shard_folder(dir);
                std::fs::write(dir.join(INDEX), "{\"weight_map\": ").unwrap();
                vec![]
            },
            is: |e, dir, _| matches!(e, CheckpointError::Json { path, .. } if path == &dir.join(INDEX)),
            names: &[INDEX, "malformed JSON"],
        },
        BadCase {
            name: "shard index without weight_map",
            breaks: |dir| {
                shard_folder(dir);
                std::fs::write(dir.join(INDEX), "{\"metadata\": {}}").unwrap();
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::ConfigField { field, .. } if field == "weight_map"),
            names: &[INDEX, "`weight_map`"],
        },
        BadCase {
            name: "shard index placing a tensor in the wrong shard",
            breaks: |dir| {
                let mut wrong = String::new();
                edit_index(dir, |v, [first, second]| {
                    let held = v["weight_map"][WORD].as_str().unwrap();
                    wrong = if held == first.as_str() {
                        second
                    } else {
                        first
                    }
                    .clone();
                    v["weight_map"][WORD] = Value::from(wrong.as_str());
                });
                vec![wrong]
            },
            is: |e, _, _| matches!(e, CheckpointError::MissingTensor { tensor, .. } if tensor == WORD),
            names: &[WORD],
        },
        BadCase {
            name: "shard name that is not a plain file name",
            breaks: |dir| {
                edit_index(dir, |v, _| {
                    v["weight_map"][WORD] = Value::from("../elsewhere.safetensors");
                });
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::ConfigInvalid { .. }),
            names: &[INDEX, "not a plain file name", WORD],
        },
        BadCase {
            name: "tensor stored in two shards",
            breaks: |dir| {
                let [first, second] = shard_folder(dir);
                // Copy one tensor of the first shard into the second as well.
                let a = RawSt::read(&dir.join(&first));
                let name = a.names()[0].clone();
                let e = a.header[&name].clone();
                let mut b = RawSt::read(&dir.join(&second));
                let shape: Vec<usize> = serde_json::from_value(e["shape"].clone()).unwrap();
                b.add(&name, e["dtype"].as_str().unwrap(), &shape, a.bytes(&name));
                b.write(&dir.join(&second));
                vec![name, first]
            },
            is: |e, _, found| matches!(e, CheckpointError::Tensor { tensor, .. } if *tensor == found[0]),
            names: &["also stored in"],
        },
    ]
}

const POISONED: &str = "bert.encoder.layer.1.output.dense.weight";
const EXTRA: &str = "bert.encoder.layer.0.attention.self.rotary.weight";

/// Writes `bad` at flat indices 7 and 9 of [`POISONED`].
fn poison(dir: &Path, bad: f32) -> Vec<String> {
    edit_weights(dir, |st| {
        st.bytes_mut(POISONED)[4 * 7..4 * 8].copy_from_slice(&bad.to_le_bytes());
        st.bytes_mut(POISONED)[4 * 9..4 * 10].copy_from_slice(&bad.to_le_bytes());
    });
    vec![]
}

fn is_two_bad_values(e: &CheckpointError, _: &Path, _: &[String]) -> bool {
    matches!(e, CheckpointError::NonFinite { tensor, count: 2, index: 7, .. } if tensor == POISONED)
}

#[test]
fn every_bad_input_gets_its_own_error_naming_file_and_reason() {
    check_bad_cases(valid_bert_dir, &bert_cases());
}

/// A model built in memory, to be written; nothing to carry unless `carry` names it.
fn in_memory(bert: Bert, root: &Path, carry: &[&str]) -> ModelDir {
    let carry = carry.iter().map(PathBuf::from).collect();
    ModelDir::new(root.into(), Model::Bert(bert), Dtype::F32, carry)
}

const OVERWRITE: WriteOptions = WriteOptions {
    dtype: None,
    overwrite: true,
};

#[test]
fn existing_folder_without_overwrite_is_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let md = in_memory(small_bert(3), tmp.path(), &[]);
    let err = md.write(&out, &WriteOptions::default()).unwrap_err();
    assert!(matches!(&err, CheckpointError::OutputExists { path } if path == &out));
    assert_names(&err.to_string(), &["out: output folder already exists"]);
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
    let mut wrong_shape = small_bert(4);
    wrong_shape.config.intermediate_size = 40;
    // A NaN weight at write time, deep in the tensor list.
    let mut nan = small_bert(4);
    nan.layers[1].output.weight[[3, 5]] = f32::NAN;
    type Check = fn(&CheckpointError, &Path) -> bool;
    let cases: [(Bert, &[&str], Check, &[&str]); 3] = [
        (
            wrong_shape,
            &[],
            |e, out| {
                matches!(e, CheckpointError::NotWritten { path, source }
                    if path == out && matches!(**source, CheckpointError::InvalidModel(_)))
            },
            &["out: not written", FFN_IN, "[32, 16]", "[40, 16]"],
        ),
        (
            nan,
            &[],
            |e, out| {
                matches!(e, CheckpointError::NonFinite { tensor, path, .. }
                    if tensor == POISONED && path == &out.join("model.safetensors"))
            },
            &["out/model.safetensors", POISONED, "NaN"],
        ),
        // A file to carry through that vanished: fails mid-write, after the weights.
        (
            small_bert(4),
            &["tokenizer.json"],
            |e, _| matches!(e, CheckpointError::Io { path, .. } if path.ends_with("tokenizer.json")),
            &["tokenizer.json"],
        ),
    ];
    for (bert, carry, is, names) in cases {
        let err = in_memory(bert, tmp.path(), carry)
            .write(&out, &WriteOptions::default())
            .unwrap_err();
        assert!(is(&err, &out), "{err:?}");
        assert_names(&err.to_string(), names);
        assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));
    }
}

#[test]
fn failed_overwrite_keeps_the_old_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = valid_bert_dir(tmp.path(), "out");
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let mut b = small_bert(5);
    b.embeddings.word[[0, 0]] = f32::INFINITY;
    let err = in_memory(b, tmp.path(), &[])
        .write(&out, &OVERWRITE)
        .unwrap_err();
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
    let new = small_bert(6);
    in_memory(new.clone(), tmp.path(), &[])
        .write(&out, &OVERWRITE)
        .unwrap();
    assert_eq!(
        listing(&out),
        ["config.json", "model.safetensors"],
        "stale file gone"
    );
    let read = read_model_dir(&out).unwrap();
    assert_eq!(read.model.named_tensors(), Model::Bert(new).named_tensors());
    assert_eq!(
        listing(tmp.path()),
        ["out"],
        "no temporary or old copy left behind"
    );
}

/// A process id that was just in use and is not any more.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// A temporary of a writer of `out` as `AtomicDir` names it, with one file in it.
fn temporary(root: &Path, pid: u32, suffix: &str) -> PathBuf {
    let dir = root.join(format!(".out.tmp-{pid}-0{suffix}"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("model.safetensors"), b"half written").unwrap();
    dir
}

#[test]
fn temporaries_of_killed_writers_are_removed_by_the_next_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dead = dead_pid();
    // A writer that still runs (not this process: its own temporaries reuse its names).
    let mut running = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let live = running.id();
    temporary(tmp.path(), dead, "");
    temporary(tmp.path(), live, "");
    // Another output's temporary, and a name that only looks alike: not ours to remove.
    std::fs::create_dir(tmp.path().join(format!(".other.tmp-{dead}-0"))).unwrap();
    std::fs::create_dir(tmp.path().join(format!(".out.tmp-{dead}-x"))).unwrap();
    let out = tmp.path().join("out");
    in_memory(small_bert(7), tmp.path(), &[])
        .write(&out, &WriteOptions::default())
        .unwrap();
    assert_eq!(
        listing(tmp.path()),
        [
            format!(".other.tmp-{dead}-0"),
            format!(".out.tmp-{dead}-x"),
            format!(".out.tmp-{live}-0"),
            "out".into(),
        ],
        "the dead writer's temporary is gone, the live one's kept"
    );
    running.kill().unwrap();
    running.wait().unwrap();
}

#[test]
fn an_output_moved_aside_by_a_killed_commit_is_put_back() {
    // Killed between the two renames of an overwrite: the old output sits in `.old`, the new one
    // in its temporary, and `out` is missing. The next run restores the old one first.
    let tmp = tempfile::tempdir().unwrap();
    let dead = dead_pid();
    let old = valid_bert_dir(tmp.path(), "old");
    let before = std::fs::read(weights(&old)).unwrap();
    std::fs::rename(&old, tmp.path().join(format!(".out.tmp-{dead}-0.old"))).unwrap();
    temporary(tmp.path(), dead, "");
    let out = tmp.path().join("out");
    let cleaned = AtomicDir::clean_stale(&out);
    assert_eq!(cleaned.len(), 2, "{cleaned:?}");
    assert_eq!(listing(tmp.path()), ["out"]);
    assert_eq!(std::fs::read(weights(&out)).unwrap(), before);
    // So a write without overwrite now refuses, as it would have before the kill.
    let err = in_memory(small_bert(8), tmp.path(), &[])
        .write(&out, &WriteOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, CheckpointError::OutputExists { .. }),
        "{err:?}"
    );
}

#[test]
fn empty_tensor_with_huge_dims_is_refused_not_a_panic() {
    // No bytes, so the byte count checks out, but the dims multiply past isize::MAX: ndarray
    // cannot represent the shape. Found by review of the fuzz target; fixed in the parser.
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_bert_dir(tmp.path(), "m");
    let big = 1usize << 62;
    edit_weights(&dir, |st| {
        st.add("bert.embeddings.position_ids", "F32", &[0, big, big], &[])
    });
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
