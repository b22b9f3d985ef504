//! The candle BERT: agreement with Hugging Face transformers, gradients reach every parameter,
//! stage-1 steps touch only the top layers and the head, weights round-trip exactly.

use bert2bert_checkpoint::random::{Heads, Init};
use bert2bert_checkpoint::{Bert, BertConfig, read_model_dir};
use bert2bert_train::bert::{DeviceBatch, Dropout, Params, Scope};
use bert2bert_train::trainer::SyntheticBatches;
use candle_core::{Device, Tensor};
use std::path::PathBuf;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
}

fn flat_f32(v: &serde_json::Value) -> Vec<f32> {
    match v {
        serde_json::Value::Array(a) => a.iter().flat_map(flat_f32).collect(),
        serde_json::Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        _ => panic!("not a number array"),
    }
}

fn flat_u32(v: &serde_json::Value) -> Vec<u32> {
    flat_f32(v).into_iter().map(|x| x as u32).collect()
}

fn tiny_config() -> BertConfig {
    BertConfig::new(64, 16, 2, 2, 32, 16)
}

/// Hidden states and MLM logits of the transformers fixture, at every position, in eval mode.
#[test]
fn forward_matches_transformers() -> anyhow::Result<()> {
    let dir = testdata("hf-bert-tiny");
    let md = read_model_dir(&dir)?;
    let bert = md.model.as_bert().unwrap();
    let params = Params::from_bert(bert, &Device::Cpu)?;
    let model = params.model()?;
    let exp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json"))?)?;
    let ids = flat_u32(&exp["input_ids"]);
    let types = flat_u32(&exp["token_type_ids"]);
    let mask = flat_u32(&exp["attention_mask"]);
    let (b, s) = (2, ids.len() / 2);
    let all: Vec<usize> = (0..b * s).collect();
    let batch = DeviceBatch::new(
        &ids,
        &types,
        &mask,
        &all,
        &vec![0; b * s],
        b,
        s,
        &Device::Cpu,
    )?;
    let scope = Scope::full(model.num_layers());
    let h = model.hidden_states(&batch, scope, &mut Dropout::eval())?;
    let logits = model.mlm_logits(&h, &batch.masked, scope)?;
    for (name, got) in [("last_hidden_state", h), ("mlm_logits", logits)] {
        let got = got.flatten_all()?.to_vec1::<f32>()?;
        let want = flat_f32(&exp[name]);
        assert_eq!(got.len(), want.len(), "{name}");
        let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        let err = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        // f32 through 2 layers: a few ulps of the largest value per op.
        assert!(
            err <= 2e-5 * scale.max(1.0),
            "{name}: max error {err}, scale {scale}"
        );
    }
    Ok(())
}

#[test]
fn every_parameter_gets_a_nonzero_gradient() -> anyhow::Result<()> {
    let cfg = tiny_config();
    // TEST init: every bias and LayerNorm non-trivial, so no gradient vanishes by symmetry.
    let bert = Bert::random(&cfg, Heads::MLM, Init::TEST, 1);
    let params = Params::from_bert(&bert, &Device::Cpu)?;
    let model = params.model()?;
    let batch = SyntheticBatches::new(64, 4, 16, 3)
        .next_mlm()
        .to_device(&Device::Cpu)?;
    let loss = model.loss(
        &batch,
        Scope::full(cfg.num_hidden_layers),
        &mut Dropout::train(5),
    )?;
    let grads = loss.backward()?;
    let vars = params.named_vars();
    // 5 embedding tensors + 16 per layer + 5 head tensors.
    assert_eq!(vars.len(), 5 + 16 * 2 + 5);
    for (name, var) in &vars {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
        assert!(
            norm.is_finite() && norm > 0.0,
            "{name}: gradient norm {norm}"
        );
    }
    Ok(())
}

/// The gradient of one weight against a central finite difference of the loss (f64 copy of
/// the model would be cleaner; f32 with a large step and a loose tolerance suffices to catch a
/// wrong or cut gradient).
#[test]
fn gradient_matches_finite_differences() -> anyhow::Result<()> {
    let cfg = tiny_config();
    let bert = Bert::random(&cfg, Heads::MLM, Init::TEST, 7);
    let params = Params::from_bert(&bert, &Device::Cpu)?;
    let model = params.model()?;
    let batch = SyntheticBatches::new(64, 2, 8, 9)
        .next_mlm()
        .to_device(&Device::Cpu)?;
    let scope = Scope::full(2);
    let loss = |m: &bert2bert_train::bert::BertForMaskedLM| -> anyhow::Result<f64> {
        Ok(m.loss(&batch, scope, &mut Dropout::eval())?
            .to_scalar::<f32>()? as f64)
    };
    let grads = model
        .loss(&batch, scope, &mut Dropout::eval())?
        .backward()?;
    for name in [
        "bert.embeddings.LayerNorm.weight",
        "bert.encoder.layer.0.attention.self.query.weight",
        "bert.encoder.layer.1.intermediate.dense.bias",
        "cls.predictions.transform.LayerNorm.bias",
    ] {
        let (_, var) = params
            .named_vars()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap();
        let g = grads.get(var.as_tensor()).unwrap().flatten_all()?;
        let orig = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let idx = 1;
        let eps = 1e-2f32;
        let shifted = |d: f32| -> anyhow::Result<f64> {
            let mut v = orig.clone();
            v[idx] += d;
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu)?)?;
            loss(&model)
        };
        let fd = (shifted(eps)? - shifted(-eps)?) / (2.0 * eps as f64);
        var.set(&Tensor::from_vec(orig, var.shape(), &Device::Cpu)?)?;
        let an = g.get(idx)?.to_scalar::<f32>()? as f64;
        assert!(
            (fd - an).abs() <= 2e-2 * an.abs().max(fd.abs()) + 1e-3,
            "{name}: analytic {an}, finite difference {fd}"
        );
    }
    Ok(())
}

#[test]
fn weights_round_trip_exactly_through_the_checkpoint_types() -> anyhow::Result<()> {
    let cfg = tiny_config();
    let bert = Bert::random(&cfg, Heads::ALL, Init::TEST, 11);
    let params = Params::from_bert(&bert, &Device::Cpu)?;
    let back = params.to_bert()?;
    assert_eq!(back, bert);
    // Unprefixed input comes back prefixed (BertForMaskedLM names), weights unchanged.
    let mut plain = bert.clone();
    plain.prefixed = false;
    let back = Params::from_bert(&plain, &Device::Cpu)?.to_bert()?;
    assert!(back.prefixed);
    assert_eq!(back.layers, bert.layers);
    assert_eq!(back.mlm, bert.mlm);
    Ok(())
}

#[test]
fn a_model_without_mlm_head_is_refused_or_given_a_fresh_one() -> anyhow::Result<()> {
    let cfg = tiny_config();
    let heads = Heads {
        mlm: false,
        pooler: true,
        nsp: false,
    };
    let bert = Bert::random(&cfg, heads, Init::TEST, 11);
    let err = Params::from_bert(&bert, &Device::Cpu).err().unwrap();
    assert!(err.to_string().contains("no MLM head"), "{err}");
    let p = Params::with_fresh_head(&bert, 3, &Device::Cpu)?;
    let back = p.to_bert()?;
    assert_eq!(back.layers, bert.layers);
    assert!(back.mlm.is_some());
    assert_eq!(back.pooler, bert.pooler);
    Ok(())
}

#[test]
fn dropout_is_real_in_training_and_off_in_eval() -> anyhow::Result<()> {
    let cfg = tiny_config();
    let bert = Bert::random(&cfg, Heads::MLM, Init::TEST, 2);
    let model = Params::from_bert(&bert, &Device::Cpu)?.model()?;
    let batch = SyntheticBatches::new(64, 4, 16, 3)
        .next_mlm()
        .to_device(&Device::Cpu)?;
    let scope = Scope::full(2);
    let run = |d: &mut Dropout| -> anyhow::Result<f32> {
        Ok(model.loss(&batch, scope, d)?.to_scalar::<f32>()?)
    };
    let e1 = run(&mut Dropout::eval())?;
    let e2 = run(&mut Dropout::eval())?;
    assert_eq!(e1, e2);
    let t1 = run(&mut Dropout::train(1))?;
    let t1b = run(&mut Dropout::train(1))?;
    let t2 = run(&mut Dropout::train(2))?;
    assert_eq!(t1, t1b, "seeded dropout is reproducible");
    assert_ne!(t1, t2);
    assert_ne!(t1, e1);
    // Inverted dropout keeps the expectation: mean of a large all-ones tensor stays near 1,
    // and about 10% of it is zeroed.
    let ones = Tensor::ones(100_000, candle_core::DType::F32, &Device::Cpu)?;
    let d = Dropout::train(9).apply(&ones, 0.1)?.to_vec1::<f32>()?;
    let zeros = d.iter().filter(|&&x| x == 0.0).count() as f64 / d.len() as f64;
    let mean = d.iter().map(|&x| x as f64).sum::<f64>() / d.len() as f64;
    assert!((zeros - 0.1).abs() < 0.005, "zeroed fraction {zeros}");
    assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
    Ok(())
}

/// In a stage-1 step the frozen bottom is not part of the autograd graph at all: its
/// parameters and the embeddings get no gradient entry (not merely a zero one), while the
/// trained layer and the head's own parameters do.
#[test]
fn stage1_backward_does_not_reach_the_frozen_part() -> anyhow::Result<()> {
    let cfg = BertConfig::new(64, 16, 3, 2, 32, 16);
    let bert = Bert::random(&cfg, Heads::MLM, Init::TEST, 4);
    let params = Params::from_bert(&bert, &Device::Cpu)?;
    let model = params.model()?;
    let batch = SyntheticBatches::new(64, 2, 16, 3)
        .next_mlm()
        .to_device(&Device::Cpu)?;
    // Sub-model of depth 2 training its top layer (layer 1); layer 2 is not run.
    let grads = model
        .loss(&batch, Scope::stage1(2, 1), &mut Dropout::train(1))?
        .backward()?;
    for (name, var) in params.named_vars() {
        let trained = name.starts_with("bert.encoder.layer.1.")
            || (name.starts_with("cls.predictions.") && !name.contains("decoder"));
        assert_eq!(
            grads.get(var.as_tensor()).is_some(),
            trained,
            "`{name}`: gradient present = {}",
            !trained
        );
    }
    Ok(())
}
