//! `cargo xtask bench grow`, end to end: grow a BERT-base-size checkpoint on disk to BERT-large
//! shape with the real command, next to a plain copy of the output's bytes, in one run.

use anyhow::{Context, Result};
use bert2bert_checkpoint::random::{Heads, Init};
use bert2bert_checkpoint::{Bert, BertConfig, Dtype, Model, ModelDir, WriteOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Wall time and peak resident memory of one child process.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Measured {
    /// Seconds from spawn to exit.
    pub seconds: f64,
    /// Peak resident set size in bytes (getrusage ru_maxrss of the child).
    pub peak_rss: u64,
    /// CPU seconds in user space, all threads.
    pub user: f64,
    /// CPU seconds in the kernel (page faults, page-cache copies, writeback), all threads.
    pub system: f64,
}

/// Runs `cmd` as a child and measures it.
fn measure(cmd: &mut Command) -> Result<Measured> {
    let t = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain FFI; `ru` is a valid out-pointer for the call's duration.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let seconds = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        r == pid,
        "wait4 failed: {}",
        std::io::Error::last_os_error()
    );
    anyhow::ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed (status {status})"
    );
    drop(child);
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    Ok(Measured {
        seconds,
        peak_rss: ru.ru_maxrss as u64 * 1024,
        user: secs(ru.ru_utime),
        system: secs(ru.ru_stime),
    })
}

fn size_of(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| path.display().to_string())?
        .len())
}

/// Options of the end-to-end growth benchmark.
#[derive(clap::Args, Debug)]
pub struct GrowArgs {
    /// Working folder for the generated source and the outputs (default: a temporary folder).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// A smaller shape (4 x 256 -> 8 x 512) for a quick check of the benchmark itself.
    #[arg(long)]
    pub small: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Family: bert (BERT-base -> BERT-large shape) or llama (a ~1.1B bf16 Llama in 2 shards,
    /// 16 x 2048, 32 / 8 heads, FFN 8192, vocabulary 32000, untied, -> ~3.5B: 24 x 3072,
    /// 48 / 12 heads, FFN 12288).
    #[arg(long, default_value = "bert")]
    pub arch: String,
}

/// Runs the end-to-end growth benchmark.
pub fn run(args: GrowArgs) -> Result<()> {
    match args.arch.as_str() {
        "bert" => {}
        "llama" => return run_llama(args),
        other => anyhow::bail!("--arch {other}: expected bert or llama"),
    }
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    let (src_cfg, target) = if args.small {
        (
            BertConfig::new(8192, 256, 4, 4, 1024, 512),
            [8, 512, 8, 2048],
        )
    } else {
        // BERT-base (12 x 768, 12 heads, FFN 3072, vocab 30522) -> BERT-large shape.
        (
            BertConfig::new(30522, 768, 12, 12, 3072, 512),
            [24, 1024, 16, 4096],
        )
    };
    let source = dir.join("source");
    if !source.join("model.safetensors").exists() {
        eprintln!(
            "generating a random {}x{} source in {} ...",
            src_cfg.num_hidden_layers,
            src_cfg.hidden_size,
            source.display()
        );
        let model = Model::Bert(Bert::random(&src_cfg, Heads::ALL, Init::FRESH, 1));
        ModelDir::new(dir.clone(), model, Dtype::F32, vec![]).write(
            &source,
            &WriteOptions {
                dtype: None,
                overwrite: true,
            },
        )?;
    }
    let out = dir.join("grown");
    let t = target.map(|x| x.to_string());
    let grow_args = [
        "--layers",
        &t[0],
        "--hidden",
        &t[1],
        "--heads",
        &t[2],
        "--intermediate",
        &t[3],
    ];
    let (grows, copies) = alternate(args.runs, &source, &out, &dir.join("copy"), &grow_args)?;
    let (g, c) = (median(&grows), median(&copies));
    // Sorted by time: the spread is the first and last run.
    let spread = |v: &[Measured]| (v[0].seconds, v[v.len() - 1].seconds);
    let (g_lo, g_hi) = spread(&grows);
    let (c_lo, c_hi) = spread(&copies);
    let out_bytes = size_of(&out.join("model.safetensors"))?;
    let src_bytes = size_of(&source.join("model.safetensors"))?;
    let gb = |b: u64| b as f64 / 1e9;
    if args.json {
        let v = serde_json::json!({
            "source_bytes": src_bytes, "output_bytes": out_bytes, "runs": args.runs,
            "grow": g, "copy": c,
            "grow_seconds": grows.iter().map(|m| m.seconds).collect::<Vec<_>>(),
            "copy_seconds": copies.iter().map(|m| m.seconds).collect::<Vec<_>>(),
            "time_ratio": g.seconds / c.seconds,
            "rss_over_output": g.peak_rss as f64 / out_bytes as f64,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "source {:.2} GB -> output {:.2} GB (f32), median of {} runs",
            gb(src_bytes),
            gb(out_bytes),
            args.runs
        );
        println!(
            "{:<28} {:>9} {:>13} {:>11} {:>12}",
            "", "seconds", "(min - max)", "user+sys", "peak RSS"
        );
        println!(
            "{:<28} {:>9.2} ({:.2} - {:.2}) {:>5.2}+{:.2} {:>9.2} GB",
            "cargo xtask grow (FPI)",
            g.seconds,
            g_lo,
            g_hi,
            g.user,
            g.system,
            gb(g.peak_rss)
        );
        println!(
            "{:<28} {:>9.2} ({:.2} - {:.2}) {:>5.2}+{:.2} {:>9.2} GB",
            "cp + fsync of the output",
            c.seconds,
            c_lo,
            c_hi,
            c.user,
            c.system,
            gb(c.peak_rss)
        );
        println!("load average when done: {}", load_average());
        println!(
            "grow / copy time: {:.2}x (target <= 2x); peak RSS / output size: {:.2}x (target <= 1.5x)",
            g.seconds / c.seconds,
            g.peak_rss as f64 / out_bytes as f64
        );
    }
    Ok(())
}

/// Alternates `runs` growths of `source` into `out` (`xtask grow --no-verify --method fpi` and
/// `grow_args`) with byte copies (no reflink) of the output's weight files into the folder
/// `copy`, fsynced like the grower's output before its rename; returns both sets of runs,
/// each sorted by time. `copy` is removed at the end.
fn alternate(
    runs: usize,
    source: &Path,
    out: &Path,
    copy: &Path,
    grow_args: &[&str],
) -> Result<(Vec<Measured>, Vec<Measured>)> {
    let exe = std::env::current_exe()?;
    let (mut grows, mut copies) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let _ = std::fs::remove_dir_all(out);
        grows.push(measure(
            Command::new(&exe)
                .args(["grow", "--no-verify", "--method", "fpi", "--source"])
                .arg(source)
                .arg("--out")
                .arg(out)
                .args(grow_args)
                .stdout(std::process::Stdio::null()),
        )?);
        let _ = std::fs::remove_dir_all(copy);
        std::fs::create_dir_all(copy)?;
        copies.push(measure(
            Command::new("sh")
                .arg("-c")
                .arg(r#"cp --reflink=never "$0"/*.safetensors "$1"/ && sync "$1"/*.safetensors"#)
                .arg(out)
                .arg(copy),
        )?);
    }
    let _ = std::fs::remove_dir_all(copy);
    for v in [&mut grows, &mut copies] {
        v.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    }
    Ok((grows, copies))
}

/// The median of runs sorted by time.
fn median(sorted: &[Measured]) -> Measured {
    sorted[sorted.len() / 2]
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg gives them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Writes a random Llama of `config` into `dir` tensor by tensor (never whole in memory), in
/// `dtype`, sharded at `shard_bytes`.
fn write_random_llama(
    dir: &Path,
    config: &bert2bert_checkpoint::LlamaConfig,
    dtype: Dtype,
    shard_bytes: u64,
) -> Result<()> {
    use bert2bert_checkpoint::llama::{random_tensor, tensor_table};
    use bert2bert_checkpoint::safetensors::{FolderWriter, TensorSpec};
    let table = tensor_table(config);
    let specs: Vec<TensorSpec> = table
        .iter()
        .map(|d| TensorSpec {
            name: d.name.clone(),
            dtype,
            shape: d.shape.clone(),
        })
        .collect();
    let atomic = bert2bert_checkpoint::AtomicDir::new(dir, true)?;
    let mut w = FolderWriter::create(atomic.path(), &specs, Some(shard_bytes))?;
    for (i, d) in table.iter().enumerate() {
        let t = random_tensor(d, Init::FRESH, 1, i);
        w.write_finite_f32(&d.name, &d.shape, t.as_slice().expect("standard"))?;
    }
    w.finish()?;
    bert2bert_checkpoint::folder::write_config_json(atomic.path(), config.to_json(), dtype)?;
    atomic.commit()?;
    Ok(())
}

/// Sum of the sizes of the `.safetensors` files in `dir`.
fn weights_size(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_name().to_string_lossy().ends_with(".safetensors") {
            n += e.metadata()?.len();
        }
    }
    Ok(n)
}

/// `bench grow --arch llama`: the issue-12 shape (or `--small`), grow and an fsynced copy of the
/// output's weight files, alternating, in one run.
fn run_llama(args: GrowArgs) -> Result<()> {
    use bert2bert_checkpoint::{LlamaConfig, LlamaKind};
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    let (cfg, target) = if args.small {
        (
            LlamaConfig::new(LlamaKind::Llama, 1000, 256, 2, 8, 2, 32, 512, false),
            [3, 384, 12, 3, 768],
        )
    } else {
        (
            LlamaConfig::new(LlamaKind::Llama, 32000, 2048, 16, 32, 8, 64, 8192, false),
            [24, 3072, 48, 12, 12288],
        )
    };
    let source = dir.join("source-llama");
    let params: usize = bert2bert_checkpoint::llama::tensor_table(&cfg)
        .iter()
        .map(|d| d.shape.iter().product::<usize>())
        .sum();
    if !source.join("config.json").exists() {
        eprintln!(
            "generating a random bf16 Llama ({params} parameters, {} x {}) in {} ...",
            cfg.num_hidden_layers,
            cfg.hidden_size,
            source.display()
        );
        // Two shards, as the issue asks: split at half the bf16 bytes (plus slack).
        let shard = (params as u64 * 2).div_ceil(2) + (1 << 20);
        write_random_llama(&source, &cfg, Dtype::BF16, shard)?;
    }
    let out = dir.join("grown-llama");
    // Output shards of at most half the bytes (two files), like the source.
    let out_shard = if args.small { "2MB" } else { "4GB" };
    let t = target.map(|x| x.to_string());
    let grow_args = [
        "--layers",
        &t[0],
        "--hidden",
        &t[1],
        "--heads",
        &t[2],
        "--kv-heads",
        &t[3],
        "--intermediate",
        &t[4],
        "--max-shard-size",
        out_shard,
    ];
    let copy = dir.join("copy-llama");
    let (grows, copies) = alternate(args.runs, &source, &out, &copy, &grow_args)?;
    let (g, c) = (median(&grows), median(&copies));
    let out_bytes = weights_size(&out)?;
    let src_bytes = weights_size(&source)?;
    let grown_params: usize = {
        let gc = bert2bert_checkpoint::LlamaConfig::read(&out)?;
        bert2bert_checkpoint::llama::tensor_table(&gc)
            .iter()
            .map(|d| d.shape.iter().product::<usize>())
            .sum()
    };
    let gb = |b: u64| b as f64 / 1e9;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let load = load_average();
    if args.json {
        let v = serde_json::json!({
            "source_parameters": params, "grown_parameters": grown_params,
            "source_bytes": src_bytes, "output_bytes": out_bytes, "runs": args.runs,
            "grow": g, "copy": c,
            "grow_seconds": grows.iter().map(|m| m.seconds).collect::<Vec<_>>(),
            "copy_seconds": copies.iter().map(|m| m.seconds).collect::<Vec<_>>(),
            "time_ratio": g.seconds / c.seconds,
            "peak_rss_gib": gib(g.peak_rss),
            "load_average": load,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "llama {params} -> {grown_params} parameters, bf16: source {:.2} GB -> output {:.2} GB, median of {} runs",
            gb(src_bytes),
            gb(out_bytes),
            args.runs
        );
        for (name, m) in [
            ("cargo xtask grow (FPI)", g),
            ("cp + fsync of the output", c),
        ] {
            println!(
                "{name:<28} {:>8.2} s  user+sys {:.2}+{:.2}  peak RSS {:.2} GiB",
                m.seconds,
                m.user,
                m.system,
                gib(m.peak_rss)
            );
        }
        println!("load average when done: {load}");
        println!(
            "grow / copy time: {:.2}x (target <= 2x); peak RSS {:.2} GiB (target <= 2 GiB)",
            g.seconds / c.seconds,
            gib(g.peak_rss)
        );
    }
    Ok(())
}
