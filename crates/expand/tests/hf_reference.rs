//! The reference forward pass against what Hugging Face transformers computed for the same
//! checkpoint and inputs: the proof that `forward_bert` is HF's BERT.

use bert2bert_checkpoint::read_model_dir;
use bert2bert_expand::forward::{Batch, forward_bert};
use ndarray::{Array2, ArrayD, IxDyn};
use serde_json::Value;
use std::path::Path;

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

fn ints<T: TryFrom<i64>>(v: &Value) -> Array2<T>
where
    T::Error: std::fmt::Debug,
{
    let a = array(v);
    let (r, c) = (a.shape()[0], a.shape()[1]);
    Array2::from_shape_vec(
        (r, c),
        a.iter().map(|&x| T::try_from(x as i64).unwrap()).collect(),
    )
    .unwrap()
}

/// max |a - b| / max |b|, as `verify` defines the relative difference.
fn rel(ours: &ArrayD<f32>, hf: &ArrayD<f32>) -> f32 {
    assert_eq!(ours.shape(), hf.shape());
    let abs = ours
        .iter()
        .zip(hf.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    abs / hf.iter().map(|b| b.abs()).fold(0.0f32, f32::max)
}

#[test]
fn forward_matches_transformers_on_the_tiny_fixture() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/hf-bert-tiny");
    let md = read_model_dir(&dir).unwrap();
    let bert = md.model.as_bert().unwrap();
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    let exp: Value = serde_json::from_str(&text).unwrap();
    let batch = Batch {
        input_ids: ints::<u32>(&exp["input_ids"]),
        token_type_ids: ints::<u32>(&exp["token_type_ids"]),
        attention_mask: ints::<u8>(&exp["attention_mask"]),
    };
    assert_eq!(batch.attention_mask[[1, 11]], 0, "the fixture pads row 2");
    let out = forward_bert(bert, &batch).unwrap();
    let last = out.hidden_states.last().unwrap().clone().into_dyn();
    let mlm = out.mlm_logits.unwrap().into_dyn();
    let nsp = out.nsp_logits.unwrap().into_dyn();
    // Both sides compute in f32 with different summation orders (PyTorch's blocked GEMM and
    // Welford LayerNorm vs. matrixmultiply and f64-accumulated LayerNorm/softmax): measured
    // agreement is 3e-7 to 4e-7 of the output scale. 1e-5 leaves 25x headroom for other CPUs'
    // GEMM kernels while every plausible mistake lands far above it (the controls below).
    for (what, ours, hf) in [
        ("last_hidden_state", &last, array(&exp["last_hidden_state"])),
        ("mlm_logits", &mlm, array(&exp["mlm_logits"])),
        ("nsp_logits", &nsp, array(&exp["nsp_logits"])),
    ] {
        let r = rel(ours, &hf);
        println!("{what}: relative difference {r:.3e}");
        assert!(r < 1e-5, "{what}: relative difference {r:.3e}");
    }
}

/// The tolerance above is tight enough to catch near misses: the tanh GELU, a wrong epsilon and
/// an ignored padding mask each move the outputs by far more than 1e-5.
#[test]
fn near_misses_are_caught_by_the_tolerance() {
    use bert2bert_checkpoint::Activation;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/hf-bert-tiny");
    let md = read_model_dir(&dir).unwrap();
    let bert = md.model.as_bert().unwrap();
    let exp: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let batch = Batch {
        input_ids: ints::<u32>(&exp["input_ids"]),
        token_type_ids: ints::<u32>(&exp["token_type_ids"]),
        attention_mask: ints::<u8>(&exp["attention_mask"]),
    };
    let hf = array(&exp["mlm_logits"]);
    let mut tanh = bert.clone();
    tanh.config.hidden_act = Activation::GeluTanh;
    let mut eps = bert.clone();
    eps.config.layer_norm_eps = 1e-5;
    let mut unmasked = batch.clone();
    unmasked.attention_mask.fill(1);
    for (what, model, b) in [
        ("tanh GELU", &tanh, &batch),
        ("eps 1e-5", &eps, &batch),
        ("mask ignored", bert, &unmasked),
    ] {
        let out = forward_bert(model, b)
            .unwrap()
            .mlm_logits
            .unwrap()
            .into_dyn();
        let r = rel(&out, &hf);
        println!("{what}: relative difference {r:.3e}");
        assert!(r > 1e-5, "{what} is not distinguishable: {r:.3e}");
    }
}
