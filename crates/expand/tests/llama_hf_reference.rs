//! The Llama-family reference forward pass against what transformers computed for the same
//! checkpoints and inputs: Llama (GQA, untied), Qwen2 (q/k/v biases, tied), Qwen3 (q/k norms,
//! head_dim wider than hidden / heads), and a Llama with llama3 RoPE, one KV head and every bias
//! (written by scripts/make_llama_fixture.py).

use bert2bert_checkpoint::llama::RopeScaling;
use bert2bert_checkpoint::{Llama, LlamaSource};
use bert2bert_expand::forward::forward_llama;
use ndarray::{Array2, ArrayD, IxDyn};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
}

fn array(v: &Value) -> ArrayD<f32> {
    fn walk(v: &Value, shape: &mut Vec<usize>, out: &mut Vec<f32>, depth: usize) {
        match v {
            Value::Array(a) => {
                if shape.len() == depth {
                    shape.push(a.len());
                }
                for x in a {
                    walk(x, shape, out, depth + 1);
                }
            }
            Value::Number(n) => out.push(n.as_f64().expect("number") as f32),
            _ => panic!("not a numeric array"),
        }
    }
    let (mut shape, mut out) = (Vec::new(), Vec::new());
    walk(v, &mut shape, &mut out, 0);
    ArrayD::from_shape_vec(IxDyn(&shape), out).expect("rectangular")
}

fn rel(ours: &ArrayD<f32>, hf: &ArrayD<f32>) -> f32 {
    assert_eq!(ours.shape(), hf.shape());
    let abs = ours
        .iter()
        .zip(hf.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    abs / hf.iter().map(|b| b.abs()).fold(0.0f32, f32::max)
}

fn fixture(name: &str) -> (Llama, Array2<u32>, Value) {
    let dir = testdata(name);
    let m = Llama::read(&dir).unwrap();
    let exp: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let ids = array(&exp["input_ids"]);
    let ids = Array2::from_shape_vec(
        (ids.shape()[0], ids.shape()[1]),
        ids.iter().map(|&x| x as u32).collect(),
    )
    .unwrap();
    (m, ids, exp)
}

const FIXTURES: [&str; 4] = [
    "hf-llama-tiny",
    "hf-qwen2-tiny",
    "hf-qwen3-tiny",
    "hf-llama3-tiny",
];

#[test]
fn forward_matches_transformers_on_every_fixture() {
    for name in FIXTURES {
        let (m, ids, exp) = fixture(name);
        let out = forward_llama(&m, &ids).unwrap();
        let h = rel(
            &out.last_hidden_state.into_dyn(),
            &array(&exp["last_hidden_state"]),
        );
        let l = rel(&out.logits.into_dyn(), &array(&exp["logits"]));
        eprintln!("{name}: last_hidden_state {h:.2e}, logits {l:.2e}");
        assert!(h < 1e-5 && l < 1e-5, "{name}: {h:.2e} {l:.2e}");
    }
}

#[test]
fn the_streamed_source_gives_the_same_bits_as_the_model_in_memory() {
    for name in FIXTURES {
        let (m, ids, _) = fixture(name);
        let src = LlamaSource::open(&testdata(name)).unwrap();
        let a = forward_llama(&m, &ids).unwrap();
        let b = forward_llama(&src, &ids).unwrap();
        assert!(a.logits == b.logits, "{name}");
    }
}

/// Controls: the comparison is sensitive to each feature the fixtures exercise.
#[test]
fn controls_each_feature_matters() {
    let tol = 1e-5;
    // Epsilon (Qwen3: every norm, q/k norms included).
    let (mut m, ids, exp) = fixture("hf-qwen3-tiny");
    let logits = array(&exp["logits"]);
    m.config.rms_norm_eps = 1e-1;
    let r = rel(&forward_llama(&m, &ids).unwrap().logits.into_dyn(), &logits);
    assert!(r > tol * 10.0, "eps control {r:.2e}");
    // q/k norms switched off.
    let (mut m, ids, _) = fixture("hf-qwen3-tiny");
    m.config.qk_norm = false;
    let r = rel(&forward_llama(&m, &ids).unwrap().logits.into_dyn(), &logits);
    assert!(r > tol * 10.0, "q/k norm control {r:.2e}");
    // llama3 scaling replaced by plain RoPE.
    let (mut m, ids, exp) = fixture("hf-llama3-tiny");
    let logits = array(&exp["logits"]);
    m.config.rope_scaling = RopeScaling::Default;
    let r = rel(&forward_llama(&m, &ids).unwrap().logits.into_dyn(), &logits);
    assert!(r > tol * 10.0, "llama3 control {r:.2e}");
    // Another RoPE base.
    let (mut m, ids, exp) = fixture("hf-llama-tiny");
    let logits = array(&exp["logits"]);
    m.config.rope_theta = 500.0;
    let r = rel(&forward_llama(&m, &ids).unwrap().logits.into_dyn(), &logits);
    assert!(r > tol * 10.0, "theta control {r:.2e}");
    // Unknown rope types are refused, not guessed.
    let (mut m, ids, _) = fixture("hf-llama-tiny");
    m.config.rope_scaling = RopeScaling::Other("yarn".into());
    let e = forward_llama(&m, &ids).unwrap_err().to_string();
    assert!(e.contains("yarn"), "{e}");
}

#[test]
fn causal_a_later_token_does_not_change_earlier_outputs() {
    let (m, ids, _) = fixture("hf-qwen2-tiny");
    let mut ids2 = ids.clone();
    ids2[[0, 11]] = (ids[[0, 11]] + 1) % 300;
    let a = forward_llama(&m, &ids).unwrap().logits;
    let b = forward_llama(&m, &ids2).unwrap().logits;
    assert!(a.slice(ndarray::s![0, ..11, ..]) == b.slice(ndarray::s![0, ..11, ..]));
    assert!(a.slice(ndarray::s![0, 11, ..]) != b.slice(ndarray::s![0, 11, ..]));
}
