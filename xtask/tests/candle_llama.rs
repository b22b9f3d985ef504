//! Grown Llama-family checkpoints load unchanged in candle-transformers (`llama`, `qwen2`,
//! `qwen3`), and candle's forward pass on an exact growth reproduces, at the last position,
//! the logits transformers computed for the source (the fixture's `expected.json`).

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::{llama, qwen2, qwen3};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

/// Grows `name` exactly to 96 hidden (6 / 3 heads, FFN 240) and returns the grown folder, its
/// config and the fixture's expected output.
fn grow(name: &str, tmp: &Path) -> (PathBuf, Value, Value) {
    let out = tmp.join(name);
    let o = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["grow", "--source"])
        .arg(fixture(name))
        .arg("--out")
        .arg(&out)
        .args(["--method", "fpi", "--map", "exact", "--no-verify"])
        .args(["--hidden", "96", "--heads", "6", "--kv-heads", "3"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |p: PathBuf| -> Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    (
        out.clone(),
        read(out.join("config.json")),
        read(fixture(name).join("expected.json")),
    )
}

fn vb(dir: &Path) -> candle_nn::VarBuilder<'static> {
    // SAFETY: the file is not modified while mapped.
    unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    }
}

fn ids(exp: &Value) -> Tensor {
    let rows: Vec<Vec<u32>> = serde_json::from_value(exp["input_ids"].clone()).unwrap();
    Tensor::new(rows, &Device::Cpu).unwrap()
}

/// max |candle - transformers| / max |transformers| over the last position's logits.
fn check_last_logits(name: &str, logits: &Tensor, exp: &Value) {
    let got: Vec<Vec<f32>> = logits.flatten_from(1).unwrap().to_vec2().unwrap();
    let want: Vec<Vec<Vec<f32>>> = serde_json::from_value(exp["logits"].clone()).unwrap();
    let (mut abs, mut scale) = (0f32, 0f32);
    for (b, row) in want.iter().enumerate() {
        let last = row.last().unwrap();
        for (j, &w) in last.iter().enumerate() {
            abs = abs.max((got[b][j] - w).abs());
            scale = scale.max(w.abs());
        }
    }
    let rel = abs / scale;
    eprintln!("{name}: candle vs transformers, last-position logits {rel:.2e}");
    assert!(rel < 1e-4, "{name}: {rel:.2e}");
}

fn f(c: &Value, k: &str) -> usize {
    c[k].as_u64().unwrap() as usize
}

#[test]
fn grown_llama_loads_in_candle_and_keeps_the_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, c, exp) = grow("hf-llama-tiny", tmp.path());
    let cfg = llama::Config {
        hidden_size: f(&c, "hidden_size"),
        intermediate_size: f(&c, "intermediate_size"),
        vocab_size: f(&c, "vocab_size"),
        num_hidden_layers: f(&c, "num_hidden_layers"),
        num_attention_heads: f(&c, "num_attention_heads"),
        num_key_value_heads: f(&c, "num_key_value_heads"),
        use_flash_attn: false,
        rms_norm_eps: c["rms_norm_eps"].as_f64().unwrap(),
        rope_theta: c["rope_parameters"]["rope_theta"].as_f64().unwrap() as f32,
        bos_token_id: None,
        eos_token_id: None,
        rope_scaling: None,
        max_position_embeddings: f(&c, "max_position_embeddings"),
        tie_word_embeddings: false,
    };
    let model = llama::Llama::load(vb(&out), &cfg).expect("candle loads the grown Llama");
    let mut cache = llama::Cache::new(false, DType::F32, &cfg, &Device::Cpu).unwrap();
    let logits = model.forward(&ids(&exp), 0, &mut cache).unwrap();
    check_last_logits("llama", &logits, &exp);
}

#[test]
fn grown_qwen2_loads_in_candle_and_keeps_the_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, c, exp) = grow("hf-qwen2-tiny", tmp.path());
    let cfg = qwen2::Config {
        vocab_size: f(&c, "vocab_size"),
        hidden_size: f(&c, "hidden_size"),
        intermediate_size: f(&c, "intermediate_size"),
        num_hidden_layers: f(&c, "num_hidden_layers"),
        num_attention_heads: f(&c, "num_attention_heads"),
        num_key_value_heads: f(&c, "num_key_value_heads"),
        max_position_embeddings: f(&c, "max_position_embeddings"),
        sliding_window: f(&c, "max_position_embeddings"),
        max_window_layers: f(&c, "max_window_layers"),
        tie_word_embeddings: c["tie_word_embeddings"].as_bool().unwrap(),
        rope_theta: c["rope_parameters"]["rope_theta"].as_f64().unwrap(),
        rms_norm_eps: c["rms_norm_eps"].as_f64().unwrap(),
        use_sliding_window: false,
        hidden_act: candle_nn::Activation::Silu,
    };
    assert!(cfg.tie_word_embeddings, "the tie is kept");
    let mut model =
        qwen2::ModelForCausalLM::new(&cfg, vb(&out)).expect("candle loads the grown Qwen2");
    let logits = model.forward(&ids(&exp), 0).unwrap();
    check_last_logits("qwen2", &logits, &exp);
}

#[test]
fn grown_qwen3_loads_in_candle_and_keeps_the_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, c, exp) = grow("hf-qwen3-tiny", tmp.path());
    let cfg = qwen3::Config {
        vocab_size: f(&c, "vocab_size"),
        hidden_size: f(&c, "hidden_size"),
        intermediate_size: f(&c, "intermediate_size"),
        num_hidden_layers: f(&c, "num_hidden_layers"),
        num_attention_heads: f(&c, "num_attention_heads"),
        head_dim: f(&c, "head_dim"),
        attention_bias: c["attention_bias"].as_bool().unwrap(),
        num_key_value_heads: f(&c, "num_key_value_heads"),
        max_position_embeddings: f(&c, "max_position_embeddings"),
        sliding_window: None,
        max_window_layers: f(&c, "max_window_layers"),
        tie_word_embeddings: c["tie_word_embeddings"].as_bool().unwrap(),
        rope_theta: c["rope_parameters"]["rope_theta"].as_f64().unwrap(),
        rms_norm_eps: c["rms_norm_eps"].as_f64().unwrap(),
        use_sliding_window: false,
        hidden_act: candle_nn::Activation::Silu,
    };
    assert_eq!(cfg.head_dim, 32);
    let mut model =
        qwen3::ModelForCausalLM::new(&cfg, vb(&out)).expect("candle loads the grown Qwen3");
    let logits = model.forward(&ids(&exp), 0).unwrap();
    check_last_logits("qwen3", &logits, &exp);
}
