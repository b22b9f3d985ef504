//! The schedule file says what the candle trainer does: its parameter names are the model's
//! vars, and each sub-model's `trainable` list is exactly the set of vars that get a gradient in
//! a stage-1 step of that sub-model (both families, tied and untied heads); `check` refuses a
//! schedule the trainer would not follow.

use bert2bert_checkpoint::random::{Heads, Init};
use bert2bert_checkpoint::{Bert, BertConfig, Gpt2, Gpt2Config};
use bert2bert_train::bert::{Dropout, Params, Scope};
use bert2bert_train::data::causal::CausalBatch;
use bert2bert_train::gpt2::{CausalDeviceBatch, Gpt2Params};
use bert2bert_train::optim::{AdamWConfig, Decay, Schedule};
use bert2bert_train::schedule::{SCHEDULE_FILE, TrainSchedule};
use bert2bert_train::trainer::{ModelParams, SyntheticBatches, TrainConfig, TwoStage};
use candle_core::{Device, Tensor};
use std::collections::BTreeSet;
use std::path::Path;

const VOCAB: usize = 40;

fn cfg(lb: usize) -> TrainConfig {
    TrainConfig {
        steps: 10,
        schedule: Schedule {
            peak: 1e-3,
            warmup: 1,
            total: 10,
            decay: Decay::Linear,
        },
        adamw: AdamWConfig::default(),
        max_grad_norm: Some(1.0),
        seed: 1,
        eval_every: 5,
        log_every: 1,
        checkpoint_every: 10,
        two_stage: Some(TwoStage {
            lb,
            stage1_steps: 4,
        }),
    }
}

fn bert(untied: bool) -> ModelParams {
    let mut b = Bert::random(
        &BertConfig::new(VOCAB, 16, 3, 2, 32, 16),
        Heads::MLM,
        Init::TEST,
        2,
    );
    if untied {
        let m = b.mlm.as_mut().unwrap();
        m.decoder = Some(b.embeddings.word.t().to_owned());
    }
    Params::from_bert(&b, &Device::Cpu).unwrap().into()
}

fn gpt2(tied: bool) -> ModelParams {
    let raw = serde_json::json!({
        "model_type": "gpt2", "vocab_size": VOCAB, "n_positions": 16, "n_embd": 16, "n_layer": 3,
        "n_head": 2, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": tied,
    });
    let serde_json::Value::Object(raw) = raw else {
        unreachable!()
    };
    let c = Gpt2Config::from_raw(Path::new("tiny/config.json"), raw).unwrap();
    Gpt2Params::from_gpt2(&Gpt2::random(&c, Init::TEST, 3), &Device::Cpu)
        .unwrap()
        .into()
}

/// Names of the vars that get a gradient from one loss through `scope`.
fn trained(params: &ModelParams, scope: Scope) -> BTreeSet<String> {
    let dev = Device::Cpu;
    let loss: Tensor = match params {
        ModelParams::Bert(p) => {
            let b = SyntheticBatches::new(VOCAB, 2, 8, 4).next_mlm();
            p.model()
                .unwrap()
                .loss(&b.to_device(&dev).unwrap(), scope, &mut Dropout::eval())
                .unwrap()
        }
        ModelParams::Gpt2(p) => {
            let ids: Vec<u32> = (0..17u32).map(|i| (i * 7 + 3) % VOCAB as u32).collect();
            let b = CausalBatch {
                input_ids: ids[..16].to_vec(),
                targets: ids[1..].to_vec(),
                batch_size: 2,
                seq_len: 8,
            };
            p.model()
                .unwrap()
                .loss(
                    &CausalDeviceBatch::new(&b, &dev).unwrap(),
                    scope,
                    &mut Dropout::eval(),
                )
                .unwrap()
        }
    };
    let grads = loss.backward().unwrap();
    params
        .named_vars()
        .into_iter()
        .filter(|(_, v)| grads.get(v.as_tensor()).is_some())
        .map(|(n, _)| n)
        .collect()
}

#[test]
fn trainable_lists_are_what_the_candle_trainer_trains() {
    for (what, params) in [
        ("bert tied", bert(false)),
        ("bert untied", bert(true)),
        ("gpt2 tied", gpt2(true)),
        ("gpt2 untied", gpt2(false)),
    ] {
        for lb in [1, 2] {
            let s = TrainSchedule::for_params(&params, &cfg(lb)).unwrap();
            let vars: Vec<String> = params.named_vars().into_iter().map(|(n, _)| n).collect();
            assert_eq!(
                s.parameters, vars,
                "{what}: parameters are the vars, sorted"
            );
            let all: BTreeSet<String> = vars.iter().cloned().collect();
            assert_eq!(trained(&params, Scope::full(3)), all, "{what}: stage 2");
            let depths: Vec<usize> = s.submodels.iter().map(|m| m.depth).collect();
            assert_eq!(depths, if lb == 1 { vec![1, 2, 3] } else { vec![2, 3] });
            for m in &s.submodels {
                let want: BTreeSet<String> = m.trainable.iter().cloned().collect();
                let got = trained(&params, Scope::stage1(m.depth, lb));
                assert_eq!(got, want, "{what}, l_b {lb}, depth {}", m.depth);
                assert_eq!(m.frozen_below, m.depth - lb);
            }
            s.check(&params, Path::new(SCHEDULE_FILE)).unwrap();
        }
    }
}

#[test]
fn check_refuses_a_schedule_the_trainer_would_not_follow() {
    let params = bert(false);
    let s = TrainSchedule::for_params(&params, &cfg(1)).unwrap();
    let err = |s: &TrainSchedule, p: &ModelParams| {
        s.check(p, Path::new("grown/bert2bert_schedule.json"))
            .unwrap_err()
            .to_string()
    };
    let mut edited = s.clone();
    edited.submodels[1].trainable.pop();
    let e = err(&edited, &params);
    assert!(
        e.contains("grown/bert2bert_schedule.json") && e.contains("depth 2"),
        "{e}"
    );
    let e = err(&s, &gpt2(true));
    assert!(e.contains("bert model, the checkpoint is gpt2"), "{e}");
    let e = err(&s, &bert(true));
    assert!(e.contains("cls.predictions.decoder.weight"), "{e}");
    let mut edited = s.clone();
    edited.no_weight_decay.pop();
    assert!(err(&edited, &params).contains("no_weight_decay"));
}
