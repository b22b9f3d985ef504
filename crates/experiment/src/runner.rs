//! Training of every run: fresh, resumed or skipped, StackBERT's two phases, and the worker
//! processes of `--jobs`.

use crate::error::{checkpoint, io, json, pretty};
use crate::plan::{Method, Plan, SourceSpec, run_name, source_run_name};
use crate::sources::{DataInfo, FamilyData, SourceInfo, params_of, source_of};
use crate::{ExperimentError, METRICS_COPY_DIR, Options, SOURCES_FILE};
use bert2bert_checkpoint::{Bert, BertConfig, read_model_dir};
use bert2bert_expand::{Depth, GrowOptions, MapKind, Method as GrowMethod, baselines, grow};
use bert2bert_train::bert::Params;
use bert2bert_train::trainer::{
    CHECKPOINT_DIR, Continuation, METRICS_FILE, MODEL_DIR, ModelParams, STATE_FILE, TrainConfig,
    Trainer, TrainerState, read_metrics,
};
use bert2bert_train::{FreshConfig, device};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// Runs the training of one experiment's setting.
pub(crate) struct Runner<'a> {
    /// The plan.
    pub(crate) plan: &'a Plan,
    /// The setting's data.
    pub(crate) data: &'a FamilyData,
    /// The training device.
    pub(crate) dev: Device,
    /// `<out>/runs`.
    pub(crate) runs: PathBuf,
    /// Stop unfinished runs at this step.
    pub(crate) stop_at: Option<usize>,
    /// Hide the progress bars.
    pub(crate) quiet: bool,
}

/// Whether the run in `dir` has finished all `steps` (its final model is written).
pub fn finished(dir: &Path, steps: usize) -> bool {
    dir.join(MODEL_DIR).join("config.json").is_file()
        && read_state(dir).is_ok_and(|s| s.step >= steps)
}

/// Whether the recorded copy of a run's metrics (`<out>/metrics/<name>.jsonl`, which every
/// report writes and results folders commit) reaches `steps`: a run finished in an earlier
/// session whose `runs/` folder is gone (a clean clone) is not trained again, so a preset longer
/// than one session completes over several.
pub(crate) fn recorded_done(out: &Path, name: &str, steps: usize) -> bool {
    let path = out.join(METRICS_COPY_DIR).join(format!("{name}.jsonl"));
    path.is_file()
        && bert2bert_train::trainer::read_metrics(&path)
            .is_ok_and(|m| m.last().is_some_and(|last| last.step >= steps))
}

/// The trainer state of the checkpoint of the run in `dir`.
fn read_state(dir: &Path) -> Result<TrainerState, ExperimentError> {
    let path = dir.join(CHECKPOINT_DIR).join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?;
    serde_json::from_str(&text).map_err(json(format!("parsing {}", path.display())))
}

fn load_bert(dir: &Path) -> Result<Bert, ExperimentError> {
    let md = read_model_dir(dir).map_err(checkpoint(format!("reading {}", dir.display())))?;
    md.model.as_bert().cloned().ok_or_else(|| {
        ExperimentError::Invalid(format!("{}: not a BERT checkpoint", dir.display()))
    })
}

impl Runner<'_> {
    fn bar(&self, name: &str, total: usize, at: usize) -> ProgressBar {
        let bar = if self.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(total as u64)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>28} {elapsed_precise} [{bar:25}] {pos}/{len} {msg} (eta {eta})",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        bar.set_prefix(name.to_owned());
        bar.set_position(at as u64);
        bar
    }

    /// Trains `trainer` until `until` (or `--stop-at`), from the data position of its step.
    fn drive(
        &self,
        trainer: &mut Trainer,
        name: &str,
        until: usize,
    ) -> Result<bool, ExperimentError> {
        let stop = self.stop_at.map_or(until, |s| s.min(until));
        let cfg = trainer.config().clone();
        let vocab = trainer.params().vocab_size();
        let mut batcher = self.data.batcher(self.plan, vocab, cfg.seed)?;
        batcher.skip(trainer.step())?;
        let bar = self.bar(name, cfg.steps, trainer.step());
        let mut last_eval = None;
        trainer.run(batcher.as_mut(), &self.data.eval, stop, &mut |r| {
            if r.eval_loss.is_some() {
                last_eval = r.eval_loss;
            }
            bar.set_position(r.step as u64);
            bar.set_message(format!(
                "stage {} eval {} {:.0} tok/s",
                r.stage,
                last_eval.map_or("-".into(), |e| format!("{e:.3}")),
                r.tokens_per_s
            ));
        })?;
        bar.finish_and_clear();
        Ok(trainer.step() >= until)
    }

    /// Trains (or resumes, or skips) the run `name` until step `until` of `cfg.steps`; `init`
    /// builds the starting weights of a fresh run. Returns whether it reached `until`.
    pub(crate) fn train(
        &self,
        name: &str,
        cfg: &TrainConfig,
        until: usize,
        init: &dyn Fn() -> Result<ModelParams, ExperimentError>,
    ) -> Result<bool, ExperimentError> {
        let dir = self.runs.join(name);
        let mut trainer = if dir.join(CHECKPOINT_DIR).join(STATE_FILE).is_file() {
            let state = read_state(&dir)?;
            if state.step >= until && (until < cfg.steps || finished(&dir, cfg.steps)) {
                tracing::info!(run = name, "already done");
                return Ok(true);
            }
            Trainer::resume(&dir, Some(cfg), self.dev.clone()).map_err(|source| {
                ExperimentError::Resume {
                    dir: dir.clone(),
                    source: Box::new(source),
                }
            })?
        } else {
            if dir.exists() {
                // Started but never checkpointed: nothing to keep.
                std::fs::remove_dir_all(&dir).map_err(io(format!("removing {}", dir.display())))?;
            }
            Trainer::new(
                cfg.clone(),
                init()?,
                self.dev.clone(),
                &dir,
                self.data.carry(),
            )?
        };
        self.drive(&mut trainer, name, until)
    }

    /// StackBERT: `stack_steps` of a half-depth model of the target width, stacked to full
    /// depth, then the rest of the run on one continuous schedule (optimizer moments restart).
    fn train_stackbert(
        &self,
        name: &str,
        target: &BertConfig,
        seed: u64,
    ) -> Result<bool, ExperimentError> {
        let plan = self.plan;
        let dir = self.runs.join(name);
        let cfg = plan.train_config(plan.steps, seed, false, plan.scratch_lr());
        let phase2_started =
            read_state(&dir).is_ok_and(|s| s.step >= plan.stack_steps && s.step > 0);
        if !phase2_started {
            let half = target.with_shape(
                (target.num_hidden_layers / 2).max(1),
                target.hidden_size,
                target.num_attention_heads,
                target.intermediate_size,
            );
            let p1 = format!("{name}/phase1");
            // Phase 1 runs on the whole run's schedule and stops where stacking happens.
            let done = self.train(&p1, &cfg, plan.stack_steps, &|| {
                Ok(Params::fresh(&half, seed, &self.dev)?.into())
            })?;
            if !done {
                return Ok(false);
            }
            let p1_dir = self.runs.join(&p1);
            let shallow = load_bert(&p1_dir.join(CHECKPOINT_DIR))?;
            let p1_state = read_state(&p1_dir)?;
            let deep = baselines::stack(&shallow, target.num_hidden_layers)
                .map_err(ExperimentError::from_expand)?;
            // Phase 2 starts with the stacked weights and fresh optimizer moments, its counters
            // continuing phase 1's; from that first checkpoint it trains (and resumes) like any
            // other run.
            Trainer::continuing(
                cfg.clone(),
                Params::from_bert(&deep, &self.dev)?,
                self.dev.clone(),
                &dir,
                self.data.carry(),
                Continuation {
                    counters: p1_state.counters(),
                    metrics: &read_metrics(&p1_dir.join(METRICS_FILE))?,
                    eval: &self.data.eval,
                },
            )?;
        }
        self.train(name, &cfg, plan.steps, &|| {
            Err(ExperimentError::Invalid(format!(
                "{}: phase 2 has no checkpoint to resume",
                dir.display()
            )))
        })
    }
}

/// Trains (or resumes, or skips) every run of `plan` in `out`: the sources first, then the
/// target runs, here or in worker processes (`args.jobs`); a worker (`args.only_run`) trains
/// its one run. Returns whether every run reached its last step.
pub(crate) fn train_all(
    plan: &Plan,
    args: &Options,
    root: &Path,
    out: &Path,
) -> Result<bool, ExperimentError> {
    let assets = args.assets_dir();
    let dev = device(args.device)?;
    let mut data: Vec<FamilyData> = Vec::new();
    let mut infos = Vec::new();
    let mut complete = true;
    let worker = args.only_run.as_deref();
    // With --jobs > 1 this process trains the sources and hands the target runs to workers,
    // each run's name with whether it is a scratch run.
    let mut pending: Vec<(bool, String)> = Vec::new();
    for setting in &plan.settings {
        let arch = setting.arch;
        let names = setting.seeds.iter().flat_map(|&seed| {
            setting
                .methods
                .iter()
                .map(move |&m| run_name(setting, m, seed))
        });
        if let Some(w) = worker
            && !names.clone().any(|n| n == w)
        {
            infos.push(None);
            continue;
        }
        // Each family's corpus is tokenized once per corpus and tokenizer, when its first setting comes.
        let k = match data.iter().position(|d| {
            d.arch == arch
                && d.tokenizer == setting.tokenizer
                && d.corpus == setting.corpus
                && d.mask_prob == setting.mask_prob
        }) {
            Some(k) => k,
            None => {
                data.push(FamilyData::load(&assets, plan, setting)?);
                data.len() - 1
            }
        };
        let data = &data[k];
        let runner = Runner {
            plan,
            data,
            dev: dev.clone(),
            runs: out.join("runs"),
            stop_at: args.stop_at,
            quiet: args.quiet,
        };
        if worker.is_some()
            && let SourceSpec::Pretrain { shape, steps } = &setting.source
            && !finished(&runner.runs.join(source_run_name(arch, *shape)), *steps)
        {
            return Err(ExperimentError::Invalid(format!(
                "--only-run: the source of setting {} is not trained yet",
                setting.name
            )));
        }
        let Some(src) = source_of(&setting.source, arch, &runner, root)? else {
            complete = false;
            infos.push(None);
            continue;
        };
        let src_params = params_of(&src.model, 0, &runner.dev)?;
        infos.push(Some(SourceInfo {
            shape: crate::Shape::of_model(&src.model),
            origin: src.origin.clone(),
            flops: src.flops,
            final_loss: src.final_loss,
            // The source's loss on the held-out set every target is scored on.
            eval_loss: Some(bert2bert_train::trainer::eval_loss(
                &src_params,
                &data.eval,
                &runner.dev,
            )?),
            data: Some(DataInfo::of(data, plan, &assets)?),
        }));
        if worker.is_none() {
            let path = out.join(SOURCES_FILE);
            std::fs::write(&path, pretty(&infos))
                .map_err(io(format!("writing {}", path.display())))?;
        }
        if src_params.max_positions() < plan.seq_len {
            return Err(ExperimentError::Invalid(format!(
                "the source of setting {} has {} positions, the experiment uses sequences of {}",
                setting.name,
                src_params.max_positions(),
                plan.seq_len
            )));
        }
        if src_params.vocab_size() < data.vocab {
            return Err(ExperimentError::Invalid(format!(
                "the source of setting {} has a vocabulary of {}, the tokenizer {}",
                setting.name,
                src_params.vocab_size(),
                data.vocab
            )));
        }
        drop(src_params);
        let target = setting.target.target();
        for &seed in &setting.seeds {
            for &method in &setting.methods {
                let name = run_name(setting, method, seed);
                if worker.is_some_and(|w| w != name) {
                    continue;
                }
                if !runner.runs.join(&name).exists() && recorded_done(out, &name, plan.steps) {
                    tracing::info!(
                        run = name,
                        "finished earlier: its recorded metrics reach the last step"
                    );
                    continue;
                }
                if worker.is_none() && args.jobs > 1 {
                    if !pending.iter().any(|(_, n)| *n == name) {
                        pending.push((method == Method::Scratch, name));
                    }
                    continue;
                }
                let growth =
                    |m: GrowMethod, map: MapKind| -> Result<ModelParams, ExperimentError> {
                        // The exact map is the function-preserving method: where the target is
                        // deeper, its new blocks are identities (pre-LN only) instead of stacked
                        // copies, so it starts exactly at the source's loss.
                        let depth = if map == MapKind::Exact {
                            Depth::Identity
                        } else {
                            Depth::Stack
                        };
                        let opts = GrowOptions {
                            method: m,
                            map,
                            depth,
                            seed,
                            ..GrowOptions::default()
                        };
                        let (model, _) = grow(&src.model, &target, &opts)
                            .map_err(ExperimentError::from_expand)?;
                        params_of(&model, seed, &runner.dev)
                    };
                let bert_source = || {
                    src.model.as_bert().ok_or_else(|| {
                        ExperimentError::Invalid(format!(
                            "{name}: a BERT baseline needs a BERT source"
                        ))
                    })
                };
                let cfg = plan.train_config(
                    plan.steps,
                    seed,
                    method == Method::Bert2Bert,
                    plan.lr_of(setting, method),
                );
                let done = match method {
                    Method::Scratch => runner.train(&name, &cfg, plan.steps, &|| {
                        setting
                            .target
                            .fresh(arch, data.vocab, plan.seq_len, seed, &runner.dev)
                    })?,
                    Method::DirectCopy => runner.train(&name, &cfg, plan.steps, &|| {
                        let b = baselines::direct_copy(bert_source()?, &target, seed)
                            .map_err(ExperimentError::from_expand)?;
                        Ok(Params::with_fresh_head(&b, seed, &runner.dev)?.into())
                    })?,
                    Method::StackBert => {
                        let FreshConfig::Bert(b) =
                            setting.target.config(arch, data.vocab, plan.seq_len)
                        else {
                            return Err(ExperimentError::Invalid(format!(
                                "{name}: StackBERT is a BERT baseline"
                            )));
                        };
                        runner.train_stackbert(&name, &b, seed)?
                    }
                    Method::Fpi => runner.train(&name, &cfg, plan.steps, &|| {
                        growth(GrowMethod::Fpi, MapKind::Balanced)
                    })?,
                    Method::Exact => runner.train(&name, &cfg, plan.steps, &|| {
                        growth(GrowMethod::Fpi, MapKind::Exact)
                    })?,
                    Method::Aki | Method::Bert2Bert => {
                        runner.train(&name, &cfg, plan.steps, &|| {
                            growth(GrowMethod::Aki, MapKind::Balanced)
                        })?
                    }
                };
                complete &= done;
            }
        }
    }
    if !pending.is_empty() {
        let pending = scratch_first(pending);
        complete &= run_workers(args, out, &pending, plan.steps)?;
    }
    Ok(complete)
}

/// The worker queue with the scratch runs first, the rest in plan order: scratch's final loss
/// decides the regime verdict and every saving, so a stopped or slow run learns it first.
fn scratch_first(pending: Vec<(bool, String)>) -> Vec<String> {
    let (scratch, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(s, _)| *s);
    scratch.into_iter().chain(rest).map(|(_, n)| n).collect()
}

/// Trains `names` in worker processes (`--only-run`), `args.jobs` at a time, each with an equal
/// share of the cores; their output goes to `<out>/logs/<name>.log`. Returns whether every run
/// reached its last step.
fn run_workers(
    args: &Options,
    out: &Path,
    names: &[String],
    steps: usize,
) -> Result<bool, ExperimentError> {
    use std::process::{Child, Command, Stdio};
    let exe = std::env::current_exe().map_err(io("locating this program for the workers"))?;
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs).map_err(io(format!("creating {}", logs.display())))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / args.jobs).max(1);
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(names.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} runs {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let spawn = |name: &str| -> Result<Child, ExperimentError> {
        let log = logs.join(format!("{name}.log"));
        let creating = || io(format!("creating {}", log.display()));
        let file = std::fs::File::create(&log).map_err(creating())?;
        let stdout = file.try_clone().map_err(creating())?;
        let mut cmd = Command::new(&exe);
        cmd.args(&args.worker_command)
            .args(["--preset", args.preset.name()])
            .arg("--out")
            .arg(out)
            .args(["--only-run", name, "--quiet"])
            .arg("--device")
            .arg(args.device.name())
            .env("RAYON_NUM_THREADS", threads.to_string())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(file);
        if let Some(seeds) = &args.seeds {
            let list: Vec<String> = seeds.iter().map(u64::to_string).collect();
            cmd.arg("--seeds").arg(list.join(","));
        }
        if let Some(steps) = args.steps {
            cmd.arg("--steps").arg(steps.to_string());
        }
        if let Some(stop) = args.stop_at {
            cmd.arg("--stop-at").arg(stop.to_string());
        }
        if let Some(assets) = &args.assets {
            cmd.arg("--assets").arg(assets);
        }
        tracing::info!(run = name, threads, "starting a worker");
        cmd.spawn()
            .map_err(io(format!("starting a worker for {name}")))
    };
    let mut queue = names.iter();
    let mut running: Vec<(String, Child)> = Vec::new();
    let mut failed = Vec::new();
    loop {
        while running.len() < args.jobs
            && let Some(name) = queue.next()
        {
            running.push((name.clone(), spawn(name)?));
        }
        if running.is_empty() {
            break;
        }
        let mut k = 0;
        while k < running.len() {
            let status = running[k]
                .1
                .try_wait()
                .map_err(io(format!("waiting for the worker of {}", running[k].0)))?;
            if let Some(status) = status {
                let (name, _) = running.swap_remove(k);
                if !status.success() {
                    failed.push(format!(
                        "{name} ({status}; log {})",
                        logs.join(format!("{name}.log")).display()
                    ));
                }
                bar.inc(1);
                bar.set_message(format!("last: {name}"));
            } else {
                k += 1;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    bar.finish_and_clear();
    if !failed.is_empty() {
        return Err(ExperimentError::Workers { failed });
    }
    Ok(names
        .iter()
        .all(|n| finished(&out.join("runs").join(n), steps)))
}

#[cfg(test)]
mod tests {
    use super::scratch_first;

    #[test]
    fn workers_take_the_scratch_runs_first_and_the_rest_in_plan_order() {
        let pending = vec![
            (true, "bert-scratch-s0".to_string()),
            (false, "bert-fpi-s0".to_string()),
            (false, "bert-aki-s0".to_string()),
            (true, "bert-scratch-s1".to_string()),
            (false, "bert-fpi-s1".to_string()),
            (true, "bert-scratch-s2".to_string()),
        ];
        assert_eq!(
            scratch_first(pending),
            [
                "bert-scratch-s0",
                "bert-scratch-s1",
                "bert-scratch-s2",
                "bert-fpi-s0",
                "bert-aki-s0",
                "bert-fpi-s1"
            ]
        );
    }
}
