//! `cargo xtask experiment`: the paper's saving table in miniature (the command line of
//! bert2bert-experiment; docs/experiment.md).

use bert2bert_experiment::{ExperimentError, Options, Outcome, Preset};
use bert2bert_train::DeviceKind;
use std::path::PathBuf;

/// Arguments of `cargo xtask experiment`.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Size of the experiment.
    #[arg(long, value_enum, default_value_t = Preset::Smoke)]
    pub preset: Preset,
    /// Output folder (default: results/<preset> in the workspace).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seeds of the main (width) setting, comma-separated (default: the preset's).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
    /// Steps of every target run (default: the preset's); stage 1 stays 1/8 of them and
    /// StackBERT's shallow phase 1/4. A bigger budget needs its own --out.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Device.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// The assets folder (corpus/ and tokenizer/).
    #[arg(long)]
    pub assets: Option<PathBuf>,
    /// Do not train: rebuild summary.json, table.md and the plots from the runs there are.
    #[arg(long)]
    pub report: bool,
    /// Also write the generated part of this Markdown file (docs/results.md) from the summary.
    #[arg(long)]
    pub doc: Option<PathBuf>,
    /// Check that the generated part of this Markdown file matches the summary; train nothing.
    #[arg(long)]
    pub check_doc: Option<PathBuf>,
    /// Stop every unfinished target run at this step (after checkpointing; sources pre-trained
    /// here still finish); a later call resumes.
    #[arg(long)]
    pub stop_at: Option<usize>,
    /// Start over: delete the runs of an earlier experiment in the output folder.
    #[arg(long)]
    pub restart: bool,
    /// Hide the progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Train this many target runs at once, each in its own process with an equal share of the
    /// cores (sources first, in this process). Small models use one core each better than two
    /// cores together; the numbers do not depend on it.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Train only this run (a worker process of `--jobs`; the sources must be trained).
    #[arg(long, hide = true)]
    pub only_run: Option<String>,
}

impl Args {
    /// The library's options: these flags, in this workspace, with workers run as
    /// `<this program> experiment ...`.
    fn options(self) -> Options {
        Options {
            preset: self.preset,
            out: self.out,
            seeds: self.seeds,
            steps: self.steps,
            device: self.device,
            assets: self.assets,
            report: self.report,
            doc: self.doc,
            check_doc: self.check_doc,
            stop_at: self.stop_at,
            restart: self.restart,
            quiet: self.quiet,
            jobs: self.jobs,
            only_run: self.only_run,
            root: crate::workspace_root(),
            worker_command: vec!["experiment".into()],
        }
    }
}

/// Runs `cargo xtask experiment`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let outcome = bert2bert_experiment::run(&args.options()).map_err(|e| match e {
        ExperimentError::Usage(m) => anyhow::Error::from(crate::Usage::new(m)),
        e => e.into(),
    })?;
    match outcome {
        Outcome::DocChecked | Outcome::Worker => {}
        Outcome::NoExperiment { out, doc } => {
            eprintln!(
                "no experiment in {}; wrote {}",
                out.display(),
                doc.display()
            );
        }
        Outcome::Reported {
            stopped,
            summary,
            table,
            doc,
        } => {
            if stopped {
                eprintln!(
                    "stopped before the end (--stop-at); run the same command again to continue"
                );
            }
            eprintln!(
                "summary in {}, table in {}",
                summary.display(),
                table.display()
            );
            if let Some(doc) = doc {
                eprintln!("wrote {}", doc.display());
            }
        }
    }
    Ok(())
}
