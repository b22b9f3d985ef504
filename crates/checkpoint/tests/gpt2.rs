//! GPT-2 checkpoints: the transformers-written fixture loads with exact names and values, name
//! variants load alike, round trips are exact, and bad input gets typed errors.

mod common;

use bert2bert_checkpoint::random::Init;
use bert2bert_checkpoint::safetensors::TensorStore;
use bert2bert_checkpoint::{
    Activation, CheckpointError, Dtype, Family, Gpt2, Gpt2Config, Model, ModelDir, WriteOptions,
    fuse_qkv, read_model_dir,
};
use common::*;
use ndarray::{Array2, s};
use serde_json::Value;
use std::path::{Path, PathBuf};

const WTE: &str = "transformer.wte.weight";
const C_ATTN: &str = "transformer.h.0.attn.c_attn.weight";

fn gpt2(m: &Model) -> &Gpt2 {
    m.as_gpt2().expect("a GPT-2")
}

/// V=40, D=8, L=2, A=2, P=10, F=4D.
fn small_gpt2(seed: u64) -> Gpt2 {
    Gpt2::random(&Gpt2Config::new(40, 8, 2, 2, 10), Init::TEST, seed)
}

fn valid_gpt2_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    write_model(&Model::Gpt2(small_gpt2(1)), &dir, Dtype::F32);
    dir
}

#[test]
fn hf_gpt2_tiny_loads_with_exact_names_and_values() {
    let dir = fixture("hf-gpt2-tiny");
    let m = read_model_dir(&dir).unwrap();
    assert_eq!(m.model.family(), Family::Gpt2);
    assert!(m.model.as_bert().is_none());
    assert!(m.dropped.is_empty(), "{:?}", m.dropped);
    assert_eq!(
        m.other_files,
        [
            PathBuf::from("expected.json"),
            "generation_config.json".into()
        ]
    );
    let g = gpt2(&m.model);
    let c = &g.config;
    assert_eq!(
        (c.vocab_size, c.n_embd, c.n_layer, c.n_head, c.n_positions),
        (300, 64, 2, 2, 32)
    );
    assert_eq!((c.n_inner, c.inner_dim(), c.head_dim()), (None, 256, 32));
    assert_eq!(c.activation_function, Activation::GeluTanh);
    assert_eq!(c.layer_norm_epsilon, 1e-5);
    assert!(c.tie_word_embeddings && g.lm_head.is_none() && g.prefixed);
    // Every stored tensor comes back under its name with its values, Conv1D untransposed.
    let store = TensorStore::open_dir(&dir).unwrap();
    let named = m.model.named_tensors();
    let mut names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(names, store.names().collect::<Vec<_>>());
    for (name, t) in &named {
        assert_eq!(store.read_f32(name).unwrap(), t.to_owned(), "{name}");
    }
    assert_eq!(
        g.blocks[0].c_attn.weight.dim(),
        (64, 192),
        "(in, out) as stored"
    );
    assert_eq!(g.blocks[1].mlp_proj.weight.dim(), (256, 64));
    let (d, f, v, p) = (64, 256, 300, 32);
    let per_block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d);
    assert_eq!(
        m.model.num_parameters(),
        v * d + p * d + 2 * per_block + 2 * d
    );
}

#[test]
fn hf_gpt2_tiny_logits_use_the_tied_wte() {
    // transformers computed logits = last_hidden_state . wte^T with the tied head; the loaded wte
    // must reproduce them from its own last_hidden_state.
    let m = read_model_dir(&fixture("hf-gpt2-tiny")).unwrap();
    let wte = &gpt2(&m.model).wte;
    let e: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("hf-gpt2-tiny/expected.json")).unwrap(),
    )
    .unwrap();
    let h = &e["last_hidden_state"];
    let logits = &e["logits"];
    let mut worst = 0f64;
    for b in 0..2 {
        let rows: Vec<f32> = h[b]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
            })
            .collect();
        let hs = Array2::from_shape_vec((12, 64), rows).unwrap();
        let ours = hs.dot(&wte.t());
        for t in 0..12 {
            for j in 0..300 {
                let want = logits[b][t][j].as_f64().unwrap();
                let err = (ours[[t, j]] as f64 - want).abs() / (1.0 + want.abs());
                worst = worst.max(err);
            }
        }
    }
    // f32 dot products of length 64 of O(1) values, against torch's f32 result: about 1e-6.
    assert!(worst < 1e-5, "worst relative error {worst}");
}

#[test]
fn hf_gpt2_tiny_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("hf-gpt2-tiny");
    let a = read_model_dir(&src).unwrap();
    let out = tmp.path().join("out");
    a.write(&out, &WriteOptions::default()).unwrap();
    let b = read_model_dir(&out).unwrap();
    assert_eq!(a.model, b.model);
    let (s, o) = (RawSt::read(&weights(&src)), RawSt::read(&weights(&out)));
    let (mut sn, mut on) = (s.names(), o.names());
    sn.sort();
    on.sort();
    assert_eq!(sn, on);
    for n in &sn {
        assert_eq!(s.header[n]["shape"], o.header[n]["shape"], "{n}");
        assert_eq!(s.bytes(n), o.bytes(n), "{n}");
    }
    // config.json comes back unchanged, `n_inner: null` and unknown fields included.
    assert_eq!(read_config(&src), read_config(&out));
    assert_eq!(
        std::fs::read(src.join("generation_config.json")).unwrap(),
        std::fs::read(out.join("generation_config.json")).unwrap()
    );
}

#[test]
fn qkv_split_and_fuse() {
    let g = small_gpt2(2);
    let block = &g.blocks[1];
    let [q, k, v] = block.split_qkv();
    let w = &block.c_attn.weight;
    assert_eq!(q.weight, w.slice(s![.., 0..8]));
    assert_eq!(k.weight, w.slice(s![.., 8..16]));
    assert_eq!(v.weight, w.slice(s![.., 16..24]));
    assert_eq!(v.bias, block.c_attn.bias.slice(s![16..24]));
    assert_eq!(fuse_qkv(&q, &k, &v).unwrap(), block.c_attn);
    let mut changed = block.clone();
    let k2 = bert2bert_checkpoint::Linear {
        weight: k.weight.mapv(|x| -x),
        bias: k.bias.clone(),
    };
    changed.set_qkv(&q, &k2, &v).unwrap();
    assert_eq!(changed.split_qkv()[1], k2);
    assert_eq!(changed.split_qkv()[0], q);
    let bad = bert2bert_checkpoint::Linear {
        weight: Array2::zeros((8, 4)),
        bias: ndarray::Array1::zeros(4),
    };
    let err = fuse_qkv(&q, &bad, &v).unwrap_err();
    assert!(matches!(err, CheckpointError::InvalidModel(_)));
    assert!(err.to_string().contains("k is (8, 4)"));
}

#[test]
fn random_round_trip_in_every_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let model = Model::Gpt2(small_gpt2(3));
    model.validate().unwrap();
    for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
        let a = tmp.path().join(format!("a-{dtype}"));
        let b = tmp.path().join(format!("b-{dtype}"));
        write_model(&model, &a, dtype);
        let read = read_model_dir(&a).unwrap();
        assert_eq!(read.dtype, dtype);
        read.write(&b, &WriteOptions::default()).unwrap();
        assert_eq!(
            std::fs::read(weights(&a)).unwrap(),
            std::fs::read(weights(&b)).unwrap(),
            "{dtype}"
        );
        if dtype == Dtype::F32 {
            assert_eq!(read.model.named_tensors(), model.named_tensors());
        }
        let buf = std::fs::read(weights(&a)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&buf).unwrap();
        assert_eq!(st.len(), model.named_tensors().len());
    }
}

#[test]
fn gpt2_model_without_transformer_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_gpt2_dir(tmp.path(), "m");
    let prefixed = read_model_dir(&dir).unwrap();
    let mut st = RawSt::read(&weights(&dir));
    for n in st.names() {
        st.rename(&n, n.strip_prefix("transformer.").unwrap());
    }
    st.write(&weights(&dir));
    edit_config(&dir, |c| {
        c.insert("architectures".into(), serde_json::json!(["GPT2Model"]));
    });
    let bare = read_model_dir(&dir).unwrap();
    let (g, h) = (gpt2(&bare.model), gpt2(&prefixed.model));
    assert!(!g.prefixed);
    assert_eq!((&g.wte, &g.blocks, &g.ln_f), (&h.wte, &h.blocks, &h.ln_f));
    let out = tmp.path().join("out");
    bare.write(&out, &WriteOptions::default()).unwrap();
    let names = RawSt::read(&weights(&out)).names();
    assert!(names.contains(&"wte.weight".to_owned()));
    assert!(names.iter().all(|n| !n.starts_with("transformer.")));
}

#[test]
fn lm_head_equal_to_wte_is_dropped_as_tied() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_gpt2_dir(tmp.path(), "m");
    let plain = read_model_dir(&dir).unwrap();
    let mut st = RawSt::read(&weights(&dir));
    let wte = st.bytes(WTE).to_vec();
    st.add("lm_head.weight", "F32", &[40, 8], &wte);
    st.write(&weights(&dir));
    let read = read_model_dir(&dir).unwrap();
    assert_eq!(read.model, plain.model);
    assert_eq!(read.dropped.len(), 1);
    assert_eq!(read.dropped[0].name, "lm_head.weight");
    assert!(read.dropped[0].reason.contains("tied"));
}

#[test]
fn untied_lm_head_is_kept_and_written_back() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = Gpt2Config::new(40, 8, 2, 2, 10);
    cfg.tie_word_embeddings = false;
    let g = Gpt2::random(&cfg, Init::TEST, 4);
    assert_eq!(g.lm_head.as_ref().unwrap().dim(), (8, 40), "(in, out)");
    let dir = tmp.path().join("m");
    write_model(&Model::Gpt2(g.clone()), &dir, Dtype::F32);
    assert_eq!(read_config(&dir)["tie_word_embeddings"], false);
    let st = RawSt::read(&weights(&dir));
    assert_eq!(
        st.header["lm_head.weight"]["shape"],
        serde_json::json!([40, 8])
    );
    let read = read_model_dir(&dir).unwrap();
    assert!(read.dropped.is_empty());
    assert_eq!(read.model.named_tensors(), Model::Gpt2(g).named_tensors());

    // Untied but absent: refused, since transformers would draw the head at random.
    let mut st = RawSt::read(&weights(&dir));
    st.remove("lm_head.weight");
    st.write(&weights(&dir));
    let (err, msg) = read_err(&dir);
    assert!(
        matches!(&err, CheckpointError::MissingTensor { tensor, .. } if tensor == "lm_head.weight")
    );
    assert_names(&msg, &["m/model.safetensors", "lm_head.weight"]);
}

#[test]
fn old_attention_buffers_are_dropped_on_purpose() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_gpt2_dir(tmp.path(), "m");
    let plain = read_model_dir(&dir).unwrap();
    let mut st = RawSt::read(&weights(&dir));
    for l in 0..2 {
        // The causal mask (1, 1, P, P) as bytes, and the scalar -1e4.
        st.add(
            &format!("transformer.h.{l}.attn.bias"),
            "U8",
            &[1, 1, 10, 10],
            &[1u8; 100],
        );
        st.add(
            &format!("transformer.h.{l}.attn.masked_bias"),
            "F32",
            &[],
            &(-1e4f32).to_le_bytes(),
        );
    }
    st.write(&weights(&dir));
    let read = read_model_dir(&dir).unwrap();
    assert_eq!(read.model, plain.model);
    let mut dropped: Vec<&str> = read.dropped.iter().map(|d| d.name.as_str()).collect();
    dropped.sort();
    assert_eq!(
        dropped,
        [
            "transformer.h.0.attn.bias",
            "transformer.h.0.attn.masked_bias",
            "transformer.h.1.attn.bias",
            "transformer.h.1.attn.masked_bias"
        ]
    );
    assert!(
        read.dropped
            .iter()
            .all(|d| d.reason.contains("causal mask"))
    );
}

#[test]
fn explicit_n_inner_and_config_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = Gpt2Config::new(40, 8, 1, 2, 10);
    cfg.n_inner = Some(20);
    cfg.raw.insert("n_ctx".into(), Value::from(10));
    cfg.raw
        .insert("my_field".into(), serde_json::json!({"kept": [1, 2]}));
    let dir = tmp.path().join("m");
    write_model(
        &Model::Gpt2(Gpt2::random(&cfg, Init::TEST, 5)),
        &dir,
        Dtype::F32,
    );
    let json = read_config(&dir);
    assert_eq!(json["n_inner"], 20);
    assert_eq!(json["my_field"]["kept"][1], 2);
    let read = read_model_dir(&dir).unwrap();
    let g = gpt2(&read.model);
    assert_eq!(g.config.inner_dim(), 20);
    assert_eq!(g.blocks[0].fc.weight.dim(), (8, 20));

    // with_shape: implicit 4D stays null; anything else is written out; n_ctx follows.
    let grown = Gpt2Config::new(40, 8, 1, 2, 10).with_shape(4, 16, 4, 64);
    assert_eq!(
        (grown.n_layer, grown.n_embd, grown.n_head, grown.n_inner),
        (4, 16, 4, None)
    );
    assert_eq!(grown.to_json()["n_inner"], Value::Null);
    let grown = cfg.with_shape(2, 16, 4, 64);
    assert_eq!(grown.n_inner, Some(64));
    let mut longer = grown.clone();
    longer.n_positions = 20;
    let j = longer.to_json();
    assert_eq!(
        (
            j["n_embd"].clone(),
            j["n_inner"].clone(),
            j["n_ctx"].clone()
        ),
        (16.into(), 64.into(), 20.into())
    );
    assert_eq!(j["model_type"], "gpt2");
    assert_eq!(j["activation_function"], "gelu_new");
}

const FC: &str = "transformer.h.0.mlp.c_fc.weight";
const LN_2: &str = "transformer.h.1.ln_2.bias";
const Q_ATTN: &str = "transformer.h.0.attn.q_attn.weight";

#[test]
fn gpt2_bad_input() {
    let cases = [
        BadCase {
            name: "required field missing",
            breaks: |dir| {
                edit_config(dir, |c| {
                    c.remove("n_embd");
                });
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::ConfigField { field, .. } if field == "n_embd"),
            names: &["m/config.json", "`n_embd`"],
        },
        BadCase {
            name: "hidden size not divisible by heads",
            breaks: |dir| {
                set(dir, "n_head", Value::from(3));
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::ConfigInvalid { .. }),
            names: &["m/config.json", "n_embd 8 is not divisible by n_head 3"],
        },
        BadCase {
            name: "n_inner contradicts the tensors",
            breaks: |dir| {
                set(dir, "n_inner", Value::from(24));
                vec![]
            },
            is: |e, _, _| {
                matches!(e, CheckpointError::Shape { tensor, found, expected, .. }
                    if tensor == FC && found == &[8, 32] && expected == &[8, 24])
            },
            names: &["m/model.safetensors", FC],
        },
        BadCase {
            name: "a billion layers claimed over two (issue 11: once an abort)",
            breaks: |dir| {
                set(dir, "n_layer", Value::from(1_000_000_000u64));
                vec![]
            },
            is: |e, dir, _| {
                matches!(e, CheckpointError::LayerCount { path, field: "n_layer", claimed: 1_000_000_000, .. }
                    if path == &dir.join("config.json"))
            },
            names: &[
                "m/config.json",
                "`n_layer` is 1000000000",
                "m/model.safetensors holds 2 layer(s) (transformer.h.0 to transformer.h.1)",
            ],
        },
        BadCase {
            name: "unsupported activation",
            breaks: |dir| {
                set(dir, "activation_function", Value::from("silu"));
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::Unsupported { .. }),
            names: &["m/config.json", "activation_function `silu`"],
        },
        BadCase {
            name: "cross-attention",
            breaks: |dir| {
                set(dir, "add_cross_attention", Value::from(true));
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::Unsupported { .. }),
            names: &["m/config.json", "cross-attention"],
        },
        BadCase {
            name: "required tensor missing",
            breaks: |dir| {
                edit_weights(dir, |st| st.remove(LN_2));
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::MissingTensor { tensor, .. } if tensor == LN_2),
            names: &["m/model.safetensors", LN_2],
        },
        BadCase {
            name: "unexpected tensor",
            breaks: |dir| {
                edit_weights(dir, |st| st.add(Q_ATTN, "F32", &[2], &[0u8; 8]));
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::UnexpectedTensor { family: "GPT-2", tensor, .. } if tensor == Q_ATTN),
            names: &["m/model.safetensors", Q_ATTN, "GPT-2"],
        },
        BadCase {
            name: "NaN in a weight",
            breaks: |dir| {
                edit_weights(dir, |st| {
                    st.bytes_mut(C_ATTN)[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
                });
                vec![]
            },
            is: |e, _, _| matches!(e, CheckpointError::NonFinite { tensor, index: 10, .. } if tensor == C_ATTN),
            names: &["m/model.safetensors", C_ATTN, "NaN"],
        },
    ];
    check_bad_cases(valid_gpt2_dir, &cases);

    let tmp = tempfile::tempdir().unwrap();
    // A bad write: a block whose fused c_attn lost its V columns.
    let mut g = small_gpt2(6);
    let cut = g.blocks[0].c_attn.weight.slice(s![.., 0..16]).to_owned();
    g.blocks[0].c_attn.weight = cut;
    let out = tmp.path().join("out");
    let err = ModelDir::new(PathBuf::new(), Model::Gpt2(g), Dtype::F32, vec![])
        .write(&out, &WriteOptions::default())
        .unwrap_err();
    assert!(matches!(&err, CheckpointError::NotWritten { .. }));
    assert_names(
        &err.to_string(),
        &["out: not written", C_ATTN, "[8, 16]", "[8, 24]"],
    );
    assert!(!out.exists());
}

#[test]
fn sharded_gpt2_and_detection_by_architectures() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid_gpt2_dir(tmp.path(), "m");
    let single = read_model_dir(&dir).unwrap();
    shard_folder(&dir);
    // No model_type: the family comes from `architectures`.
    edit_config(&dir, |c| {
        c.remove("model_type");
    });
    let sharded = read_model_dir(&dir).unwrap();
    assert_eq!(sharded.model.family(), Family::Gpt2);
    assert_eq!(sharded.model.named_tensors(), single.model.named_tensors());
}
