//! The training loop: stage-1 steps change only the sampled sub-model's top layers and the head,
//! a run split in two equals an uninterrupted one, checkpoints load as Hugging Face folders,
//! metrics lines carry the documented fields.

use bert2bert_checkpoint::random::{Heads, Init};
use bert2bert_checkpoint::{Bert, BertConfig, read_model_dir};
use bert2bert_train::bert::{Params, Scope};
use bert2bert_train::flops;
use bert2bert_train::optim::{AdamWConfig, Decay, Schedule};
use bert2bert_train::trainer::{
    Batch, BatchSource, CHECKPOINT_DIR, CarryFiles, Continuation, Counters, METRICS_FILE,
    MODEL_DIR, Metrics, ModelParams, STATE_FILE, SyntheticBatches, TrainConfig, Trainer,
    TrainerState, TwoStage, eval_loss, read_metrics, submodel_depths,
};
use candle_core::Device;
use std::collections::BTreeMap;

const VOCAB: usize = 64;

fn config() -> BertConfig {
    BertConfig::new(VOCAB, 16, 3, 2, 32, 16)
}

fn train_config(steps: usize, two_stage: Option<TwoStage>) -> TrainConfig {
    TrainConfig {
        steps,
        schedule: Schedule {
            peak: 3e-3,
            warmup: 2,
            total: steps,
            decay: Decay::Linear,
        },
        adamw: AdamWConfig::default(),
        max_grad_norm: Some(1.0),
        seed: 17,
        eval_every: 3,
        log_every: 1,
        checkpoint_every: 100,
        two_stage,
    }
}

fn source() -> SyntheticBatches {
    SyntheticBatches::new(VOCAB, 4, 16, 5)
}

fn eval_set() -> Vec<Batch> {
    let mut s = SyntheticBatches::new(VOCAB, 4, 16, 99);
    (0..2).map(|_| s.next_batch().unwrap()).collect()
}

fn snapshot(params: &ModelParams) -> BTreeMap<String, Vec<f32>> {
    params
        .named_vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

fn trainer(dir: &std::path::Path, cfg: TrainConfig, seed: u64) -> Trainer {
    let bert = Bert::random(&config(), Heads::MLM, Init::FRESH, seed);
    let params = Params::from_bert(&bert, &Device::Cpu).unwrap();
    Trainer::new(cfg, params, Device::Cpu, dir, CarryFiles::default()).unwrap()
}

#[test]
fn submodel_depths_follow_the_spec() {
    assert_eq!(submodel_depths(12, 3), vec![3, 6, 9, 12]);
    assert_eq!(submodel_depths(4, 3), vec![3, 4]);
    assert_eq!(submodel_depths(3, 3), vec![3]);
    assert_eq!(submodel_depths(2, 1), vec![1, 2]);
}

/// After each stage-1 step exactly the top l_b layers of the sampled sub-model and the MLM head
/// (transform, its LayerNorm, output bias) changed; embeddings and every other layer did not.
#[test]
fn stage1_step_changes_only_top_layers_and_head() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TwoStage {
        lb: 1,
        stage1_steps: 6,
    };
    let mut t = trainer(dir.path(), train_config(8, Some(ts)), 1);
    let mut src = source();
    let mut seen = std::collections::BTreeSet::new();
    for step in 0..6 {
        let (stage, scope) = t.scope_at(step);
        assert_eq!(stage, 1);
        assert_eq!(scope.trained_layers(), 1);
        seen.insert(scope.layers);
        let before = snapshot(t.params());
        t.train_step(&src.next_batch()?)?;
        let after = snapshot(t.params());
        let trained_layer = scope.layers - 1;
        for (name, b) in &before {
            let changed = b != &after[name];
            let expect = name.starts_with(&format!("bert.encoder.layer.{trained_layer}."))
                || name.starts_with("cls.predictions.");
            assert_eq!(
                changed, expect,
                "step {step} (sub-model {scope:?}): `{name}` changed = {changed}"
            );
        }
    }
    assert!(seen.len() > 1, "sub-models sampled: {seen:?}");
    // Stage 2 trains everything.
    let (stage, scope) = t.scope_at(6);
    assert_eq!((stage, scope), (2, Scope::full(3)));
    let before = snapshot(t.params());
    t.train_step(&src.next_batch()?)?;
    let after = snapshot(t.params());
    for (name, b) in &before {
        if name.contains("position_embeddings") || name.contains("token_type") {
            continue; // rows for unused positions / types get no gradient
        }
        assert_ne!(b, &after[name], "stage 2 left `{name}` unchanged");
    }
    Ok(())
}

/// A run of 4 + 3 steps through a checkpoint equals an uninterrupted run of 7 steps.
#[test]
fn resumed_run_matches_uninterrupted_run() -> anyhow::Result<()> {
    let ts = Some(TwoStage {
        lb: 2,
        stage1_steps: 3,
    });
    let cfg = train_config(7, ts);
    let eval = eval_set();
    let a = tempfile::tempdir()?;
    let mut t = trainer(a.path(), cfg.clone(), 4);
    t.run(&mut source(), &eval, usize::MAX, &mut |_| {})?;
    let full = read_metrics(&a.path().join(METRICS_FILE))?;

    let b = tempfile::tempdir()?;
    let mut t = trainer(b.path(), cfg.clone(), 4);
    t.run(&mut source(), &eval, 4, &mut |_| {})?;
    drop(t);
    assert!(!b.path().join(MODEL_DIR).exists());
    let mut t = Trainer::resume(b.path(), Some(&cfg), Device::Cpu)?;
    assert_eq!(t.step(), 4);
    let mut src = source();
    src.skip(4)?;
    t.run(&mut src, &eval, usize::MAX, &mut |_| {})?;
    let split = read_metrics(&b.path().join(METRICS_FILE))?;

    assert_eq!(full.len(), split.len());
    for (x, y) in full.iter().zip(&split) {
        assert_eq!(
            (x.step, x.tokens, x.flops, x.stage),
            (y.step, y.tokens, y.flops, y.stage)
        );
        assert!((x.lr - y.lr).abs() < 1e-12);
        for (p, q) in [(x.train_loss, y.train_loss), (x.eval_loss, y.eval_loss)] {
            match (p, q) {
                (Some(p), Some(q)) => assert!((p - q).abs() < 1e-5, "step {}: {p} vs {q}", x.step),
                (None, None) => {}
                _ => panic!("step {}: {p:?} vs {q:?}", x.step),
            }
        }
    }
    // Final weights agree too.
    let m1 = read_model_dir(&a.path().join(MODEL_DIR))?;
    let m2 = read_model_dir(&b.path().join(MODEL_DIR))?;
    let (w1, w2) = (
        &m1.model.as_bert().unwrap().layers[2].query.weight,
        &m2.model.as_bert().unwrap().layers[2].query.weight,
    );
    let diff = (w1 - w2).mapv(f32::abs).fold(0f32, |m, &x| m.max(x));
    assert!(diff < 1e-5, "weights differ by {diff}");
    // Resuming with other settings is refused.
    let mut other = cfg.clone();
    other.seed += 1;
    let err = Trainer::resume(b.path(), Some(&other), Device::Cpu)
        .err()
        .unwrap();
    assert!(err.to_string().contains("different settings"), "{err}");
    Ok(())
}

/// A run that continues another's counters with new weights (StackBERT's stacked phase) starts
/// with a consistent folder: the other run's log up to the step plus the new weights' held-out
/// loss there, a checkpoint at that step, no final model; trained on in memory it equals the
/// same start resumed from that checkpoint, bit for bit.
#[test]
fn a_continued_run_starts_at_the_counters_and_resumes_exactly() -> anyhow::Result<()> {
    let cfg = train_config(9, None);
    let eval = eval_set();
    // The run continued: 4 of its steps, then stopped (checkpointed).
    let a = tempfile::tempdir()?;
    let mut t = trainer(a.path(), cfg.clone(), 4);
    t.run(&mut source(), &eval, 4, &mut |_| {})?;
    drop(t);
    let state: TrainerState = serde_json::from_str(&std::fs::read_to_string(
        a.path().join(CHECKPOINT_DIR).join(STATE_FILE),
    )?)?;
    let counters = state.counters();
    assert_eq!(counters.step, 4);
    assert!(counters.tokens > 0 && counters.flops > 0 && counters.wall_s > 0.0);
    let mut prior = read_metrics(&a.path().join(METRICS_FILE))?;
    // A line past the step (written after the checkpoint, before a crash) is not carried over.
    prior.push(Metrics {
        step: 5,
        ..prior.last().unwrap().clone()
    });

    let new_params = || {
        let bert = Bert::random(&config(), Heads::MLM, Init::FRESH, 8);
        Params::from_bert(&bert, &Device::Cpu).unwrap()
    };
    let start = |dir: &std::path::Path| -> anyhow::Result<Trainer> {
        // What an earlier attempt may have left.
        std::fs::create_dir_all(dir.join(MODEL_DIR))?;
        std::fs::write(dir.join(METRICS_FILE), "stale\n")?;
        Ok(Trainer::continuing(
            cfg.clone(),
            new_params(),
            Device::Cpu,
            dir,
            CarryFiles::default(),
            Continuation {
                counters,
                metrics: &prior,
                eval: &eval,
            },
        )?)
    };
    let b = tempfile::tempdir()?;
    let mut direct = start(b.path())?;
    assert_eq!(direct.step(), 4);
    assert!(!b.path().join(MODEL_DIR).exists());
    let log = read_metrics(&b.path().join(METRICS_FILE))?;
    assert_eq!(&log[..log.len() - 1], &prior[..prior.len() - 1]);
    let first = log.last().unwrap();
    let fresh_loss = eval_loss(&new_params().into(), &eval, &Device::Cpu)?;
    assert_eq!(
        first,
        &Metrics {
            step: 4,
            tokens: counters.tokens,
            flops: counters.flops,
            train_loss: None,
            eval_loss: Some(fresh_loss),
            lr: cfg.schedule.lr(3),
            stage: 2,
            wall_s: counters.wall_s,
        }
    );
    let stored: TrainerState = serde_json::from_str(&std::fs::read_to_string(
        b.path().join(CHECKPOINT_DIR).join(STATE_FILE),
    )?)?;
    assert_eq!(stored.counters(), counters);
    assert_eq!(stored.pending_loss, (0.0, 0));
    assert!(stored.optimizer_steps.values().all(|&t| t == 0));

    // Trained on directly, and resumed from its first checkpoint: the same run.
    let mut src = source();
    src.skip(4)?;
    direct.run(&mut src, &eval, usize::MAX, &mut |_| {})?;
    let c = tempfile::tempdir()?;
    drop(start(c.path())?);
    let mut resumed = Trainer::resume(c.path(), Some(&cfg), Device::Cpu)?;
    assert_eq!(resumed.step(), 4);
    let mut src = source();
    src.skip(4)?;
    resumed.run(&mut src, &eval, usize::MAX, &mut |_| {})?;
    assert_eq!(snapshot(direct.params()), snapshot(resumed.params()));
    let no_wall = |dir: &std::path::Path| -> anyhow::Result<Vec<Metrics>> {
        Ok(read_metrics(&dir.join(METRICS_FILE))?
            .into_iter()
            .map(|m| Metrics { wall_s: 0.0, ..m })
            .collect())
    };
    let (x, y) = (no_wall(b.path())?, no_wall(c.path())?);
    assert_eq!(x, y);
    let steps: Vec<usize> = x.iter().map(|m| m.step).collect();
    assert_eq!(steps, [0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 9]);
    assert!(b.path().join(MODEL_DIR).join("config.json").is_file());

    // A continuation must start inside the run, after step 0.
    for step in [0, 10] {
        let err = Trainer::continuing(
            cfg.clone(),
            new_params(),
            Device::Cpu,
            tempfile::tempdir()?.path(),
            CarryFiles::default(),
            Continuation {
                counters: Counters { step, ..counters },
                metrics: &prior,
                eval: &eval,
            },
        )
        .err()
        .unwrap();
        assert!(
            err.to_string().contains(&format!("not at step {step}")),
            "{err}"
        );
    }
    Ok(())
}

#[test]
fn metrics_and_checkpoints_are_complete() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = Some(TwoStage {
        lb: 1,
        stage1_steps: 2,
    });
    let mut cfg = train_config(5, ts);
    cfg.log_every = 2;
    let mut t = trainer(dir.path(), cfg.clone(), 3);
    let mut reports = Vec::new();
    t.run(&mut source(), &eval_set(), usize::MAX, &mut |r| {
        reports.push(*r)
    })?;
    assert_eq!(reports.len(), 5);
    let text = std::fs::read_to_string(dir.path().join(METRICS_FILE))?;
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap())?;
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "step",
            "tokens",
            "flops",
            "train_loss",
            "eval_loss",
            "lr",
            "stage",
            "wall_s"
        ]
    );
    let m = read_metrics(&dir.path().join(METRICS_FILE))?;
    // Step 0 (eval), 2 (log), 3 (eval), 4 (log), 5 (last).
    assert_eq!(
        m.iter().map(|x| x.step).collect::<Vec<_>>(),
        [0, 2, 3, 4, 5]
    );
    assert!(m[0].train_loss.is_none() && m[0].eval_loss.is_some());
    assert!(m[1].eval_loss.is_none() && m[3].eval_loss.is_none());
    // A line's stage is that of the step that ends it: steps 1-2 are stage 1.
    assert_eq!(
        m.iter().map(|x| x.stage).collect::<Vec<_>>(),
        [1, 1, 2, 2, 2]
    );
    assert_eq!(m[4].tokens, 5 * 4 * 16);
    // Cumulative FLOPs: the 2 stage-1 steps cost less than full steps of the same batch.
    let full_step = flops::train_step(&config(), 4, 16, 10, Scope::full(3));
    assert!(m[4].flops < 5 * full_step * 2);
    assert!(
        m.windows(2)
            .all(|w| w[1].flops > w[0].flops && w[1].wall_s >= w[0].wall_s)
    );
    // The checkpoint and the final model are Hugging Face folders of the trained weights.
    let final_model = read_model_dir(&dir.path().join(MODEL_DIR))?;
    let ckpt = read_model_dir(&dir.path().join(CHECKPOINT_DIR))?;
    assert_eq!(final_model.model, ckpt.model);
    let (saved, live) = (final_model.model.as_bert().unwrap(), t.to_bert()?);
    assert_eq!(
        (&saved.embeddings, &saved.layers, &saved.mlm),
        (&live.embeddings, &live.layers, &live.mlm)
    );
    assert_ne!(
        saved.layers,
        Bert::random(&config(), Heads::MLM, Init::FRESH, 3).layers
    );
    Ok(())
}

#[test]
fn bad_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bert = Bert::random(&config(), Heads::MLM, Init::FRESH, 1);
    let params = || Params::from_bert(&bert, &Device::Cpu).unwrap();
    let mut cfg = train_config(
        5,
        Some(TwoStage {
            lb: 4,
            stage1_steps: 2,
        }),
    );
    let err = Trainer::new(
        cfg.clone(),
        params(),
        Device::Cpu,
        dir.path(),
        CarryFiles::default(),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("--lb 4"), "{err}");
    cfg.two_stage = Some(TwoStage {
        lb: 1,
        stage1_steps: 9,
    });
    assert!(
        Trainer::new(
            cfg.clone(),
            params(),
            Device::Cpu,
            dir.path(),
            CarryFiles::default()
        )
        .is_err()
    );
    cfg.two_stage = None;
    cfg.schedule.total = 4;
    assert!(
        Trainer::new(
            cfg,
            params(),
            Device::Cpu,
            dir.path(),
            CarryFiles::default()
        )
        .is_err()
    );
}

/// Training on a learnable stream (every sequence the same few tokens) drives the loss down.
#[test]
fn loss_falls_on_a_learnable_batch() -> anyhow::Result<()> {
    struct Repeat(Batch);
    impl BatchSource for Repeat {
        fn next_batch(&mut self) -> bert2bert_train::Result<Batch> {
            Ok(self.0.clone())
        }
    }
    let batch = source().next_batch()?;
    let dir = tempfile::tempdir()?;
    let mut cfg = train_config(30, None);
    cfg.schedule.peak = 1e-2;
    cfg.eval_every = 30;
    let mut t = trainer(dir.path(), cfg, 8);
    let eval = vec![batch.clone()];
    let before = t.eval_loss(&eval)?;
    t.run(&mut Repeat(batch), &eval, usize::MAX, &mut |_| {})?;
    let after = t.eval_loss(&eval)?;
    assert!(after < before - 1.0, "loss {before} -> {after}");
    Ok(())
}

/// The trainer runs GPT-2 on causal batches, refuses masked batches for it, and its stage-1
/// steps train only the sampled sub-model's top block and `ln_f` (the tied head stays frozen).
#[test]
fn gpt2_trains_on_causal_batches_only() -> anyhow::Result<()> {
    use bert2bert_checkpoint::Gpt2Config;
    use bert2bert_train::data::causal::{CausalBatcher, CausalConfig};
    use bert2bert_train::gpt2::Gpt2Params;
    let dir = tempfile::tempdir()?;
    let cfg = Gpt2Config::new(VOCAB, 16, 3, 2, 16);
    let params = Gpt2Params::fresh(&cfg, 2, &Device::Cpu)?;
    let ts = TwoStage {
        lb: 1,
        stage1_steps: 4,
    };
    let mut t = Trainer::new(
        train_config(6, Some(ts)),
        params,
        Device::Cpu,
        dir.path(),
        CarryFiles::default(),
    )?;
    let mlm = source().next_batch()?;
    let err = t.train_step(&mlm).unwrap_err().to_string();
    assert!(err.contains("masked-LM batch"), "{err}");
    let stream: Vec<u32> = (0..400u32).map(|i| (i * 7 + 3) % VOCAB as u32).collect();
    let mut src = CausalBatcher::new(
        stream,
        CausalConfig {
            seq_len: 16,
            batch_size: 2,
            vocab_size: VOCAB,
            seed: 1,
        },
    )?;
    for step in 0..4 {
        let (stage, scope) = t.scope_at(step);
        assert_eq!(stage, 1);
        let before = snapshot(t.params());
        t.train_step(&src.next_batch().into())?;
        let after = snapshot(t.params());
        let top = scope.layers - 1;
        for (name, b) in &before {
            let expect = name.starts_with(&format!("transformer.h.{top}."))
                || name.starts_with("transformer.ln_f.");
            assert_eq!(b != &after[name], expect, "step {step}: `{name}`");
        }
    }
    assert_eq!(t.step(), 4);
    assert!(matches!(
        t.to_model()?,
        bert2bert_checkpoint::Model::Gpt2(_)
    ));
    Ok(())
}
