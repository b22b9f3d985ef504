//! The experiment's numbers: curves from the runs' metrics, the crossing of the scratch model's
//! final loss, savings with and without the source's cost, `summary.json`, `table.md` and the
//! generated part of docs/results.md.

use super::{Method, Plan, Preset, SUMMARY_FILE, Shape, SourceInfo, TABLE_FILE, run_name};
use crate::pretrain::{Arch, DeviceKind};
use anyhow::{Context, bail};
use bert2bert_train::trainer::{METRICS_FILE, read_metrics};
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

fn curve_of(dir: &Path, copy: &Path) -> anyhow::Result<Option<Curve>> {
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
) -> anyhow::Result<Summary> {
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
                let copy = out.join("metrics").join(format!("{name}.jsonl"));
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
            });
        }
        settings.push(SettingSummary {
            name: setting.name.clone(),
            arch: setting.arch,
            title: setting.title.clone(),
            source,
            target: setting.target,
            methods,
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
    t += "| method | paper | saving (mean, range over seeds) | saving incl. source | start loss | final loss | FLOPs to target | total FLOPs | wall |\n";
    t += "|---|---|---|---|---|---|---|---|---|\n";
    for m in &s.methods {
        let runs = &m.runs;
        t += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            m.label,
            pct(m.paper_saving),
            agg(&m.saving, runs),
            m.saving_with_source
                .as_ref()
                .map_or("-".into(), |a| agg(a, runs)),
            loss(mean(runs.iter().map(|r| r.start_loss))),
            loss(mean(runs.iter().map(|r| r.final_loss))),
            sci(mean(runs.iter().map(|r| r.flops_to_target))),
            sci(mean(runs.iter().map(|r| Some(r.total_flops)))),
            mean(runs.iter().map(|r| Some(r.wall_s))).map_or("-".into(), |w| format!("{:.0} s", w)),
        );
    }
    t
}

/// The Markdown tables of every setting, and the per-seed savings.
pub fn tables(s: &Summary) -> String {
    let mut t = String::new();
    for set in &s.settings {
        t += &setting_table(set);
        t += "\n";
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
                    if r.flops_to_target.is_none() && r.target_loss.is_some() && r.complete {
                        "not reached".into()
                    } else {
                        pct(r.saving)
                    },
                    pct(r.saving_with_source),
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
    pub fn write(&self, out: &Path) -> anyhow::Result<()> {
        std::fs::write(
            out.join(SUMMARY_FILE),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        let mut table = format!(
            "# `{}`{}\n\nSaving = 1 - FLOPs to reach scratch's final held-out {} / scratch's FLOPs \
             (docs/experiment.md). Generated from summary.json.\n\n",
            self.command,
            if self.complete { "" } else { " (incomplete)" },
            self.loss_name()
        );
        table += &tables(self);
        std::fs::write(out.join(TABLE_FILE), table)?;
        let metrics = out.join("metrics");
        std::fs::create_dir_all(&metrics)?;
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
                        std::fs::copy(&src, metrics.join(format!("{}.jsonl", r.run)))?;
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
                    std::fs::copy(&p, metrics.join(format!("{name}.jsonl")))?;
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
         at half depth, then stacked. Seeds: {}.\n\n",
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
            .join(", ")
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
    }
    t += END;
    t += "\n";
    t
}

/// Lexically normalised absolute form of `p` (`..` resolved without touching the disk).
fn normalise(p: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::path::absolute(p)?;
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
pub fn relative(from: &Path, to: &Path) -> anyhow::Result<String> {
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

fn load_summary(out: &Path) -> anyhow::Result<Option<Summary>> {
    let path = out.join(SUMMARY_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)?;
    Ok(Some(
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?,
    ))
}

fn expected_block(out: &Path, doc: &Path) -> anyhow::Result<(String, String)> {
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
pub fn write_doc(out: &Path, doc: &Path) -> anyhow::Result<()> {
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
    std::fs::write(&tmp, new)?;
    std::fs::rename(&tmp, doc)?;
    Ok(())
}

/// Fails unless the generated part of `doc` is what `<out>/summary.json` generates.
pub fn check_doc(out: &Path, doc: &Path) -> anyhow::Result<()> {
    let (block, begin) = expected_block(out, doc)?;
    let text =
        std::fs::read_to_string(doc).with_context(|| format!("reading {}", doc.display()))?;
    let Some((_, found, _)) = split_doc(&text, &begin) else {
        bail!(
            "{} has no generated part (markers `{begin}` ... `{END}`)",
            doc.display()
        );
    };
    if found != block {
        let line = found
            .lines()
            .zip(block.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(found.lines().count().min(block.lines().count()));
        bail!(
            "{}: the generated part does not match {} (first difference at its line {}); \
             regenerate it with `cargo xtask experiment --preset <preset> --report --doc {}`",
            doc.display(),
            out.join(SUMMARY_FILE).display(),
            line + 1,
            doc.display()
        );
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
