//! bert2bert-experiment: the paper's saving table (spec section 9) in miniature, behind
//! `cargo xtask experiment`.
//!
//! Every method trains the same target shape on the same data, optimizer, batch, sequence length
//! and learning-rate schedule; the held-out loss (masked-LM for BERT settings, next-token for
//! GPT-2 settings) is logged against training FLOPs, and the
//! saving is read off where each curve crosses the scratch model's final loss. Runs live in
//! `<out>/runs/<name>/` (ordinary `pretrain`-style output folders), so an interrupted experiment
//! resumes every run from its last checkpoint and skips the finished ones. See
//! docs/experiment.md for the design and docs/results.md for what the published run showed.
//!
//! Modules: [`plan`] (presets, settings, methods, run names), [`runner`] (training, resuming
//! and skipping runs, StackBERT, `--jobs` workers), [`sources`] (source models and the data
//! they record), [`summary`] (crossings, savings, `summary.json`, tables, the generated part of
//! docs/results.md), [`plot`] (PNG plots). The entry point is [`run`] with [`Options`].
#![warn(missing_docs)]

mod error;
pub mod plan;
pub mod plot;
pub mod runner;
pub mod sources;
pub mod summary;

pub use error::ExperimentError;
pub use plan::{LrSpec, Method, Plan, Preset, SettingPlan, Shape, SourceSpec};
pub use sources::{DataInfo, SourceInfo};

use bert2bert_checkpoint::CheckpointError;
use bert2bert_train::DeviceKind;
use bert2bert_train::data::default_assets_dir;
use error::{checkpoint, io, json, pretty};
use sources::FamilyData;
use std::path::{Path, PathBuf};

/// The plan of an experiment, stored as `<out>/experiment.json` (a re-run must match it).
pub const PLAN_FILE: &str = "experiment.json";
/// The folder of the runs' recorded metrics (`<out>/metrics/<run>.jsonl`), committed with the
/// results: the report rebuilds from it, and a run recorded there as finished is not retrained.
pub const METRICS_COPY_DIR: &str = "metrics";
/// The summary of an experiment.
pub const SUMMARY_FILE: &str = "summary.json";
/// The Markdown table of an experiment.
pub const TABLE_FILE: &str = "table.md";
/// What the experiment knows about its sources.
pub const SOURCES_FILE: &str = "sources.json";
/// The machine of the last training call.
pub const MACHINE_FILE: &str = "machine.json";

/// What one call of the experiment does (the flags of `cargo xtask experiment`).
#[derive(Clone, Debug)]
pub struct Options {
    /// Size of the experiment.
    pub preset: Preset,
    /// Output folder (default: results/<preset> under `root`).
    pub out: Option<PathBuf>,
    /// Seeds of the main (width) setting (default: the preset's).
    pub seeds: Option<Vec<u64>>,
    /// Steps of every target run (default: the preset's); stage 1 stays 1/8 of them and
    /// StackBERT's shallow phase 1/4.
    pub steps: Option<usize>,
    /// Device.
    pub device: DeviceKind,
    /// The assets folder (corpus/ and tokenizers; default: the repository's).
    pub assets: Option<PathBuf>,
    /// Do not train: rebuild summary.json, table.md and the plots from the runs there are.
    pub report: bool,
    /// Also write the generated part of this Markdown file (docs/results.md) from the summary.
    pub doc: Option<PathBuf>,
    /// Check that the generated part of this Markdown file matches the summary; train nothing.
    pub check_doc: Option<PathBuf>,
    /// Stop every unfinished target run at this step (after checkpointing; sources pre-trained
    /// here still finish); a later call resumes.
    pub stop_at: Option<usize>,
    /// Start over: delete the runs of an earlier experiment in the output folder.
    pub restart: bool,
    /// Hide the progress bars.
    pub quiet: bool,
    /// Train this many target runs at once, each in its own worker process.
    pub jobs: usize,
    /// Train only this run (a worker process of `jobs`; the sources must be trained).
    pub only_run: Option<String>,
    /// The workspace root: bundled source folders are relative to it, and the default output
    /// folder is under it.
    pub root: PathBuf,
    /// The arguments that select the experiment on this program's command line (`experiment`
    /// for xtask): a worker is this executable run with them, then the experiment's flags
    /// (`--preset`, `--out`, `--only-run`, ... as `cargo xtask experiment` names them).
    pub worker_command: Vec<String>,
}

impl Options {
    /// The defaults of `cargo xtask experiment --preset <preset>` for the workspace at `root`.
    pub fn new(preset: Preset, root: impl Into<PathBuf>) -> Self {
        Self {
            preset,
            out: None,
            seeds: None,
            steps: None,
            device: DeviceKind::Cpu,
            assets: None,
            report: false,
            doc: None,
            check_doc: None,
            stop_at: None,
            restart: false,
            quiet: false,
            jobs: 1,
            only_run: None,
            root: root.into(),
            worker_command: vec!["experiment".into()],
        }
    }

    /// The output folder.
    pub fn out_dir(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| self.root.join("results").join(self.preset.name()))
    }

    /// The assets folder.
    pub fn assets_dir(&self) -> PathBuf {
        self.assets.clone().unwrap_or_else(default_assets_dir)
    }
}

/// What a call did, for the caller to report.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// `check_doc`: the document's generated part matches the summary.
    DocChecked,
    /// `only_run`: the worker trained its run (as far as `stop_at`).
    Worker,
    /// `report` on a folder without an experiment: `doc` was written to say so.
    NoExperiment {
        /// The output folder.
        out: PathBuf,
        /// The document written.
        doc: PathBuf,
    },
    /// Trained (unless `report`) and reported.
    Reported {
        /// Training stopped before every run's end (`stop_at`, or a source not finished).
        stopped: bool,
        /// `summary.json`.
        summary: PathBuf,
        /// `table.md`.
        table: PathBuf,
        /// The document whose generated part was written.
        doc: Option<PathBuf>,
    },
}

fn read_text(path: &Path) -> Result<String, ExperimentError> {
    std::fs::read_to_string(path).map_err(io(format!("reading {}", path.display())))
}

fn write_text(path: &Path, text: &str) -> Result<(), ExperimentError> {
    std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))
}

/// Refuses an output folder `out` that is, lies inside, or contains the assets folder or a
/// setting's source folder (relative to `root`): `restart` deletes runs there, and every call
/// writes the plan and the summary.
pub fn refuse_overlapping_out(
    out: &Path,
    assets: &Path,
    plan: &Plan,
    root: &Path,
) -> Result<(), ExperimentError> {
    let sources = plan.settings.iter().filter_map(|s| match &s.source {
        SourceSpec::Folder { path } => Some(root.join(path)),
        SourceSpec::Pretrain { .. } => None,
    });
    let inputs = std::iter::once((assets.to_owned(), "assets folder (--assets)"))
        .chain(sources.map(|p| (p, "source model folder")));
    for (input, role) in inputs {
        bert2bert_checkpoint::paths::check_disjoint(out, &input, role).map_err(|e| match e {
            e @ CheckpointError::OutputOverlapsInput { .. } => {
                ExperimentError::OutputOverlapsInput(Box::new(e))
            }
            e => checkpoint(format!("checking --out {}", out.display()))(e),
        })?;
    }
    Ok(())
}

/// Runs the experiment as `options` say: trains what is missing, then writes the summary, the
/// table, the plots and (with `doc`) the generated part of a document.
pub fn run(options: &Options) -> Result<Outcome, ExperimentError> {
    let args = options;
    let root = &args.root;
    let out = args.out_dir();
    if let Some(doc) = &args.check_doc {
        summary::check_doc(&out, doc)?;
        return Ok(Outcome::DocChecked);
    }
    let mut plan = Plan::preset(args.preset);
    if let Some(seeds) = &args.seeds {
        if seeds.is_empty() {
            return Err(ExperimentError::Usage(
                "--seeds: give at least one seed".into(),
            ));
        }
        plan.settings[0].seeds = seeds.clone();
    }
    if let Some(steps) = args.steps {
        plan.with_steps(steps);
    }
    plan.validate()
        .map_err(|e| ExperimentError::Usage(e.to_string()))?;
    // Before anything is written there (the plan, the summary) or removed (`restart`).
    refuse_overlapping_out(&out, &args.assets_dir(), &plan, root)?;
    let plan_path = out.join(PLAN_FILE);

    if args.only_run.is_some() {
        if args.report || args.doc.is_some() {
            return Err(ExperimentError::Usage(
                "--only-run trains one run; it makes no report".into(),
            ));
        }
        let stored: Plan = serde_json::from_str(&read_text(&plan_path)?)
            .map_err(json(format!("--only-run: parsing {}", plan_path.display())))?;
        if stored != plan {
            return Err(ExperimentError::Invalid(format!(
                "--only-run: {} holds another plan",
                plan_path.display()
            )));
        }
        runner::train_all(&plan, args, root, &out)?;
        return Ok(Outcome::Worker);
    }
    if args.jobs == 0 {
        return Err(ExperimentError::Usage("--jobs: at least 1".into()));
    }
    let mut stopped = false;
    if !args.report {
        if plan_path.is_file() {
            let stored: Plan = serde_json::from_str(&read_text(&plan_path)?)
                .map_err(json(format!("parsing {}", plan_path.display())))?;
            // Seeds may change between calls (runs are keyed by seed); nothing else may.
            let unseeded = |p: &Plan| {
                let mut p = p.clone();
                p.settings.iter_mut().for_each(|s| s.seeds.clear());
                p
            };
            if unseeded(&stored) != unseeded(&plan) && !args.restart {
                return Err(ExperimentError::Invalid(format!(
                    "{} holds an experiment with other settings; continue it with the same \
                     options, or start over with --restart",
                    plan_path.display()
                )));
            }
        }
        // Starting over forgets the recorded metrics too: they would count as finished runs.
        for dir in [out.join("runs"), out.join(METRICS_COPY_DIR)] {
            if args.restart && dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io(format!("removing {}", dir.display())))?;
            }
        }
        std::fs::create_dir_all(&out).map_err(io(format!("creating {}", out.display())))?;
        write_text(&plan_path, &pretty(&plan))?;
        // The machine that trains (a later --report elsewhere must not claim its own).
        let machine = summary::Machine::detect(args.device);
        write_text(&out.join(MACHINE_FILE), &pretty(&machine))?;
        stopped = !runner::train_all(&plan, args, root, &out)?;
    } else if plan_path.is_file() {
        plan = serde_json::from_str(&read_text(&plan_path)?)
            .map_err(json(format!("parsing {}", plan_path.display())))?;
    } else if let Some(doc) = &args.doc {
        // Nothing has run yet: the document says so.
        summary::write_doc(&out, doc)?;
        return Ok(Outcome::NoExperiment {
            out,
            doc: doc.clone(),
        });
    } else {
        return Err(ExperimentError::Invalid(format!(
            "--report: no experiment in {} ({PLAN_FILE} is missing)",
            out.display()
        )));
    }

    let mut sources: Vec<Option<SourceInfo>> = std::fs::read_to_string(out.join(SOURCES_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    // Experiments run before the data was recorded: describe it now (it is shipped, and the
    // same tokenizer gives the same streams).
    let assets = args.assets_dir();
    for (setting, info) in plan.settings.iter().zip(sources.iter_mut()) {
        if let Some(info) = info
            && info.data.is_none()
        {
            let data = FamilyData::load(&assets, &plan, setting)?;
            info.data = Some(DataInfo::of(&data, &plan, &assets)?);
        }
    }
    let machine = std::fs::read_to_string(out.join(MACHINE_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| summary::Machine::detect(args.device));
    let s = summary::summarize(&plan, &out, &sources, machine)?;
    s.write(&out)?;
    plot::plots(&s, &out)?;
    if let Some(doc) = &args.doc {
        summary::write_doc(&out, doc)?;
    }
    Ok(Outcome::Reported {
        stopped,
        summary: out.join(SUMMARY_FILE),
        table: out.join(TABLE_FILE),
        doc: args.doc.clone(),
    })
}
