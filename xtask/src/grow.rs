//! `cargo xtask grow`: grow a checkpoint folder into a larger one, streaming tensor by tensor,
//! then verify it against the source with the reference forward pass.

use crate::pretrain::{DecayArg, ScheduleFlags};
use crate::verify::{VerifyArgs, print_verify};
use crate::{Usage, workspace_root};
use anyhow::{Context, Result};
use bert2bert_checkpoint::folder::{copy_files, write_config_json};
use bert2bert_checkpoint::safetensors::{FolderWriter, TensorSpec};
use bert2bert_checkpoint::{AtomicDir, CheckpointError, Dtype, Family, Model, read_model_dir};
use bert2bert_expand::{
    AkiScope, Depth, GrowOptions, GrowPlan, Growth, MapKind, Method, Target, verify,
};
use bert2bert_train::schedule::{SCHEDULE_FILE, TrainSchedule, untied_head};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `cargo xtask grow`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Source model folder (config.json + model.safetensors); default: the bundled model.
    #[arg(long)]
    pub source: Option<PathBuf>,
    /// Output folder, written atomically.
    #[arg(long, default_value = "out/grown")]
    pub out: PathBuf,
    /// Replace the output folder if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Target shape from a config.json (its layer, hidden, head and FFN sizes).
    #[arg(long, conflicts_with_all = ["layers", "hidden", "heads", "intermediate"])]
    pub target_config: Option<PathBuf>,
    /// Target layers (default: the source's).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Target hidden size (default: 1.5x the source's, rounded to whole heads).
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Target attention heads (default: hidden / the source's head size).
    #[arg(long)]
    pub heads: Option<usize>,
    /// Target FFN size (default: the source's FFN scaled like the hidden size).
    #[arg(long)]
    pub intermediate: Option<usize>,
    /// Target key/value heads (Llama family; default: the source's group size kept).
    #[arg(long, conflicts_with = "target_config")]
    pub kv_heads: Option<usize>,
    /// Largest weight file before the output is sharded, like transformers' max_shard_size
    /// (`5GB`, `500MB`, or bytes).
    #[arg(long, default_value = "5GB", value_parser = parse_size)]
    pub max_shard_size: u64,
    /// Width method: fpi (function-preserving) or aki (knowledge from the layer above).
    #[arg(long, default_value = "aki")]
    pub method: Method,
    /// Index map for new units: balanced or random; exact (GPT-2 only: copies + mean-units,
    /// function-preserving at any width ratio with --method fpi).
    #[arg(long, default_value = "balanced")]
    pub map: MapKind,
    /// What AKI fills from the layer above: internal (heads, FFN) or all (also hidden).
    #[arg(long, default_value = "internal")]
    pub aki_scope: AkiScope,
    /// Depth rule: stack (the paper's) or interleave; identity (GPT-2 only: interleaved blocks
    /// with zero output projections, function-preserving).
    #[arg(long, default_value = "stack")]
    pub depth: Depth,
    /// Seed of every index map.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Dtype of the written weights: f32, f16 or bf16 (default: the source's).
    #[arg(long)]
    pub dtype: Option<Dtype>,
    /// Skip the verification forward passes.
    #[arg(long)]
    pub no_verify: bool,
    /// Print a machine-readable JSON report on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub verify: VerifyArgs,
    #[command(flatten)]
    pub schedule: ScheduleArgs,
}

/// The two-stage training schedule written beside the grown model (`bert2bert_schedule.json`,
/// read by `pretrain --schedule` and by the PyTorch package); defaults as `pretrain`'s.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Training schedule (written to bert2bert_schedule.json)")]
pub struct ScheduleArgs {
    /// Optimizer steps of the whole run.
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// Steps of stage 1 (default: 1/8 of --steps; 0: single-stage).
    #[arg(long)]
    pub stage1_steps: Option<usize>,
    /// Layers trained per stage-1 sub-model (l_b).
    #[arg(long, default_value_t = 1)]
    pub lb: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Warmup steps (default: 5% of --steps).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Decay after warmup.
    #[arg(long, value_enum, default_value_t = DecayArg::Linear)]
    pub decay: DecayArg,
    /// AdamW weight decay (not on biases and LayerNorms).
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Seed of the sub-model sampler (and of the candle trainer's data and dropout).
    #[arg(long, default_value_t = 0)]
    pub train_seed: u64,
}

impl ScheduleArgs {
    /// The schedule for the grown `model` of `layers` layers.
    pub fn schedule(&self, source: &Model, layers: usize) -> Result<TrainSchedule> {
        TrainSchedule::new(
            source.family(),
            layers,
            untied_head(source),
            &self.train_config(),
        )
        .map_err(schedule_usage)
    }

    /// The schedule of a grown Llama-family model (`model_type`) with these parameters.
    pub fn llama_schedule(
        &self,
        model_type: &str,
        layers: usize,
        parameters: Vec<String>,
    ) -> Result<TrainSchedule> {
        TrainSchedule::for_llama(model_type, layers, parameters, &self.train_config())
            .map_err(schedule_usage)
    }

    /// The flags as a training configuration (the intervals belong to a trainer, not to the
    /// schedule, and are placeholders).
    fn train_config(&self) -> bert2bert_train::trainer::TrainConfig {
        let flags = ScheduleFlags {
            steps: self.steps,
            lr: self.lr,
            warmup: self.warmup,
            decay: self.decay,
            weight_decay: self.weight_decay,
            clip: self.clip,
            seed: self.train_seed,
            two_stage: Some((self.lb, self.stage1_steps)),
        };
        flags.train_config(1, 1, 1)
    }
}

fn schedule_usage(e: bert2bert_train::TrainError) -> anyhow::Error {
    Usage::new(format!("{e} (check the training schedule flags)")).into()
}

/// A size like transformers' `max_shard_size`: bytes, or a number with KB, MB, GB (powers of
/// 1000) or KiB, MiB, GiB (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 5GB, 500MB)"))?;
    let mult = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1u64,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KIB" => 1 << 10,
        "MIB" => 1 << 20,
        "GIB" => 1 << 30,
        _ => return Err(format!("`{s}`: unknown size unit `{unit}`")),
    };
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("`{s}`: the size must be positive"));
    }
    Ok((n * mult as f64) as u64)
}

/// The bundled source model, grown by default.
pub fn bundled_model() -> PathBuf {
    workspace_root().join("assets/bundled-bert")
}

/// The target shape from the flags, the target config, or the documented default
/// (1.5x width, same depth, head size fixed), for the source's family.
pub fn resolve_target(args: &Args, source: &Model) -> Result<Target> {
    let src = Target::of_model(source);
    let head_dim = src.hidden / src.heads.max(1);
    if let Some(path) = &args.target_config {
        return target_from_config(path, source.family());
    }
    let any = args.layers.is_some()
        || args.hidden.is_some()
        || args.heads.is_some()
        || args.intermediate.is_some();
    let hidden = match (args.hidden, args.heads) {
        (Some(h), _) => h,
        (None, Some(a)) => a * head_dim,
        // 1.5x, rounded to a whole number of heads so the head size stays fixed.
        (None, None) if !any => (src.hidden * 3 / 2).div_ceil(head_dim) * head_dim,
        (None, None) => src.hidden,
    };
    let heads = args.heads.unwrap_or(hidden / head_dim.max(1));
    let intermediate = args.intermediate.unwrap_or_else(|| {
        (src.intermediate as u128 * hidden as u128 / src.hidden as u128) as usize
    });
    Ok(Target {
        layers: args.layers.unwrap_or(src.layers),
        hidden,
        heads,
        intermediate,
    })
}

/// The target shape in a config.json, read with the field names of `family` (GPT-2:
/// `n_layer`, `n_embd`, `n_head`, `n_inner` with null or absent = 4 x `n_embd`).
fn target_from_config(path: &Path, family: Family) -> Result<Target> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the target config", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: malformed JSON", path.display()))?;
    if let Some(t) = v.get("model_type").and_then(serde_json::Value::as_str)
        && t != family.name()
    {
        return Err(Usage::new(format!(
            "{}: the target config is a {t} model but the source is {}",
            path.display(),
            family.name()
        ))
        .into());
    }
    let field = |k: &str| -> Result<usize> {
        v.get(k)
            .and_then(serde_json::Value::as_u64)
            .map(|x| x as usize)
            .ok_or_else(|| {
                anyhow::anyhow!("{}: field `{k}` missing or not an integer", path.display())
            })
    };
    Ok(match family {
        Family::Bert => Target {
            layers: field("num_hidden_layers")?,
            hidden: field("hidden_size")?,
            heads: field("num_attention_heads")?,
            intermediate: field("intermediate_size")?,
        },
        Family::Gpt2 => {
            let hidden = field("n_embd")?;
            let intermediate = match v.get("n_inner") {
                None | Some(serde_json::Value::Null) => 4 * hidden,
                Some(_) => field("n_inner")?,
            };
            Target {
                layers: field("n_layer")?,
                hidden,
                heads: field("n_head")?,
                intermediate,
            }
        }
    })
}

/// Runs `cargo xtask grow`.
pub fn run(args: Args) -> Result<()> {
    let source_dir = args.source.clone().unwrap_or_else(bundled_model);
    // Whatever --overwrite says: growing into (or around) the source would replace it.
    crate::refuse_overlap(
        "--out",
        &args.out,
        &[(&source_dir, "source folder (--source)")],
    )?;
    if crate::grow_llama::llama_kind(&source_dir).is_some() {
        return crate::grow_llama::run(args, &source_dir);
    }
    if args.kv_heads.is_some() {
        return Err(Usage::new(
            "--kv-heads is for Llama-family models (grouped-query attention); this source has none",
        )
        .into());
    }
    // Growth's scratch buffers and verification's forward passes allocate and free per tensor:
    // keep freed memory in the heap so later ones reuse touched pages (fresh pages are costly here).
    crate::pretrain::keep_freed_memory();
    let t0 = Instant::now();
    let source = read_model_dir(&source_dir)?;
    tracing::info!(seconds = t0.elapsed().as_secs_f64(), "source read");
    let target = resolve_target(&args, &source.model)?;
    let opts = GrowOptions {
        method: args.method,
        map: args.map,
        aki_scope: args.aki_scope,
        depth: args.depth,
        seed: args.seed,
    };
    ensure_growth_fits(&source.model, &target, &args)?;
    let plan = GrowPlan::new(&source.model, &target, &opts).map_err(Usage::from_expand)?;
    // Before anything is written: bad schedule flags leave no output behind.
    let schedule = args.schedule.schedule(&source.model, target.layers)?;
    let report = plan.report();
    let dtype = args.dtype.unwrap_or(source.dtype);
    let out = write_streamed(
        &Streamed {
            growth: &plan,
            dtype,
            schedule: Some(&schedule),
        },
        &source.path,
        &source.other_files,
        &args.out,
        args.overwrite,
        Some(args.max_shard_size),
    )?;
    let grow_s = t0.elapsed().as_secs_f64();
    let verified = if args.no_verify {
        None
    } else {
        let grown = read_model_dir(&out)?;
        Some(verify(&source.model, &grown.model, &args.verify.options())?)
    };
    print_outcome(&Outcome {
        source: &source_dir,
        out: &out,
        dtype,
        seconds: grow_s,
        target: None,
        report: &report,
        verified: verified.as_ref(),
        schedule: &schedule,
        json: args.json,
    })
}

/// What a growth did, for printing (BERT, GPT-2 and the Llama family alike).
pub struct Outcome<'a> {
    /// The source folder.
    pub source: &'a Path,
    /// The grown folder.
    pub out: &'a Path,
    /// The dtype written.
    pub dtype: Dtype,
    /// Seconds from start to the committed output.
    pub seconds: f64,
    /// The target shape, where the family reports it in the JSON.
    pub target: Option<serde_json::Value>,
    /// What was grown, per module.
    pub report: &'a bert2bert_expand::GrowReport,
    /// The verification, unless `--no-verify`.
    pub verified: Option<&'a bert2bert_expand::VerifyReport>,
    /// The schedule written beside the model.
    pub schedule: &'a TrainSchedule,
    /// JSON instead of text.
    pub json: bool,
}

/// Prints a growth's outcome as text or (`json`) one JSON object.
pub fn print_outcome(o: &Outcome<'_>) -> Result<()> {
    let schedule_path = o.out.join(SCHEDULE_FILE);
    if o.json {
        let mut v = serde_json::json!({
            "source": o.source,
            "out": o.out,
            "dtype": o.dtype.name(),
            "seconds": o.seconds,
            "grow": o.report,
            "verify": o.verified,
            "schedule": schedule_path,
        });
        if let Some(t) = &o.target {
            v["target"] = t.clone();
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("grew {} -> {}", o.source.display(), o.out.display());
        println!("{}", o.report.summary());
        println!(
            "wrote {} parameters as {} in {:.2} s",
            o.report.grown_parameters, o.dtype, o.seconds
        );
        if let Some(v) = o.verified {
            print_verify(v, o.report.expected_exact);
        }
        println!(
            "training schedule: {} ({} steps, stage 1 {} steps, l_b {})",
            schedule_path.display(),
            o.schedule.total_steps,
            o.schedule.stage1_steps,
            o.schedule.lb.unwrap_or(0)
        );
    }
    Ok(())
}

/// Refuses a growth whose peak memory exceeds what is available, before planning it (the plan
/// allocates per target layer). What `run` holds at its peak: the typed source, plus either the
/// two stream buffers of the largest grown tensor (the output is streamed, never held whole) or,
/// when verifying, the whole grown model read back; the index maps are a few bytes per unit
/// and not counted.
fn ensure_growth_fits(source: &Model, target: &Target, args: &Args) -> Result<()> {
    use bert2bert_checkpoint::memory::{self, human};
    let src = memory::sizes(source).f32_bytes();
    let grown = memory::sizes_with_shape(source, target.layers, target.hidden, target.intermediate);
    let streaming = src.saturating_add(grown.largest_f32_bytes().saturating_mul(2));
    let (needed, what) = if args.no_verify {
        (
            streaming,
            format!(
                "growing to {target} (the source in memory, the output streamed through two buffers of its largest tensor)"
            ),
        )
    } else {
        (
            streaming.max(src.saturating_add(grown.f32_bytes())),
            format!(
                "growing to {target} and verifying it (the source and the whole grown model in memory; with --no-verify about {})",
                human(streaming)
            ),
        )
    };
    Ok(memory::ensure_fits(&args.out, &what, needed)?)
}

/// What a growth writes: the plan of any family, the dtype, the training schedule beside it.
pub struct Streamed<'a> {
    /// The planned growth (BERT, GPT-2 or the Llama family).
    pub growth: &'a dyn Growth,
    /// The dtype of the written tensors.
    pub dtype: Dtype,
    /// The training schedule written beside the model, if any.
    pub schedule: Option<&'a TrainSchedule>,
}

/// `TensorSpec`s for (name, shape) pairs in `dtype`.
pub fn specs_of(tensors: &[(String, Vec<usize>)], dtype: Dtype) -> Vec<TensorSpec> {
    tensors
        .iter()
        .map(|(name, shape)| TensorSpec {
            name: name.clone(),
            dtype,
            shape: shape.clone(),
        })
        .collect()
}

/// Writes the grown model of `plan` into `out` atomically (see [`write_streamed`]), as one
/// `model.safetensors` below transformers' default shard size.
#[cfg(test)]
pub fn write_plan(
    plan: &GrowPlan<'_>,
    source_dir: &Path,
    other_files: &[PathBuf],
    out: &Path,
    dtype: Dtype,
    overwrite: bool,
    schedule: Option<&TrainSchedule>,
) -> Result<PathBuf> {
    write_streamed(
        &Streamed {
            growth: plan,
            dtype,
            schedule,
        },
        source_dir,
        other_files,
        out,
        overwrite,
        Some(bert2bert_checkpoint::safetensors::DEFAULT_MAX_SHARD_BYTES),
    )
}

/// Writes a grown model into `out` atomically: the safetensors headers are computed from the
/// shapes up front (sharded above `max_shard_bytes`), then each tensor is grown into one of two
/// reused buffers and written to its slot, so memory stays near what the grower reads plus
/// twice the largest tensor; then config, carried files, the training schedule, rename.
pub fn write_streamed(
    job: &Streamed<'_>,
    source_dir: &Path,
    other_files: &[PathBuf],
    out: &Path,
    overwrite: bool,
    max_shard_bytes: Option<u64>,
) -> Result<PathBuf> {
    let dir = AtomicDir::new(out, overwrite).map_err(|e| match e {
        CheckpointError::OutputExists { path } => anyhow::Error::from(Usage::new(format!(
            "{}: output folder already exists; pass --overwrite to replace it, or choose another --out",
            path.display()
        ))),
        other => other.into(),
    })?;
    let specs = specs_of(&job.growth.tensors(), job.dtype);
    let writer = FolderWriter::create(dir.path(), &specs, max_shard_bytes)?;
    let bar = progress(specs.len() as u64);
    let t = stream(job.growth, &specs, writer, &bar)?;
    bar.finish_and_clear();
    tracing::info!(
        grow_s = t.grow,
        write_s = t.write,
        fsync_s = t.fsync,
        "tensors written (NaN/Inf checks fused into the writes, growing overlapped with writing)"
    );
    write_config_json(dir.path(), job.growth.config_json(), job.dtype)?;
    // A schedule beside the source describes the source, not the grown model.
    let carried: Vec<PathBuf> = other_files
        .iter()
        .filter(|p| p.as_os_str() != SCHEDULE_FILE)
        .cloned()
        .collect();
    copy_files(source_dir, &carried, dir.path())?;
    if let Some(s) = job.schedule {
        s.write(&dir.path().join(SCHEDULE_FILE))?;
    }
    Ok(dir.commit()?)
}

/// Grows each tensor of `growth` (`specs`, in its order) and writes it with `writer`, then
/// fsyncs: a writer thread checks and writes tensor i while this thread grows tensor i + 1 into
/// the other of two buffers, so the writes (system time: page-cache copies) overlap the gathers.
fn stream(
    growth: &dyn Growth,
    specs: &[TensorSpec],
    mut writer: FolderWriter,
    bar: &ProgressBar,
) -> Result<StreamTimes> {
    use std::sync::mpsc;
    let max = growth.max_tensor_len();
    std::thread::scope(|s| {
        // Full buffers go to the writer, empty ones come back; two in flight at most.
        let (full_tx, full_rx) = mpsc::sync_channel::<(usize, Vec<f32>)>(1);
        let (free_tx, free_rx) = mpsc::channel::<Vec<f32>>();
        for _ in 0..2 {
            free_tx.send(vec![0f32; max]).expect("receiver alive");
        }
        let write = s.spawn(move || -> bert2bert_checkpoint::Result<(f64, f64)> {
            let mut t_write = 0f64;
            for (i, buf) in full_rx {
                let t = Instant::now();
                let spec = &specs[i];
                let n: usize = spec.shape.iter().product();
                writer.write_finite_f32(&spec.name, &spec.shape, &buf[..n])?;
                t_write += t.elapsed().as_secs_f64();
                // The grower may have stopped early on its own; nothing more to hand back.
                let _ = free_tx.send(buf);
            }
            let t = Instant::now();
            writer.finish()?;
            Ok((t_write, t.elapsed().as_secs_f64()))
        });
        let mut t_grow = 0f64;
        let mut failed = None;
        for (i, spec) in specs.iter().enumerate() {
            // No buffer back means the writer stopped on an error, which `join` reports.
            let Ok(mut buf) = free_rx.recv() else { break };
            let n: usize = spec.shape.iter().product();
            let t = Instant::now();
            if let Err(e) = growth.tensor_into(i, &mut buf[..n]) {
                failed =
                    Some(anyhow::Error::from(e).context(format!("growing tensor `{}`", spec.name)));
                break;
            }
            t_grow += t.elapsed().as_secs_f64();
            if full_tx.send((i, buf)).is_err() {
                break;
            }
            bar.inc(1);
        }
        drop(full_tx);
        let written = write.join().expect("writer thread panicked");
        if let Some(e) = failed {
            return Err(e);
        }
        let (write, fsync) = written?;
        Ok(StreamTimes {
            grow: t_grow,
            write,
            fsync,
        })
    })
}

/// Seconds spent in each part of [`stream`] (growing and writing overlap).
struct StreamTimes {
    grow: f64,
    write: f64,
    fsync: f64,
}

pub(crate) fn progress(len: u64) -> ProgressBar {
    // Only worth showing for checkpoints with many tensors; stays hidden when stderr is no terminal.
    if len < 200 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{spinner} growing [{bar:40}] {pos}/{len} tensors {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use bert2bert_checkpoint::BertConfig;
    use bert2bert_checkpoint::random::{Heads, Init};
    use bert2bert_checkpoint::safetensors::{TensorStore, WEIGHTS_FILE};

    fn plan_for(model: &Model) -> GrowPlan<'_> {
        let target = Target {
            layers: 4,
            hidden: 48,
            heads: 3,
            intermediate: 96,
        };
        GrowPlan::new(model, &target, &GrowOptions::default()).unwrap()
    }

    fn small_bert() -> Model {
        let cfg = BertConfig::new(40, 32, 2, 2, 64, 16);
        Model::Bert(bert2bert_checkpoint::Bert::random(
            &cfg,
            Heads::ALL,
            Init::TEST,
            3,
        ))
    }

    #[test]
    fn streaming_writes_the_same_file_as_writing_the_built_model() {
        let model = small_bert();
        let plan = plan_for(&model);
        let tmp = tempfile::tempdir().unwrap();
        let (out, built) = (tmp.path().join("out"), tmp.path().join("built"));
        for dtype in [Dtype::F32, Dtype::BF16] {
            write_plan(&plan, tmp.path(), &[], &out, dtype, true, None).unwrap();
            bert2bert_checkpoint::ModelDir::new(tmp.path().into(), plan.build(), dtype, vec![])
                .write(
                    &built,
                    &bert2bert_checkpoint::WriteOptions {
                        dtype: None,
                        overwrite: true,
                    },
                )
                .unwrap();
            let bytes = |d: &Path| std::fs::read(d.join(WEIGHTS_FILE)).unwrap();
            assert!(bytes(&out) == bytes(&built), "{dtype}");
            // More tensors than the stream's two buffers, each in its own slot.
            let store = TensorStore::open_dir(&out).unwrap();
            assert!(plan.len() > 2 && store.names().count() == plan.len());
            if dtype == Dtype::F32 {
                for i in 0..plan.len() {
                    assert!(store.read_f32(plan.name(i)).unwrap() == plan.tensor(i));
                }
            }
        }
    }

    #[test]
    fn a_non_finite_value_stops_the_stream_and_leaves_nothing() {
        let mut model = small_bert();
        let Model::Bert(b) = &mut model else {
            unreachable!()
        };
        b.layers[1].intermediate.weight[[5, 7]] = f32::NAN;
        let plan = plan_for(&model);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let err = write_plan(&plan, tmp.path(), &[], &out, Dtype::F32, false, None).unwrap_err();
        match err.downcast_ref::<CheckpointError>() {
            Some(CheckpointError::NonFinite { tensor, .. }) => {
                assert!(tensor.contains("intermediate.dense.weight"), "{tensor}")
            }
            _ => panic!("expected NonFinite, got {err:#}"),
        }
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}
