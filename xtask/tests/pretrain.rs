//! `cargo xtask pretrain` end to end on the bundled corpus with a tiny BERT and a tiny GPT-2:
//! two-stage training, a run stopped and resumed equals an uninterrupted one, `--init` continues
//! from a checkpoint of the same family.

mod common;
use common::{json_file, stderr, testdata};
use std::path::Path;

/// Runs `xtask pretrain` with `args`.
fn xtask(args: &[&str]) -> std::process::Output {
    common::xtask(&[&["pretrain"], args].concat())
}

const TINY: &[&str] = &[
    "--layers",
    "2",
    "--hidden",
    "16",
    "--heads",
    "2",
    "--ffn",
    "32",
    "--seq-len",
    "32",
    "--batch-size",
    "4",
    "--steps",
    "6",
    "--warmup",
    "2",
    "--lr",
    "3e-3",
    "--eval-every",
    "3",
    "--eval-sequences",
    "8",
    "--log-every",
    "1",
    "--two-stage",
    "--lb",
    "1",
    "--stage1-steps",
    "2",
    "--quiet",
];

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn pretrain_two_stage_stop_resume_and_init() {
    two_stage_stop_resume_and_init("bert", &["vocab.txt"], "BertForMaskedLM");
}

#[test]
fn pretrain_gpt2_two_stage_stop_resume_and_init() {
    two_stage_stop_resume_and_init("gpt2", &["vocab.json", "merges.txt"], "GPT2LMHeadModel");
}

fn two_stage_stop_resume_and_init(arch: &str, tokenizer_files: &[&str], architecture: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    let split = tmp.path().join("split");
    let run = |out: &Path, extra: &[&str]| {
        let o = xtask(
            &[
                TINY,
                &["--arch", arch, "--out", out.to_str().unwrap()],
                extra,
            ]
            .concat(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    run(&full, &[]);
    run(&split, &["--stop-at", "4"]);
    assert!(!split.join("model").exists());
    assert_eq!(metrics(&split).last().unwrap()["step"], 4);
    // Starting again over an existing run is refused; --resume continues it.
    let o = xtask(&[TINY, &["--arch", arch, "--out", split.to_str().unwrap()]].concat());
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--resume"));
    let o = xtask(&["--out", split.to_str().unwrap(), "--resume", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let (a, b) = (metrics(&full), metrics(&split));
    assert_eq!(a.len(), 7, "a line per step plus step 0");
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        for k in ["step", "tokens", "flops", "stage", "lr"] {
            assert_eq!(x[k], y[k], "{k} at step {}", x["step"]);
        }
        for k in ["train_loss", "eval_loss"] {
            match (x[k].as_f64(), y[k].as_f64()) {
                (Some(p), Some(q)) => assert!((p - q).abs() < 1e-5, "{k}: {p} vs {q}"),
                (None, None) => {}
                _ => panic!("{k} at step {}", x["step"]),
            }
        }
    }
    assert_eq!(
        a.iter()
            .map(|m| m["stage"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 1, 1, 2, 2, 2, 2]
    );
    // The final model is a Hugging Face folder with the tokenizer, loadable as --init.
    let model = full.join("model");
    for f in ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .chain(tokenizer_files)
    {
        assert!(model.join(f).is_file(), "{f} missing");
    }
    let config = json_file(&model.join("config.json"));
    assert_eq!(config["architectures"][0], architecture);
    let cont = tmp.path().join("cont");
    let o = xtask(&[
        "--init",
        model.to_str().unwrap(),
        "--out",
        cont.to_str().unwrap(),
        "--steps",
        "2",
        "--seq-len",
        "32",
        "--batch-size",
        "4",
        "--eval-sequences",
        "8",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c = metrics(&cont);
    // Step 0 of the continued run scores the initial weights: the trained model's final loss.
    let last_eval = a.last().unwrap()["eval_loss"].as_f64().unwrap();
    let first_eval = c[0]["eval_loss"].as_f64().unwrap();
    assert!(
        (last_eval - first_eval).abs() < 1e-5,
        "{last_eval} vs {first_eval}"
    );
}

#[test]
fn pretrain_refuses_a_model_whose_vocabulary_is_too_small() {
    let fixture = testdata("hf-bert-tiny");
    let tmp = tempfile::tempdir().unwrap();
    let o = xtask(&[
        "--init",
        fixture.to_str().unwrap(),
        "--out",
        tmp.path().join("o").to_str().unwrap(),
        "--seq-len",
        "16",
        "--quiet",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("vocabulary"), "{err}");
}

#[test]
fn pretrain_refuses_an_arch_that_contradicts_init() {
    let fixture = testdata("hf-bert-tiny");
    let tmp = tempfile::tempdir().unwrap();
    let o = xtask(&[
        "--init",
        fixture.to_str().unwrap(),
        "--arch",
        "gpt2",
        "--out",
        tmp.path().join("o").to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(2), "misuse exits 2");
    let err = stderr(&o);
    assert!(err.contains("--arch") && err.contains("bert"), "{err}");
    assert!(!tmp.path().join("o").exists(), "nothing written");
}

/// `bench train` runs both families end to end (tiny sizes: this checks the wiring, not speed).
#[test]
fn bench_train_runs_for_both_families() {
    for arch in ["bert", "gpt2"] {
        let o = common::xtask(&[
            "bench",
            "train",
            "--arch",
            arch,
            "--steps",
            "1",
            "--vocab",
            "64",
            "--batch-size",
            "2",
            "--seq-len",
            "8",
            "--matmul-size",
            "32",
            "--two-stage",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.starts_with("device Cpu"), "{out}");
        assert!(out.contains(&format!("{arch} training step")), "{out}");
        // Two shapes, each timed in full and in stage 1.
        assert_eq!(out.matches("tokens/s").count(), 4, "{out}");
    }
}

/// `--corpus` picks the text: a run on the Bible corpus with its tokenizer logs the same
/// steps as any run, and its held-out loss differs from the plays' with the same model and seed;
/// a corpus folder without its files is refused, naming the file.
#[test]
fn pretrain_trains_on_the_corpus_it_is_given() {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets");
    let tmp = tempfile::tempdir().unwrap();
    let tok = assets.join("tokenizer-kjv-2k");
    let run = |corpus: &Path, out: &str| {
        let out = tmp.path().join(out);
        let mut args: Vec<&str> = TINY[..TINY.len() - 6].to_vec();
        args.extend(["--quiet", "--tokenizer", tok.to_str().unwrap()]);
        args.extend(["--corpus", corpus.to_str().unwrap()]);
        args.extend(["--out", out.to_str().unwrap()]);
        (xtask(&args), out)
    };
    let (o, kjv) = run(&assets.join("corpus-kjv"), "kjv");
    assert!(o.status.success(), "{}", stderr(&o));
    let (o, plays) = run(&assets.join("corpus"), "plays");
    assert!(o.status.success(), "{}", stderr(&o));
    let first = |d: &Path| metrics(d)[0]["eval_loss"].as_f64().unwrap();
    assert_eq!(metrics(&kjv).len(), metrics(&plays).len());
    assert!(
        (first(&kjv) - first(&plays)).abs() > 1e-4,
        "same held-out set twice"
    );
    assert_eq!(
        json_file(&kjv.join("model/config.json"))["vocab_size"],
        2048
    );

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (o, out) = run(&empty, "none");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("train.txt.gz"), "{err}");
    assert!(!out.join("model").exists(), "nothing trained");
}

/// `--mask-prob` sets how many tokens a BERT step predicts (the head runs at those positions
/// only, so the counted FLOPs grow with it), is kept for `--resume`, and is refused for GPT-2.
#[test]
fn pretrain_predicts_the_mask_fraction_it_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |arch: &str, extra: &[&str], out: &str| {
        let out = tmp.path().join(out);
        let mut args: Vec<&str> = TINY[..TINY.len() - 6].to_vec();
        args.extend(["--quiet", "--arch", arch, "--out", out.to_str().unwrap()]);
        args.extend(extra);
        (xtask(&args), out)
    };
    let (o, bert) = run("bert", &[], "bert");
    assert!(o.status.success(), "{}", stderr(&o));
    let (o, half) = run("bert", &["--mask-prob", "0.5"], "half");
    assert!(o.status.success(), "{}", stderr(&o));
    let flops = |d: &Path| metrics(d)[1]["flops"].as_f64().unwrap();
    assert!(
        flops(&half) > flops(&bert),
        "{} vs {}",
        flops(&half),
        flops(&bert)
    );
    let first = |d: &Path| metrics(d)[0]["eval_loss"].as_f64().unwrap();
    assert!(
        (first(&half) - first(&bert)).abs() > 1e-4,
        "the held-out set ignored the mask fraction"
    );
    assert_eq!(
        json_file(&half.join("pretrain_args.json"))["mask_prob"],
        0.5
    );

    // Refused before anything is written, the earlier run in --overwrite's folder included.
    for bad in ["1.5", "0"] {
        let (o, _) = run("bert", &["--mask-prob", bad, "--overwrite"], "half");
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("not in (0, 1)"), "{}", stderr(&o));
        assert!(half.join("model").is_dir(), "the earlier run was removed");
    }
    let (o, _) = run("gpt2", &["--mask-prob", "0.3"], "gpt2");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("masked-LM (BERT)"), "{}", stderr(&o));
}
