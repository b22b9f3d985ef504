//! Llama-family checkpoints (issue 12): the four transformers fixtures load through the tensor
//! table, configs as transformers 4.x and 5.x write them, writing round-trips (single file and
//! sharded, dtype kept), and bad input is refused naming file, tensor and reason.

use bert2bert_checkpoint::llama::{Part, Role, RopeScaling, tensor_table};
use bert2bert_checkpoint::random::Init;
use bert2bert_checkpoint::safetensors::INDEX_FILE;
use bert2bert_checkpoint::{
    CheckpointError, Dtype, Llama, LlamaConfig, LlamaKind, LlamaSource, LlamaWeights,
    read_model_dir,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let p = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn the_four_fixtures_load_through_the_table() {
    for (name, kind, tied, bias, qk, hd, kv) in [
        (
            "hf-llama-tiny",
            LlamaKind::Llama,
            false,
            false,
            false,
            16,
            2,
        ),
        ("hf-qwen2-tiny", LlamaKind::Qwen2, true, true, false, 16, 2),
        ("hf-qwen3-tiny", LlamaKind::Qwen3, true, false, true, 32, 2),
        ("hf-llama3-tiny", LlamaKind::Llama, true, true, false, 16, 1),
    ] {
        let src = LlamaSource::open(&testdata(name)).unwrap();
        let c = &src.config;
        assert_eq!(c.kind, kind, "{name}");
        assert_eq!(c.tie_word_embeddings, tied, "{name}");
        assert_eq!(c.qkv_bias, bias, "{name}");
        assert_eq!(c.qk_norm, qk, "{name}");
        assert_eq!((c.head_dim, c.num_key_value_heads), (hd, kv), "{name}");
        assert_eq!(src.dtype, Dtype::F32);
        // The table names exactly what transformers stored (nothing dropped for these files).
        let stored: std::collections::BTreeSet<String> = {
            let bytes = std::fs::read(testdata(name).join("model.safetensors")).unwrap();
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let h: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
            h.as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "__metadata__")
                .cloned()
                .collect()
        };
        let table: std::collections::BTreeSet<String> =
            src.table.iter().map(|d| d.name.clone()).collect();
        assert_eq!(stored, table, "{name}");
        assert!(src.dropped.is_empty(), "{name}: {:?}", src.dropped);
        let m = src.load().unwrap();
        assert_eq!(m.mat(Role::Layer(0, Part::Q)).dim(), (4 * hd, 64), "{name}");
        assert_eq!(m.has(Role::LmHead), !tied, "{name}");
    }
}

#[test]
fn configs_in_the_4x_and_5x_style_give_the_same_rope() {
    // hf-llama3-tiny was written with 4.x's top-level rope_theta + rope_scaling.
    let c4 = LlamaConfig::read(&testdata("hf-llama3-tiny")).unwrap();
    let want = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 16.0,
    };
    assert_eq!((c4.rope_theta, &c4.rope_scaling), (10000.0, &want));
    let mut raw = c4.raw.clone();
    let mut p = raw.remove("rope_scaling").unwrap();
    p.as_object_mut()
        .unwrap()
        .insert("rope_theta".into(), raw.remove("rope_theta").unwrap());
    raw.insert("rope_parameters".into(), p);
    let c5 = LlamaConfig::from_raw(Path::new("c.json"), raw).unwrap();
    assert_eq!((c5.rope_theta, &c5.rope_scaling), (10000.0, &want));
    // 4.x's `type` spelling and a null rope_scaling.
    let mut raw = c4.raw.clone();
    raw.insert(
        "rope_scaling".into(),
        serde_json::json!({"type": "linear", "factor": 2.0}),
    );
    let c = LlamaConfig::from_raw(Path::new("c.json"), raw.clone()).unwrap();
    assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 2.0 });
    raw.insert("rope_scaling".into(), Value::Null);
    raw.insert("rope_theta".into(), serde_json::json!(500000.0));
    let c = LlamaConfig::from_raw(Path::new("c.json"), raw).unwrap();
    assert_eq!(
        (c.rope_theta, c.rope_scaling),
        (500000.0, RopeScaling::Default)
    );
    // An unknown rope type is carried (the forward pass refuses it, not the loader).
    let mut raw = c4.raw.clone();
    raw.insert(
        "rope_scaling".into(),
        serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
    );
    let c = LlamaConfig::from_raw(Path::new("c.json"), raw).unwrap();
    assert_eq!(c.rope_scaling, RopeScaling::Other("yarn".into()));
    assert_eq!(c.to_json()["rope_scaling"]["rope_type"], "yarn");
}

#[test]
fn head_dim_is_derived_when_absent_and_written_when_needed() {
    let mut c = LlamaConfig::new(LlamaKind::Mistral, 50, 32, 1, 4, 2, 8, 48, false);
    c.raw.remove("head_dim");
    let c = LlamaConfig::from_raw(Path::new("c.json"), c.raw.clone()).unwrap();
    assert_eq!(c.head_dim, 8);
    assert!(!c.to_json().contains_key("head_dim"));
    // 32 -> 48 hidden with 4 -> 8 heads: 48 / 8 = 6 would be wrong, so head_dim is written.
    let g = c.with_shape(48, 8, 4, 64, &[0]);
    assert_eq!(g.to_json()["head_dim"], 8);
    assert_eq!(g.to_json()["num_key_value_heads"], 4);
}

#[test]
fn writing_round_trips_single_and_sharded_with_the_dtype_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let c = LlamaConfig::new(LlamaKind::Qwen2, 40, 16, 2, 4, 2, 4, 24, false);
    let m = Llama::random(&c, Init::TEST, 3);
    let one = m
        .write(&tmp.path().join("one"), Dtype::F32, false, None)
        .unwrap();
    assert!(one.join("model.safetensors").is_file());
    let same = |r: Llama| r.tensors == m.tensors && r.table == m.table;
    assert!(same(Llama::read(&one).unwrap()));
    // Shards of at most 2 KB: several files, an index, the same tensors.
    let sh = m
        .write(&tmp.path().join("sharded"), Dtype::F32, false, Some(2_000))
        .unwrap();
    assert!(sh.join(INDEX_FILE).is_file() && !sh.join("model.safetensors").exists());
    let idx: Value =
        serde_json::from_str(&std::fs::read_to_string(sh.join(INDEX_FILE)).unwrap()).unwrap();
    let files: std::collections::BTreeSet<&str> = idx["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(files.len() > 2, "{files:?}");
    assert!(
        files
            .iter()
            .all(|f| f.starts_with("model-000") && f.ends_with(".safetensors"))
    );
    let total: u64 = m.tensors.iter().map(|t| t.len() as u64 * 4).sum();
    assert_eq!(idx["metadata"]["total_size"], total);
    assert!(same(Llama::read(&sh).unwrap()));
    // bf16 is kept as the source dtype.
    let bf = m
        .write(&tmp.path().join("bf16"), Dtype::BF16, false, None)
        .unwrap();
    let src = LlamaSource::open(&bf).unwrap();
    assert_eq!(src.dtype, Dtype::BF16);
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(bf.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["torch_dtype"], "bfloat16");
    let w = src.tensor(Role::Layer(1, Part::Down)).unwrap();
    let want = m.get(Role::Layer(1, Part::Down));
    for (a, b) in w.iter().zip(want.iter()) {
        assert_eq!(*a, half::bf16::from_f32(*b).to_f32());
    }
}

#[test]
fn unknown_config_fields_are_carried_and_layer_types_follow_the_depth() {
    let src = LlamaSource::open(&testdata("hf-qwen3-tiny")).unwrap();
    let c = src.config.with_shape(96, 6, 3, 240, &[0, 0, 1, 1]);
    let j = c.to_json();
    assert_eq!(j["max_window_layers"], 28, "carried");
    assert_eq!(j["layer_types"].as_array().unwrap().len(), 4);
    assert_eq!(j["num_hidden_layers"], 4);
    assert_eq!(j["head_dim"], 32);
    assert_eq!(j["rope_parameters"]["rope_type"], "default");
}

fn copy_fixture(name: &str, to: &Path) -> PathBuf {
    let dir = to.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(testdata(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let p = dir.join("config.json");
    let mut perm = std::fs::metadata(&p).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&p, perm).unwrap();
    dir
}

#[test]
fn bad_input_is_refused_naming_file_tensor_and_reason() {
    let tmp = tempfile::tempdir().unwrap();
    // Config claims biases the file does not have: the first missing one is named.
    let d = copy_fixture("hf-llama-tiny", &tmp.path().join("a"));
    edit_config(&d, |c| {
        c.insert("attention_bias".into(), true.into());
    });
    match LlamaSource::open(&d).unwrap_err() {
        CheckpointError::MissingTensor { tensor, .. } => {
            assert_eq!(tensor, "model.layers.0.self_attn.q_proj.bias")
        }
        e => panic!("{e}"),
    }
    // Config contradicting a tensor's shape.
    let d = copy_fixture("hf-llama-tiny", &tmp.path().join("b"));
    edit_config(&d, |c| {
        c.insert("intermediate_size".into(), 128.into());
    });
    let e = LlamaSource::open(&d).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, CheckpointError::Shape { .. }), "{msg}");
    assert!(
        msg.contains("model.safetensors") && msg.contains("mlp.gate_proj.weight"),
        "{msg}"
    );
    // Biases stored that the config does not have (Qwen2 declared as Mistral).
    let d = copy_fixture("hf-qwen2-tiny", &tmp.path().join("c"));
    edit_config(&d, |c| {
        c.insert("model_type".into(), "mistral".into());
    });
    match LlamaSource::open(&d).unwrap_err() {
        CheckpointError::UnexpectedTensor { tensor, .. } => assert!(tensor.ends_with(".bias")),
        e => panic!("{e}"),
    }
    // A config claiming a billion layers over a two-layer file: refused from the headers,
    // naming the field, before anything the size of the claim is allocated.
    let d = copy_fixture("hf-llama-tiny", &tmp.path().join("l"));
    edit_config(&d, |c| {
        c.insert("num_hidden_layers".into(), 1_000_000_000.into());
    });
    let e = LlamaSource::open(&d).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, CheckpointError::LayerCount { .. }), "{msg}");
    assert!(
        msg.contains("num_hidden_layers") && msg.contains("config.json"),
        "{msg}"
    );
    // Unsupported activation, bad head counts.
    for (field, value, needle) in [
        ("hidden_act", Value::from("gelu"), "hidden_act `gelu`"),
        ("num_key_value_heads", Value::from(3), "not a multiple"),
        (
            "partial_rotary_factor",
            Value::from(0.5),
            "partial_rotary_factor",
        ),
    ] {
        let d = copy_fixture("hf-llama-tiny", &tmp.path().join(field));
        edit_config(&d, |c| {
            c.insert(field.into(), value);
        });
        let msg = LlamaSource::open(&d).unwrap_err().to_string();
        assert!(msg.contains(needle) && msg.contains("config.json"), "{msg}");
    }
    // A truncated weights file.
    let d = copy_fixture("hf-llama-tiny", &tmp.path().join("t"));
    let w = d.join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() - 100]).unwrap();
    let msg = LlamaSource::open(&d).unwrap_err().to_string();
    assert!(msg.contains("model.safetensors"), "{msg}");
    // NaN in a tensor: refused when it is read, naming it.
    let d = copy_fixture("hf-qwen3-tiny", &tmp.path().join("n"));
    let mut m = Llama::read(&d).unwrap();
    m.get_mut(Role::Layer(1, Part::KNorm))
        .as_slice_mut()
        .unwrap()[3] = f32::NAN;
    let out = tmp.path().join("nan-out");
    let e = m.write(&out, Dtype::F32, false, None).unwrap_err();
    assert!(e.to_string().contains("k_norm"), "{e}");
    assert!(!out.exists(), "nothing half-written");
}

#[test]
fn the_whole_model_readers_point_llama_folders_to_the_streaming_path() {
    let e = read_model_dir(&testdata("hf-llama-tiny"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("Llama-family") && e.contains("python/"), "{e}");
}

#[test]
fn the_table_follows_every_config_switch() {
    let mut c = LlamaConfig::new(LlamaKind::Llama, 10, 8, 1, 2, 1, 4, 12, true);
    let names = |c: &LlamaConfig| -> Vec<String> {
        tensor_table(c)
            .into_iter()
            .map(|d| d.name.replace("model.layers.0.", ""))
            .collect()
    };
    assert_eq!(
        names(&c),
        [
            "model.embed_tokens.weight",
            "self_attn.q_proj.weight",
            "self_attn.k_proj.weight",
            "self_attn.v_proj.weight",
            "self_attn.o_proj.weight",
            "mlp.gate_proj.weight",
            "mlp.up_proj.weight",
            "mlp.down_proj.weight",
            "input_layernorm.weight",
            "post_attention_layernorm.weight",
            "model.norm.weight",
        ]
    );
    c.qkv_bias = true;
    c.o_bias = true;
    c.mlp_bias = true;
    c.qk_norm = true;
    c.tie_word_embeddings = false;
    let n = names(&c);
    for want in [
        "self_attn.q_proj.bias",
        "self_attn.o_proj.bias",
        "self_attn.q_norm.weight",
        "mlp.down_proj.bias",
        "lm_head.weight",
    ] {
        assert!(n.iter().any(|x| x == want), "{want} in {n:?}");
    }
    assert_eq!(n.len(), 11 + 10);
}
