//! The experiment's numbers: curves from the runs' metrics, the crossing of the scratch model's
//! final loss, savings with and without the source's cost, `summary.json`, `table.md` and the
//! generated part of docs/results.md.

use crate::error::{io, json, pretty};
use crate::plan::{Method, Plan, Preset, Shape, run_name};
use crate::{ExperimentError, METRICS_COPY_DIR, SUMMARY_FILE, SourceInfo, TABLE_FILE};
use bert2bert_train::trainer::{METRICS_FILE, read_metrics};
use bert2bert_train::{Arch, DeviceKind};
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// The machine a summary was made on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model (from /proc/cpuinfo where available).
    pub cpu: String,
    /// Logical cores available to the process.
    pub cores: usize,
    /// Operating system and architecture.
    pub os: String,
    /// The training device.
    pub device: String,
}

impl Machine {
    /// The machine this process runs on.
    pub fn detect(device: DeviceKind) -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|s| s.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            device: match device {
                DeviceKind::Cpu => "cpu".into(),
                DeviceKind::Cuda => "cuda:0".into(),
            },
        }
    }
}

/// One held-out evaluation of a run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Steps done.
    pub step: usize,
    /// Training FLOPs spent.
    pub flops: f64,
    /// Held-out loss (MLM for BERT, next-token for GPT-2).
    pub loss: f64,
    /// Wall-clock seconds of training.
    pub wall_s: f64,
}

/// FLOPs at which `curve` first reaches `target` (loss at or below it), linearly interpolated
/// between the two evaluations around the crossing; `None` if it never does.
pub fn crossing(curve: &[Point], target: f64) -> Option<f64> {
    let i = curve.iter().position(|p| p.loss <= target)?;
    if i == 0 {
        return Some(curve[0].flops);
    }
    let (a, b) = (curve[i - 1], curve[i]);
    let t = (a.loss - target) / (a.loss - b.loss);
    Some(a.flops + t * (b.flops - a.flops))
}

/// A number over seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Seeds with a value.
    pub n: usize,
    /// Seeds in all.
    pub of: usize,
    /// Mean of the values.
    pub mean: Option<f64>,
    /// Smallest value.
    pub min: Option<f64>,
    /// Largest value.
    pub max: Option<f64>,
}

impl Aggregate {
    /// Aggregates `values` (`None`: the seed has no value).
    pub fn of(values: &[Option<f64>]) -> Self {
        let v: Vec<f64> = values.iter().flatten().copied().collect();
        let n = v.len();
        Self {
            n,
            of: values.len(),
            mean: (n > 0).then(|| v.iter().sum::<f64>() / n as f64),
            min: v.iter().copied().reduce(f64::min),
            max: v.iter().copied().reduce(f64::max),
        }
    }
}

/// One run's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run's seed.
    pub seed: u64,
    /// Its folder under `runs/`.
    pub run: String,
    /// Whether it trained all its steps.
    pub complete: bool,
    /// Steps done.
    pub steps: usize,
    /// Held-out loss before training (StackBERT: of the half-depth model).
    pub start_loss: Option<f64>,
    /// Last held-out loss.
    pub final_loss: Option<f64>,
    /// The loss to reach: the final loss of scratch with the same seed.
    pub target_loss: Option<f64>,
    /// Training FLOPs spent in all (stage 1 and StackBERT's shallow phase included).
    pub total_flops: f64,
    /// FLOPs at which the run first reached the target loss.
    pub flops_to_target: Option<f64>,
    /// 1 - flops_to_target / scratch's total FLOPs.
    pub saving: Option<f64>,
    /// The same with the source's pre-training FLOPs added to the method's.
    pub saving_with_source: Option<f64>,
    /// Wall-clock seconds of training.
    pub wall_s: f64,
    /// Every evaluation.
    pub curve: Vec<Point>,
}

/// One method over its seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodSummary {
    /// The method.
    pub method: Method,
    /// Its label.
    pub label: String,
    /// The paper's saving for this method and setting, where it reports one.
    pub paper_saving: Option<f64>,
    /// Saving over seeds.
    pub saving: Aggregate,
    /// Saving including the source's cost, over seeds (methods that use the source).
    pub saving_with_source: Option<Aggregate>,
    /// Every seed's run.
    pub runs: Vec<RunSummary>,
    /// FLOPs to reach each of the setting's `iso_levels` (mean over the seeds that reach it).
    #[serde(default)]
    pub iso_flops: Vec<Aggregate>,
}

/// Scratch must end at least this far (nats) below the lowest mean start loss of FPI, AKI and
/// bert2BERT: the paper's regime, where scratch is trained far past what the source knew.
pub const MIN_MARGIN: f64 = 0.1;
/// A source must be at least this far (nats) below the unigram entropy: it has learned more than
/// word frequencies (growing a barely trained model is no better than scratch, G_stack).
pub const MIN_SOURCE_GAIN: f64 = 0.5;
/// Scratch's curve flattens: its drop over the last 10% of the steps is at most this fraction
/// of its drop from 10% of the steps to the end.
pub const MAX_LATE_DROP: f64 = 0.1;
/// No target run sees its training data more often than this.
pub const MAX_EPOCHS: f64 = 4.0;
/// Targets have at least this many layers.
pub const MIN_TARGET_LAYERS: usize = 4;

/// Whether a setting is in the paper's regime, with the numbers behind the verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Regime {
    /// Every condition holds: savings are printed.
    pub in_regime: bool,
    /// The conditions that fail (or could not be checked), in words.
    pub reasons: Vec<String>,
    /// Scratch's mean final loss.
    pub scratch_final: Option<f64>,
    /// The lowest mean start loss of FPI, AKI and bert2BERT.
    pub lowest_grown_start: Option<f64>,
    /// `lowest_grown_start - scratch_final`.
    pub margin: Option<f64>,
    /// `source_loss - scratch_final`: how far scratch ends below what the source already knew
    /// (absent in summaries made before it was checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_margin: Option<f64>,
    /// Scratch's drop over its last 10% of steps / its drop from 10% to the end (mean over seeds).
    pub late_drop: Option<f64>,
    /// The source's held-out loss on the experiment's held-out set.
    pub source_loss: Option<f64>,
    /// The unigram entropy of the training split under the setting's tokenizer.
    pub unigram_entropy: Option<f64>,
    /// Passes over the training data of one target run.
    pub epochs_per_run: Option<f64>,
}

/// The loss of `curve` at `step`, linearly interpolated between evaluations.
fn loss_at(curve: &[Point], step: f64) -> Option<f64> {
    let i = curve.iter().position(|p| p.step as f64 >= step)?;
    if i == 0 {
        return Some(curve[0].loss);
    }
    let (a, b) = (curve[i - 1], curve[i]);
    let t = (step - a.step as f64) / (b.step as f64 - a.step as f64);
    Some(a.loss + t * (b.loss - a.loss))
}

/// The regime check of one setting (docs/experiment.md, "The paper's regime").
pub fn regime(
    plan: &Plan,
    target: Shape,
    source: Option<&SourceInfo>,
    methods: &[MethodSummary],
) -> Regime {
    let mean_of = |m: Method, f: &dyn Fn(&RunSummary) -> Option<f64>| {
        methods
            .iter()
            .find(|x| x.method == m)
            .and_then(|x| mean(x.runs.iter().map(f)))
    };
    let scratch_runs: Vec<&RunSummary> = methods
        .iter()
        .filter(|m| m.method == Method::Scratch)
        .flat_map(|m| &m.runs)
        .filter(|r| r.complete)
        .collect();
    let scratch_final = mean(scratch_runs.iter().map(|r| r.final_loss));
    let lowest_grown_start = [Method::Fpi, Method::Aki, Method::Bert2Bert]
        .into_iter()
        .filter_map(|m| mean_of(m, &|r| r.start_loss))
        .reduce(f64::min);
    let margin = lowest_grown_start.zip(scratch_final).map(|(g, s)| g - s);
    let n = plan.steps as f64;
    let late_drop = mean(scratch_runs.iter().map(|r| {
        let end = r.curve.last()?.loss;
        let early = loss_at(&r.curve, 0.1 * n)? - end;
        let late = loss_at(&r.curve, 0.9 * n)? - end;
        (early > 0.0).then(|| late / early)
    }));
    let data = source.and_then(|s| s.data.as_ref());
    // Older summaries scored a bundled source only on its own held-out set.
    let source_loss = source.and_then(|s| s.eval_loss.or(s.final_loss));
    let unigram_entropy = data.map(|d| d.unigram_entropy);
    let epochs_per_run = data.map(|d| d.epochs_per_run);
    let source_margin = source_loss.zip(scratch_final).map(|(l, s)| l - s);
    let mut reasons = Vec::new();
    match margin {
        None => reasons.push("scratch or the grown runs have not finished".to_owned()),
        Some(m) if m <= 0.0 => reasons.push(format!(
            "scratch ends at {:.3}, above the lowest grown start {:.3}: the grown models start \
             past scratch's final loss, every saving would read 100% before the first step",
            scratch_final.unwrap_or(f64::NAN),
            lowest_grown_start.unwrap_or(f64::NAN)
        )),
        Some(m) if m < MIN_MARGIN => reasons.push(format!(
            "scratch ends at {:.3}, only {m:.3} nats below the lowest grown start {:.3} (needs {MIN_MARGIN})",
            scratch_final.unwrap_or(f64::NAN),
            lowest_grown_start.unwrap_or(f64::NAN)
        )),
        Some(_) => {}
    }
    // The grown models' start alone can mislead: growth that is not function-preserving (a
    // stacked post-LN BERT) starts well above its source and can recover it within a few
    // steps. If scratch does not end clearly below the source itself, the saving measures
    // that recovery (the source's knowledge), not the method.
    if let Some(m) = source_margin
        && margin.is_some_and(|g| g > 0.0)
        && m < MIN_MARGIN
    {
        reasons.push(format!(
            "scratch ends at {:.3}, {} the source's own held-out loss {:.3} (needs {MIN_MARGIN} \
             below): the source already knows what scratch learns in this budget, so a grown \
             model that recovers the source reads a saving near 100% whatever its method",
            scratch_final.unwrap_or(f64::NAN),
            if m <= 0.0 {
                format!("{:.3} above", -m)
            } else {
                format!("only {m:.3} below")
            },
            source_loss.unwrap_or(f64::NAN)
        ));
    }
    match late_drop {
        Some(d) if d > MAX_LATE_DROP => reasons.push(format!(
            "scratch's curve has not flattened: {:.0}% of its drop comes in the last 10% of the steps (at most {:.0}%)",
            100.0 * d,
            100.0 * MAX_LATE_DROP
        )),
        Some(_) => {}
        None if margin.is_some() => {
            reasons.push("scratch's curve is too short to tell whether it flattened".to_owned())
        }
        None => {}
    }
    match source_loss.zip(unigram_entropy) {
        Some((l, h)) if h - l < MIN_SOURCE_GAIN => reasons.push(format!(
            "the source's held-out loss {l:.3} is only {:.3} nats below the unigram entropy {h:.3} (needs {MIN_SOURCE_GAIN})",
            h - l
        )),
        Some(_) => {}
        None => reasons.push("the source's loss or the unigram entropy is unknown".to_owned()),
    }
    if let Some(e) = epochs_per_run
        && e > MAX_EPOCHS
    {
        reasons.push(format!(
            "a target run sees its data {e:.1} times (at most {MAX_EPOCHS})"
        ));
    }
    if target.layers < MIN_TARGET_LAYERS {
        reasons.push(format!(
            "the target has {} layers (at least {MIN_TARGET_LAYERS})",
            target.layers
        ));
    }
    Regime {
        in_regime: reasons.is_empty(),
        reasons,
        scratch_final,
        lowest_grown_start,
        margin,
        source_margin,
        late_drop,
        source_loss,
        unigram_entropy,
        epochs_per_run,
    }
}

/// One setting's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SettingSummary {
    /// Short name.
    pub name: String,
    /// Model family of the setting.
    #[serde(default)]
    pub arch: Arch,
    /// Title.
    pub title: String,
    /// The source (absent until it exists).
    pub source: Option<SourceInfo>,
    /// The target shape.
    pub target: Shape,
    /// One entry per method, in table order.
    pub methods: Vec<MethodSummary>,
    /// Whether the setting is in the paper's regime (absent in older summaries).
    #[serde(default)]
    pub regime: Option<Regime>,
    /// Loss levels from the source's start down to scratch's final loss, for the iso-loss curves.
    #[serde(default)]
    pub iso_levels: Vec<f64>,
}

/// `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The preset.
    pub preset: Preset,
    /// The command that reproduces it.
    pub command: String,
    /// Where it ran (training device and host).
    pub machine: Machine,
    /// Whether every run finished.
    pub complete: bool,
    /// The plan.
    pub plan: Plan,
    /// The settings.
    pub settings: Vec<SettingSummary>,
}

/// The paper's savings (spec section 9): BERT_BASE from S(12, 512) for the width setting,
/// from S(6, 512) for width and depth, GPT_BASE from a 12 x 512 source for the GPT-2 setting
/// (only bert2BERT reported for the last two).
pub fn paper_saving(setting: &str, method: Method) -> Option<f64> {
    match (setting, method) {
        ("width" | "depth" | "gpt2", Method::Scratch) => Some(0.0),
        ("gpt2", Method::Bert2Bert) => Some(0.47),
        ("width", Method::DirectCopy) => Some(0.122),
        ("width", Method::StackBert) => Some(0.243),
        ("width", Method::Fpi) => Some(0.304),
        ("width", Method::Aki) => Some(0.384),
        ("width", Method::Bert2Bert) => Some(0.452),
        ("depth", Method::Bert2Bert) => Some(0.239),
        _ => None,
    }
}

/// A run's evaluations, with its last step, total FLOPs and wall seconds.
type Curve = (Vec<Point>, usize, f64, f64);

fn curve_of(dir: &Path, copy: &Path) -> Result<Option<Curve>, ExperimentError> {
    let mut path = dir.join(METRICS_FILE);
    if !path.is_file() {
        // StackBERT before stacking: only its shallow phase has metrics.
        path = dir.join("phase1").join(METRICS_FILE);
        if !path.is_file() {
            // A results folder without its (uncommitted) runs/: the committed copy of the
            // metrics, so a clean clone can regenerate the report.
            path = copy.to_owned();
            if !path.is_file() {
                return Ok(None);
            }
        }
    }
    let metrics = read_metrics(&path)?;
    let Some(last) = metrics.last() else {
        return Ok(None);
    };
    let curve = metrics
        .iter()
        .filter_map(|m| {
            m.eval_loss.map(|loss| Point {
                step: m.step,
                flops: m.flops as f64,
                loss,
                wall_s: m.wall_s,
            })
        })
        .collect();
    Ok(Some((curve, last.step, last.flops as f64, last.wall_s)))
}

/// Builds the summary of the runs in `<out>/runs`.
pub fn summarize(
    plan: &Plan,
    out: &Path,
    sources: &[Option<SourceInfo>],
    machine: Machine,
) -> Result<Summary, ExperimentError> {
    let runs = out.join("runs");
    let mut complete = true;
    let mut settings = Vec::new();
    for (si, setting) in plan.settings.iter().enumerate() {
        let source = sources.get(si).cloned().flatten();
        let source_flops = source.as_ref().and_then(|s| s.flops).map(|f| f as f64);
        let mut methods = Vec::new();
        // Scratch first: its final loss and FLOPs are every other run's yardstick.
        let mut scratch: Vec<Option<(f64, f64)>> = Vec::new();
        for &method in &setting.methods {
            let mut list = Vec::new();
            for (k, &seed) in setting.seeds.iter().enumerate() {
                let name = run_name(setting, method, seed);
                let dir = runs.join(&name);
                let copy = out.join(METRICS_COPY_DIR).join(format!("{name}.jsonl"));
                let Some((curve, steps, total_flops, wall_s)) = curve_of(&dir, &copy)? else {
                    complete = false;
                    if method == Method::Scratch {
                        scratch.push(None);
                    }
                    continue;
                };
                let done = steps >= plan.steps;
                complete &= done;
                let final_loss = curve.last().map(|p| p.loss);
                if method == Method::Scratch {
                    scratch.push(done.then(|| final_loss.map(|l| (l, total_flops))).flatten());
                }
                let yardstick = scratch.get(k).copied().flatten();
                let target_loss = yardstick.map(|y| y.0);
                let flops_to_target = target_loss.and_then(|t| crossing(&curve, t));
                let saving = yardstick
                    .zip(flops_to_target)
                    .map(|((_, sf), f)| 1.0 - f / sf);
                let saving_with_source = if method.uses_source() {
                    yardstick
                        .zip(flops_to_target)
                        .zip(source_flops)
                        .map(|(((_, sf), f), s)| 1.0 - (f + s) / sf)
                } else {
                    None
                };
                list.push(RunSummary {
                    seed,
                    run: name,
                    complete: done,
                    steps,
                    start_loss: curve.first().map(|p| p.loss),
                    final_loss,
                    target_loss,
                    total_flops,
                    flops_to_target,
                    saving,
                    saving_with_source,
                    wall_s,
                    curve,
                });
            }
            let saving = Aggregate::of(
                &setting
                    .seeds
                    .iter()
                    .map(|s| list.iter().find(|r| r.seed == *s).and_then(|r| r.saving))
                    .collect::<Vec<_>>(),
            );
            let saving_with_source = method.uses_source().then(|| {
                Aggregate::of(
                    &setting
                        .seeds
                        .iter()
                        .map(|s| {
                            list.iter()
                                .find(|r| r.seed == *s)
                                .and_then(|r| r.saving_with_source)
                        })
                        .collect::<Vec<_>>(),
                )
            });
            methods.push(MethodSummary {
                method,
                label: method.label().into(),
                paper_saving: paper_saving(&setting.name, method),
                saving,
                saving_with_source,
                runs: list,
                iso_flops: Vec::new(),
            });
        }
        let regime = regime(plan, setting.target, source.as_ref(), &methods);
        let iso_levels = iso_levels(&regime, source.as_ref());
        for m in &mut methods {
            m.iso_flops = iso_levels
                .iter()
                .map(|&l| {
                    Aggregate::of(
                        &m.runs
                            .iter()
                            .map(|r| crossing(&r.curve, l))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
        }
        settings.push(SettingSummary {
            name: setting.name.clone(),
            arch: setting.arch,
            title: setting.title.clone(),
            source,
            target: setting.target,
            methods,
            regime: Some(regime),
            iso_levels,
        });
    }
    Ok(Summary {
        preset: plan.preset,
        command: command(plan),
        machine,
        complete,
        plan: plan.clone(),
        settings,
    })
}

/// Iso-loss levels: 20 steps from the higher of the source's loss and the lowest grown start
/// down to scratch's final loss (none until both are known).
fn iso_levels(regime: &Regime, source: Option<&SourceInfo>) -> Vec<f64> {
    let top = regime
        .lowest_grown_start
        .into_iter()
        .chain(source.and_then(|s| s.eval_loss))
        .reduce(f64::max);
    let (Some(top), Some(bottom)) = (top, regime.scratch_final) else {
        return Vec::new();
    };
    if top <= bottom {
        return Vec::new();
    }
    (0..=20)
        .map(|k| top - (top - bottom) * k as f64 / 20.0)
        .collect()
}

fn command(plan: &Plan) -> String {
    let mut c = format!("cargo xtask experiment --preset {}", plan.preset.name());
    let default = Plan::preset(plan.preset);
    if plan.settings[0].seeds != default.settings[0].seeds {
        let seeds: Vec<String> = plan.settings[0]
            .seeds
            .iter()
            .map(|s| s.to_string())
            .collect();
        c += &format!(" --seeds {}", seeds.join(","));
    }
    if plan.steps != default.steps {
        c += &format!(" --steps {}", plan.steps);
    }
    c
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.1}%", 100.0 * v))
}

fn sci(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.3e}"))
}

fn loss(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.3}"))
}

/// A saving over seeds: the mean and the range, or what is missing.
fn agg(a: &Aggregate, runs: &[RunSummary]) -> String {
    if a.of == 0 {
        return "-".into();
    }
    let running = runs.iter().any(|r| !r.complete) || runs.len() < a.of;
    match (a.mean, a.n) {
        (None, _) if running => "running".into(),
        (None, _) => "not reached".into(),
        (Some(m), 1) if a.of == 1 => pct(Some(m)),
        (Some(m), n) => {
            let mut s = format!("{} ({} .. {})", pct(Some(m)), pct(a.min), pct(a.max));
            if n < a.of {
                s += &format!(", {} of {} seeds reached", n, a.of);
            }
            s
        }
    }
}

fn out_of_regime(s: &SettingSummary) -> bool {
    s.regime.as_ref().is_some_and(|r| !r.in_regime)
}

fn mean(xs: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = xs.flatten().collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The Markdown table of one setting.
pub fn setting_table(s: &SettingSummary) -> String {
    let mut t = String::new();
    let src = s.source.as_ref();
    t += &format!(
        "**{}**: source {} ({}; pre-training {} FLOPs{}), target {}.\n\n",
        s.title,
        src.map_or("?".into(), |x| x.shape.to_string()),
        src.map_or("not available yet".into(), |x| x.origin.clone()),
        src.map_or("-".into(), |x| sci(x.flops.map(|f| f as f64))),
        src.and_then(|x| x.eval_loss)
            .map_or(String::new(), |l| format!(", held-out loss {l:.3}")),
        s.target
    );
    let out_of_regime = out_of_regime(s);
    if let Some(r) = &s.regime {
        t += &regime_line(r);
        t += "\n\n";
    }
    t += "| method | paper | saving (mean, range over seeds) | saving incl. source | start loss | final loss | FLOPs to target | total FLOPs | wall |\n";
    t += "|---|---|---|---|---|---|---|---|---|\n";
    for m in &s.methods {
        let runs = &m.runs;
        let (saving, with_source) = if out_of_regime {
            ("out of regime".to_owned(), "out of regime".to_owned())
        } else {
            (
                agg(&m.saving, runs),
                m.saving_with_source
                    .as_ref()
                    .map_or("-".into(), |a| agg(a, runs)),
            )
        };
        t += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            m.label,
            pct(m.paper_saving),
            saving,
            with_source,
            loss(mean(runs.iter().map(|r| r.start_loss))),
            loss(mean(runs.iter().map(|r| r.final_loss))),
            sci(mean(runs.iter().map(|r| r.flops_to_target))),
            sci(mean(runs.iter().map(|r| Some(r.total_flops)))),
            mean(runs.iter().map(|r| Some(r.wall_s))).map_or("-".into(), |w| format!("{:.0} s", w)),
        );
    }
    t
}

/// The regime verdict of a setting in one sentence, with its numbers.
pub fn regime_line(r: &Regime) -> String {
    let f = |x: Option<f64>| x.map_or("?".into(), |v| format!("{v:.3}"));
    // Summaries made before the source margin was checked render as they did.
    let below_source = r.source_margin.map_or(String::new(), |m| {
        let side = if m < 0.0 { "above" } else { "below" };
        format!(
            ", {:.3} {side} the source's own loss (needs {MIN_MARGIN} below)",
            m.abs()
        )
    });
    let numbers = format!(
        "scratch's mean final loss {}, lowest mean grown start {} (margin {}; needs {MIN_MARGIN}){below_source}; \
         scratch's last-10% drop {} of its drop after the first 10% (at most {:.0}%); source loss {} \
         against a unigram entropy of {}; {} epochs per target run (at most {MAX_EPOCHS})",
        f(r.scratch_final),
        f(r.lowest_grown_start),
        f(r.margin),
        r.late_drop
            .map_or("?".into(), |d| format!("{:.1}%", 100.0 * d)),
        100.0 * MAX_LATE_DROP,
        f(r.source_loss),
        f(r.unigram_entropy),
        r.epochs_per_run.map_or("?".into(), |e| format!("{e:.2}")),
    );
    if r.in_regime {
        format!("In the paper's regime: {numbers}.")
    } else {
        format!(
            "**Out of the paper's regime, so no saving is printed**: {}. ({numbers}.)",
            r.reasons.join("; ")
        )
    }
}

/// The methods ordered by mean saving, `>` between neighbours whose seed ranges do not overlap
/// and `~` where they do: an ordering is claimed only where the ranges separate. Methods with
/// fewer than two seeds, or with a seed that never reached the target, are left out.
pub fn ordering(s: &SettingSummary) -> Option<String> {
    if s.regime.as_ref().is_none_or(|r| !r.in_regime) {
        return None;
    }
    let mut m: Vec<&MethodSummary> = s
        .methods
        .iter()
        // A range needs seeds: one seed's saving is a point, not a range that can separate.
        .filter(|m| m.saving.mean.is_some() && m.saving.n == m.saving.of && m.saving.of >= 2)
        .collect();
    if m.len() < 2 {
        return None;
    }
    m.sort_by(|a, b| b.saving.mean.partial_cmp(&a.saving.mean).expect("finite"));
    let mut t = format!("{} ({})", m[0].label, pct(m[0].saving.mean));
    for w in m.windows(2) {
        let separated = w[0]
            .saving
            .min
            .zip(w[1].saving.max)
            .is_some_and(|(lo, hi)| lo > hi);
        t += if separated { " > " } else { " ~ " };
        t += &format!("{} ({})", w[1].label, pct(w[1].saving.mean));
    }
    Some(t)
}

/// The Markdown tables of every setting, and the per-seed savings.
pub fn tables(s: &Summary) -> String {
    let mut t = String::new();
    for set in &s.settings {
        t += &setting_table(set);
        t += "\n";
        if let Some(o) = ordering(set) {
            t += &format!(
                "Ordering by mean saving (`>`: the seed ranges separate; `~`: they overlap, no \
                 order claimed): {o}.\n\n"
            );
        }
    }
    t += "Per seed (saving / saving incl. source; target loss = scratch's final loss of the same seed):\n\n";
    t += "| setting | method | seed | target loss | final loss | saving | incl. source |\n";
    t += "|---|---|---|---|---|---|---|\n";
    for set in &s.settings {
        for m in &set.methods {
            for r in &m.runs {
                t += &format!(
                    "| {} | {} | {} | {} | {} | {} | {} |\n",
                    set.name,
                    m.label,
                    r.seed,
                    loss(r.target_loss),
                    loss(r.final_loss),
                    if out_of_regime(set) {
                        "out of regime".into()
                    } else if r.flops_to_target.is_none() && r.target_loss.is_some() && r.complete {
                        "not reached".into()
                    } else {
                        pct(r.saving)
                    },
                    if out_of_regime(set) {
                        "out of regime".into()
                    } else {
                        pct(r.saving_with_source)
                    },
                );
            }
        }
    }
    t
}

impl Summary {
    /// What the held-out loss is: MLM, next-token, or both when the settings mix families.
    pub fn loss_name(&self) -> &'static str {
        let bert = self.settings.iter().any(|s| s.arch == Arch::Bert);
        let gpt2 = self.settings.iter().any(|s| s.arch == Arch::Gpt2);
        match (bert, gpt2) {
            (true, true) => "loss (MLM for BERT, next-token for GPT-2)",
            (false, true) => "next-token loss",
            _ => "MLM loss",
        }
    }

    /// Writes `summary.json`, `table.md` and a copy of every run's metrics under `metrics/`.
    pub fn write(&self, out: &Path) -> Result<(), ExperimentError> {
        let write = |path: PathBuf, text: String| {
            std::fs::write(&path, text).map_err(io(format!("writing {}", path.display())))
        };
        let copy = |from: &Path, to: PathBuf| {
            std::fs::copy(from, &to).map(drop).map_err(io(format!(
                "copying {} to {}",
                from.display(),
                to.display()
            )))
        };
        write(out.join(SUMMARY_FILE), pretty(self))?;
        let mut table = format!(
            "# `{}`{}\n\nSaving = 1 - FLOPs to reach scratch's final held-out {} / scratch's FLOPs \
             (docs/experiment.md). Generated from summary.json.\n\n",
            self.command,
            if self.complete { "" } else { " (incomplete)" },
            self.loss_name()
        );
        table += &tables(self);
        write(out.join(TABLE_FILE), table)?;
        let metrics = out.join(METRICS_COPY_DIR);
        std::fs::create_dir_all(&metrics).map_err(io(format!("creating {}", metrics.display())))?;
        for set in &self.settings {
            for m in &set.methods {
                for r in &m.runs {
                    let src = out.join("runs").join(&r.run).join(METRICS_FILE);
                    let src = if src.is_file() {
                        src
                    } else {
                        out.join("runs")
                            .join(&r.run)
                            .join("phase1")
                            .join(METRICS_FILE)
                    };
                    if src.is_file() {
                        copy(&src, metrics.join(format!("{}.jsonl", r.run)))?;
                    }
                }
            }
        }
        // Sources pre-trained here have metrics too.
        if let Ok(rd) = std::fs::read_dir(out.join("runs")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let p = e.path().join(METRICS_FILE);
                if name.starts_with("source-") && p.is_file() {
                    copy(&p, metrics.join(format!("{name}.jsonl")))?;
                }
            }
        }
        Ok(())
    }
}

/// Markers around the generated part of docs/results.md (the `mini` preset's).
pub const BEGIN: &str =
    "<!-- BEGIN GENERATED: cargo xtask experiment --doc; do not edit by hand -->";
/// End marker.
pub const END: &str = "<!-- END GENERATED -->";

/// The begin marker of `preset`'s generated part: one document can hold several presets.
pub fn begin(preset: &str) -> String {
    if preset == "mini" {
        BEGIN.to_owned()
    } else {
        format!(
            "<!-- BEGIN GENERATED ({preset}): cargo xtask experiment --preset {preset} --doc; do \
             not edit by hand -->"
        )
    }
}

/// The generated part of docs/results.md, from `summary` (None: no results yet), with plots
/// referenced through `rel` (the results folder relative to the document's folder).
pub fn render_doc_block(summary: Option<&Summary>, preset: &str, rel: &str) -> String {
    let mut t = String::new();
    t += &begin(preset);
    t += "\n\n";
    let Some(s) = summary else {
        t += &format!(
            "**No `{preset}` results exist yet.** The experiment has not been run to completion in \
             this repository, so there is no table and no plot here, and nothing below is a \
             measurement of it. To produce them (the `mini` preset takes about 3 hours on a 2-core \
             CPU, and can be interrupted and continued), from the repository root:\n\n\
             ```\ncargo build --release -p xtask\n\
             mkdir -p results/{preset}\n\
             nohup target/release/xtask experiment --preset {preset} --quiet --doc docs/results.md \\\n    \
             > results/{preset}/log.txt 2>&1 &\n\
             # after an interruption, the same command continues where it stopped;\n\
             # to regenerate the table, plots and this section from what has run so far:\n\
             target/release/xtask experiment --preset {preset} --report --doc docs/results.md\n```\n\n"
        );
        t += END;
        t += "\n";
        return t;
    };
    let p = &s.plan;
    t += &format!(
        "Command: `{}`{}. Machine: {} ({} cores, {}), device {}.\n\n",
        s.command,
        if s.complete {
            ""
        } else {
            " (**incomplete**: some runs have not finished; numbers marked running)"
        },
        s.machine.cpu,
        s.machine.cores,
        s.machine.os,
        s.machine.device
    );
    let tokens = p.steps * p.batch_size * p.seq_len;
    t += &format!(
        "Every target run: {} steps of {} x {} tokens ({} tokens), AdamW (weight decay 0.01, clip 1.0), \
         peak learning rate {}, {}% warmup then linear decay; held-out loss on {} fixed validation \
         sequences every {} steps. bert2BERT: stage 1 for {} steps with l_b = {}. StackBERT: {} steps \
         at half depth, then stacked. Seeds: {}.{}\n\n",
        p.steps,
        p.batch_size,
        p.seq_len,
        tokens,
        p.lr,
        (100.0 * p.warmup_frac).round(),
        p.eval_sequences,
        p.eval_every,
        p.stage1_steps,
        p.lb,
        p.stack_steps,
        p.settings
            .iter()
            .map(|s| format!("{} {:?}", s.name, s.seeds))
            .collect::<Vec<_>>()
            .join(", "),
        p.settings
            .iter()
            .filter_map(|s| s.grown.map(|g| (s, g)))
            .map(|(s, g)| format!(
                " Setting {}: the methods that start from the source train on peak learning rate \
                 {}, {}% warmup, the same decay.",
                s.name,
                g.lr,
                100.0 * g.warmup_frac
            ))
            .collect::<String>()
    );
    t += &tables(s);
    t += "\n";
    for set in &s.settings {
        t += &format!(
            "![held-out loss against FLOPs, {}]({rel}/loss_vs_flops_{}.png)\n\n",
            set.title, set.name
        );
        t += &format!(
            "![held-out loss against wall-clock time, {}]({rel}/loss_vs_time_{}.png)\n\n",
            set.title, set.name
        );
        if set.iso_levels.len() > 1 {
            t += &format!(
                "![FLOPs to reach each held-out loss, {}]({rel}/iso_loss_{}.png)\n\n",
                set.title, set.name
            );
        }
    }
    t += END;
    t += "\n";
    t
}

/// Lexically normalised absolute form of `p` (`..` resolved without touching the disk).
fn normalise(p: &Path) -> Result<PathBuf, ExperimentError> {
    let abs = std::path::absolute(p).map_err(io(format!("resolving {}", p.display())))?;
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `to` relative to the folder `from`, with `/` separators.
pub fn relative(from: &Path, to: &Path) -> Result<String, ExperimentError> {
    let (f, t) = (normalise(from)?, normalise(to)?);
    let fc: Vec<_> = f.components().collect();
    let tc: Vec<_> = t.components().collect();
    let common = fc.iter().zip(&tc).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); fc.len() - common];
    parts.extend(
        tc[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    Ok(if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    })
}

fn load_summary(out: &Path) -> Result<Option<Summary>, ExperimentError> {
    let path = out.join(SUMMARY_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?;
    Ok(Some(
        serde_json::from_str(&text).map_err(json(format!("parsing {}", path.display())))?,
    ))
}

fn expected_block(out: &Path, doc: &Path) -> Result<(String, String), ExperimentError> {
    let summary = load_summary(out)?;
    let doc_dir = normalise(doc)?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let rel = relative(&doc_dir, out)?;
    let preset = out
        .file_name()
        .map_or("mini".into(), |n| n.to_string_lossy().into_owned());
    let preset = summary
        .as_ref()
        .map_or(preset, |s| s.preset.name().to_owned());
    Ok((
        render_doc_block(summary.as_ref(), &preset, &rel),
        begin(&preset),
    ))
}

fn split_doc<'a>(text: &'a str, begin: &str) -> Option<(&'a str, &'a str, &'a str)> {
    let b = text.find(begin)?;
    let e = text[b..].find(END)? + b;
    let mut end = e + END.len();
    if text[end..].starts_with('\n') {
        end += 1;
    }
    Some((&text[..b], &text[b..end], &text[end..]))
}

/// Writes the generated part of `doc` (between the markers; a new document if it has none).
pub fn write_doc(out: &Path, doc: &Path) -> Result<(), ExperimentError> {
    let (block, begin) = expected_block(out, doc)?;
    let text = std::fs::read_to_string(doc).unwrap_or_default();
    let new = match split_doc(&text, &begin) {
        Some((head, _, tail)) => format!("{head}{block}{tail}"),
        // A document without this preset's part: append it, keep the rest.
        None if !text.trim().is_empty() => format!("{}\n\n{block}", text.trim_end()),
        None => format!(
            "# Results: bert2BERT's saving in miniature\n\n{block}\n## Discussion\n\n(Write after \
             reading the numbers above; quote no number that is not in the generated part.)\n"
        ),
    };
    let tmp = doc.with_extension("md.tmp");
    std::fs::write(&tmp, new).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, doc).map_err(io(format!("writing {}", doc.display())))?;
    Ok(())
}

/// Fails unless the generated part of `doc` is what `<out>/summary.json` generates.
pub fn check_doc(out: &Path, doc: &Path) -> Result<(), ExperimentError> {
    let (block, begin) = expected_block(out, doc)?;
    let text = std::fs::read_to_string(doc).map_err(io(format!("reading {}", doc.display())))?;
    let Some((_, found, _)) = split_doc(&text, &begin) else {
        return Err(ExperimentError::Doc(format!(
            "{} has no generated part (markers `{begin}` ... `{END}`)",
            doc.display()
        )));
    };
    if found != block {
        let line = found
            .lines()
            .zip(block.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(found.lines().count().min(block.lines().count()));
        return Err(ExperimentError::Doc(format!(
            "{}: the generated part does not match {} (first difference at its line {}); \
             regenerate it with `cargo xtask experiment --preset <preset> --report --doc {}`",
            doc.display(),
            out.join(SUMMARY_FILE).display(),
            line + 1,
            doc.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(flops: f64, loss: f64) -> Point {
        Point {
            step: 0,
            flops,
            loss,
            wall_s: 0.0,
        }
    }

    #[test]
    fn crossing_interpolates_between_evaluations() {
        let c = [p(0.0, 9.0), p(10.0, 7.0), p(20.0, 5.0), p(30.0, 4.0)];
        // 6.0 lies halfway between 7.0 (at 10) and 5.0 (at 20).
        assert_eq!(crossing(&c, 6.0), Some(15.0));
        // Exactly on an evaluation.
        assert_eq!(crossing(&c, 5.0), Some(20.0));
        // Already below at the start: reached before any training.
        assert_eq!(crossing(&c, 9.5), Some(0.0));
        // Never reached.
        assert_eq!(crossing(&c, 3.0), None);
        // The first crossing counts, even if the curve goes back up.
        let bumpy = [p(0.0, 9.0), p(10.0, 5.0), p(20.0, 6.5), p(30.0, 4.0)];
        assert_eq!(crossing(&bumpy, 6.0), Some(7.5));
        // A vertical step (StackBERT's stacking: same FLOPs, new loss).
        let stacked = [p(0.0, 9.0), p(10.0, 7.0), p(10.0, 8.0), p(20.0, 5.0)];
        assert_eq!(crossing(&stacked, 7.0), Some(10.0));
        assert_eq!(crossing(&stacked, 6.5), Some(10.0 + 10.0 * 1.5 / 3.0));
    }

    #[test]
    fn aggregate_over_seeds() {
        let a = Aggregate::of(&[Some(0.2), Some(0.4), None]);
        assert_eq!((a.n, a.of), (2, 3));
        assert!((a.mean.unwrap() - 0.3).abs() < 1e-12);
        assert_eq!((a.min, a.max), (Some(0.2), Some(0.4)));
        let none = Aggregate::of(&[None]);
        assert_eq!(none.mean, None);
    }

    #[test]
    fn relative_paths() {
        let r = relative(Path::new("/a/b/docs"), Path::new("/a/b/results/mini")).unwrap();
        assert_eq!(r, "../results/mini");
        let r = relative(Path::new("/a/b/xtask/../docs"), Path::new("/a/b/results")).unwrap();
        assert_eq!(r, "../results");
    }

    /// A run whose evaluations at steps 0, 10, ..., 100 follow `losses`.
    fn run(method_seed: u64, losses: &[f64]) -> RunSummary {
        let curve: Vec<Point> = losses
            .iter()
            .enumerate()
            .map(|(i, &l)| Point {
                step: 10 * i,
                flops: 10.0 * i as f64,
                loss: l,
                wall_s: 0.0,
            })
            .collect();
        RunSummary {
            seed: method_seed,
            run: format!("r{method_seed}"),
            complete: true,
            steps: 10 * (losses.len() - 1),
            start_loss: losses.first().copied(),
            final_loss: losses.last().copied(),
            target_loss: None,
            total_flops: 10.0 * (losses.len() - 1) as f64,
            flops_to_target: None,
            saving: None,
            saving_with_source: None,
            wall_s: 0.0,
            curve,
        }
    }

    fn method(m: Method, runs: Vec<RunSummary>, savings: &[Option<f64>]) -> MethodSummary {
        MethodSummary {
            method: m,
            label: m.label().into(),
            paper_saving: None,
            saving: Aggregate::of(savings),
            saving_with_source: None,
            runs,
            iso_flops: Vec::new(),
        }
    }

    fn source(loss: f64, entropy: f64, epochs: f64) -> SourceInfo {
        SourceInfo {
            shape: Shape::new(2, 64, 32),
            origin: "test".into(),
            flops: Some(1),
            final_loss: Some(loss),
            eval_loss: Some(loss),
            data: Some(crate::DataInfo {
                tokenizer: "t".into(),
                corpus: None,
                mask_prob: None,
                vocab: 2048,
                train_tokens: 1000,
                unigram_entropy: entropy,
                epochs_per_run: epochs,
            }),
        }
    }

    /// A plan of 100 steps (the test curves' length).
    fn plan() -> Plan {
        let mut p = Plan::preset(Preset::RegimeGpt2);
        p.with_steps(100);
        p
    }

    /// Scratch falling from 9 to `end` and flattening; a grown run starting at `start`.
    fn setting(end: f64, start: f64) -> Vec<MethodSummary> {
        let scratch: Vec<f64> = (0..=10)
            .map(|i| end + (9.0 - end) * ((-(i as f64) / 1.5).exp() - (-10.0f64 / 1.5).exp()))
            .collect();
        let grown: Vec<f64> = (0..=10).map(|i| start - 0.05 * i as f64).collect();
        vec![
            method(Method::Scratch, vec![run(0, &scratch)], &[Some(0.0)]),
            method(Method::Fpi, vec![run(0, &grown)], &[Some(0.3)]),
        ]
    }

    #[test]
    fn regime_holds_only_when_scratch_ends_well_below_the_grown_start() {
        let p = plan();
        let target = Shape::new(4, 96, 32);
        let src = source(5.0, 6.1, 0.7);
        let ok = regime(&p, target, Some(&src), &setting(4.7, 5.0));
        assert!(ok.in_regime, "{:?}", ok.reasons);
        assert!((ok.margin.unwrap() - 0.3).abs() < 1e-9);
        // Scratch ends only 0.05 below the grown start: out of regime, with the reason.
        let close = regime(&p, target, Some(&src), &setting(4.95, 5.0));
        assert!(!close.in_regime);
        assert!(
            close.reasons[0].contains("only 0.05"),
            "{:?}",
            close.reasons
        );
        // A source that knows little more than word frequencies.
        let weak = regime(&p, target, Some(&source(5.9, 6.1, 0.7)), &setting(4.7, 5.0));
        assert!(!weak.in_regime);
        assert!(
            weak.reasons.iter().any(|r| r.contains("unigram")),
            "{:?}",
            weak.reasons
        );
        // Too many passes over the data, and too shallow a target.
        let many = regime(
            &p,
            Shape::new(2, 96, 32),
            Some(&source(5.0, 6.1, 9.0)),
            &setting(4.7, 5.0),
        );
        assert_eq!(many.reasons.len(), 2, "{:?}", many.reasons);
        // A scratch curve still falling steeply at the end.
        let mut steep = setting(4.7, 5.0);
        let falling: Vec<f64> = (0..=10).map(|i| 9.0 - 0.43 * i as f64).collect();
        steep[0].runs = vec![run(0, &falling)];
        let r = regime(&p, target, Some(&src), &steep);
        assert!(
            r.reasons.iter().any(|x| x.contains("flattened")),
            "{:?}",
            r.reasons
        );
        // No source information: the check cannot pass.
        assert!(!regime(&p, target, None, &setting(4.7, 5.0)).in_regime);
        // A stacked post-LN model starts well above its source (5.7 against 5.31) while
        // scratch ends above the source itself: the margin to the start is an artefact.
        let stacked = regime(
            &p,
            target,
            Some(&source(5.31, 5.84, 2.3)),
            &setting(5.35, 5.7),
        );
        assert!((stacked.margin.unwrap() - 0.35).abs() < 1e-9);
        assert!((stacked.source_margin.unwrap() + 0.04).abs() < 1e-9);
        assert!(!stacked.in_regime);
        assert_eq!(stacked.reasons.len(), 1, "{:?}", stacked.reasons);
        assert!(
            stacked.reasons[0].contains("0.040 above the source's own held-out loss 5.310"),
            "{:?}",
            stacked.reasons
        );
        assert!(regime_line(&stacked).contains("0.040 above the source's own loss"));
        // In the regime, scratch also ends well below the source (0.3 here).
        assert!((ok.source_margin.unwrap() - 0.3).abs() < 1e-9);
    }

    #[test]
    fn an_out_of_regime_setting_prints_no_saving() {
        let p = plan();
        let methods = setting(4.95, 5.0);
        let src = source(5.0, 6.1, 0.7);
        let r = regime(&p, Shape::new(4, 96, 32), Some(&src), &methods);
        let s = SettingSummary {
            name: "gpt2".into(),
            arch: Arch::Gpt2,
            title: "t".into(),
            source: Some(src),
            target: Shape::new(4, 96, 32),
            methods,
            regime: Some(r),
            iso_levels: Vec::new(),
        };
        let t = setting_table(&s);
        assert!(t.contains("**Out of the paper's regime, so no saving is printed**"));
        assert!(!t.contains("30.0%"), "{t}");
        assert!(ordering(&s).is_none());
    }

    #[test]
    fn ordering_is_claimed_only_where_seed_ranges_separate() {
        let regime = Regime {
            in_regime: true,
            reasons: Vec::new(),
            scratch_final: None,
            lowest_grown_start: None,
            margin: None,
            source_margin: None,
            late_drop: None,
            source_loss: None,
            unigram_entropy: None,
            epochs_per_run: None,
        };
        let s = SettingSummary {
            name: "gpt2".into(),
            arch: Arch::Gpt2,
            title: "t".into(),
            source: None,
            target: Shape::new(4, 96, 32),
            methods: vec![
                method(Method::Scratch, vec![], &[Some(0.0), Some(0.0)]),
                method(Method::Fpi, vec![], &[Some(0.2), Some(0.3)]),
                method(Method::Aki, vec![], &[Some(0.25), Some(0.35)]),
                method(Method::Bert2Bert, vec![], &[Some(0.5), Some(0.6)]),
                // A seed that did not reach the target: left out of the ordering.
                method(Method::Exact, vec![], &[Some(0.9), None]),
            ],
            regime: Some(regime),
            iso_levels: Vec::new(),
        };
        assert_eq!(
            ordering(&s).unwrap(),
            "bert2BERT (AKI + two-stage) (55.0%) > AKI (30.0%) ~ FPI (25.0%) > Scratch (0.0%)"
        );
        // One seed each: points, no ranges, no ordering.
        let single = SettingSummary {
            methods: vec![
                method(Method::Scratch, vec![], &[Some(0.0)]),
                method(Method::Bert2Bert, vec![], &[Some(0.45)]),
            ],
            ..s
        };
        assert!(ordering(&single).is_none());
    }

    #[test]
    fn iso_levels_run_from_the_source_down_to_scratch() {
        let regime = Regime {
            in_regime: true,
            reasons: Vec::new(),
            scratch_final: Some(4.0),
            lowest_grown_start: Some(4.8),
            margin: Some(0.8),
            source_margin: None,
            late_drop: None,
            source_loss: Some(5.0),
            unigram_entropy: None,
            epochs_per_run: None,
        };
        let l = iso_levels(&regime, Some(&source(5.0, 6.1, 0.7)));
        assert_eq!(l.len(), 21);
        assert!((l[0] - 5.0).abs() < 1e-12 && (l[20] - 4.0).abs() < 1e-12);
        assert!(l.windows(2).all(|w| w[0] > w[1]));
        let none = Regime {
            scratch_final: Some(5.5),
            ..regime
        };
        assert!(iso_levels(&none, Some(&source(5.0, 6.1, 0.7))).is_empty());
    }

    #[test]
    fn doc_block_is_found_and_replaced() {
        let block = render_doc_block(None, "mini", "../results/mini");
        let doc = format!("# T\n\nintro\n\n{block}\n## Discussion\n");
        let (head, found, tail) = split_doc(&doc, BEGIN).unwrap();
        // Another preset's part is told apart by its own marker.
        assert!(split_doc(&doc, &begin("gpt2-mini")).is_none());
        assert_eq!(head, "# T\n\nintro\n\n");
        assert_eq!(found, block);
        assert_eq!(tail, "\n## Discussion\n");
        assert!(block.contains("No `mini` results exist yet"));
    }
}
