//! End to end: BPE stream -> causal batcher -> candle GPT-2 -> AdamW, loss falls.

use std::path::Path;

use bert2bert_checkpoint::Gpt2Config;
use bert2bert_train::bert::{Dropout, Scope};
use bert2bert_train::data::causal::{
    BPE_TOKENIZER_FILE, CausalBatcher, CausalConfig, causal_eval_batches, load_causal_split,
};
use bert2bert_train::data::{self, Split};
use bert2bert_train::gpt2::{CausalDeviceBatch, Gpt2Params, no_weight_decay};
use bert2bert_train::optim::{AdamW, AdamWConfig};
use candle_core::Device;

/// The repository's `assets/`, from the run-time `CARGO_MANIFEST_DIR` that cargo sets for tests
/// (a shared target dir may hold a library built from another checkout, whose compile-time
/// path is gone), falling back to the compile-time one.
fn assets_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(|d| std::path::PathBuf::from(d).join("../../assets"))
        .unwrap_or_else(bert2bert_train::data::default_assets_dir)
}

fn config(vocab: usize) -> Gpt2Config {
    let raw = serde_json::json!({
        "model_type": "gpt2", "vocab_size": vocab, "n_positions": 32, "n_embd": 32,
        "n_layer": 2, "n_head": 2, "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5, "tie_word_embeddings": true,
    });
    let serde_json::Value::Object(raw) = raw else {
        unreachable!()
    };
    Gpt2Config::from_raw(Path::new("config.json"), raw).unwrap()
}

#[test]
fn adamw_steps_on_the_corpus_lower_the_held_out_loss() -> anyhow::Result<()> {
    let assets = assets_dir();
    let tok = data::load_tokenizer(&assets.join(BPE_TOKENIZER_FILE))?;
    let vocab = tok.get_vocab_size(true);
    // The validation split is small and enough for a smoke run; the eval windows come from the
    // same stream but the claim is only that optimisation works end to end.
    let stream = load_causal_split(&data::default_corpus_dir(), &tok, Split::Valid)?;
    let cfg = CausalConfig {
        seq_len: 32,
        batch_size: 8,
        vocab_size: vocab,
        seed: 1,
    };
    let eval: Vec<CausalDeviceBatch> = causal_eval_batches(&stream, &cfg, 16)?
        .iter()
        .map(|b| CausalDeviceBatch::new(b, &Device::Cpu))
        .collect::<candle_core::Result<_>>()?;
    let mut batches = CausalBatcher::new(stream, cfg)?;
    let params = Gpt2Params::fresh(&config(vocab), 3, &Device::Cpu)?;
    let model = params.model()?;
    let eval_loss = || -> anyhow::Result<f32> {
        let mut sum = 0.0;
        for b in &eval {
            sum += model
                .loss(b, Scope::full(2), &mut Dropout::eval())?
                .to_scalar::<f32>()?;
        }
        Ok(sum / eval.len() as f32)
    };
    let before = eval_loss()?;
    let mut opt = AdamW::new(params.named_vars(), AdamWConfig::default(), no_weight_decay);
    for step in 0..40 {
        let b = CausalDeviceBatch::new(&batches.next_batch(), &Device::Cpu)?;
        let loss = model.loss(&b, Scope::full(2), &mut Dropout::train(step))?;
        opt.step(&loss.backward()?, 3e-3, Some(1.0))?;
    }
    let after = eval_loss()?;
    println!("held-out loss {before:.3} -> {after:.3}");
    // A fresh model sits near ln V = 9.01; 40 steps learn at least the unigram statistics.
    assert!((before - (vocab as f32).ln()).abs() < 0.5, "{before}");
    assert!(after < before - 1.5, "{before} -> {after}");
    Ok(())
}

#[test]
fn a_stage1_step_leaves_the_frozen_part_bit_identical() -> anyhow::Result<()> {
    let params = Gpt2Params::fresh(&config(64), 4, &Device::Cpu)?;
    let model = params.model()?;
    let stream: Vec<u32> = (0..200u32).map(|i| (i * 13 + 5) % 64).collect();
    let mut batches = CausalBatcher::new(
        stream,
        CausalConfig {
            seq_len: 16,
            batch_size: 2,
            vocab_size: 64,
            seed: 2,
        },
    )?;
    let before: Vec<(String, Vec<f32>)> = params
        .named_vars()
        .iter()
        .map(|(n, v)| Ok((n.clone(), v.as_tensor().flatten_all()?.to_vec1()?)))
        .collect::<candle_core::Result<_>>()?;
    let mut opt = AdamW::new(params.named_vars(), AdamWConfig::default(), no_weight_decay);
    let b = CausalDeviceBatch::new(&batches.next_batch(), &Device::Cpu)?;
    let loss = model.loss(&b, Scope::stage1(2, 1), &mut Dropout::eval())?;
    let info = opt.step(&loss.backward()?, 1e-2, None)?;
    // Block 1 (12 tensors) and ln_f (2) move; embeddings and block 0 do not.
    assert_eq!(info.updated, 14);
    for ((name, var), (_, old)) in params.named_vars().iter().zip(&before) {
        let now: Vec<f32> = var.as_tensor().flatten_all()?.to_vec1()?;
        let trained = name.starts_with("transformer.h.1.") || name.starts_with("transformer.ln_f");
        assert_eq!(now != *old, trained, "{name}");
    }
    Ok(())
}
