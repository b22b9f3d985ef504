//! The schedule file end to end (docs/distributed.md): `grow` writes it beside the grown model,
//! `pretrain --schedule` follows it and writes the same file into its run, refuses one written
//! for another model, and `--export-batches` writes the documented batch file.

mod common;
use common::{grow_json, json_file, s, stderr, xtask};
use std::path::Path;

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const RUN: &[&str] = &[
    "--batch-size",
    "2",
    "--seq-len",
    "16",
    "--eval-sequences",
    "4",
    "--eval-every",
    "100",
    "--log-every",
    "1",
    "--quiet",
];

#[test]
fn grow_writes_the_schedule_and_pretrain_follows_and_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let grown = tmp.path().join("grown");
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/bundled-bert");
    // Deeper only (same width): the cheapest growth of the bundled model.
    let report = grow_json(&[
        "--source",
        s(&bundled),
        "--out",
        s(&grown),
        "--layers",
        "6",
        "--hidden",
        "128",
        "--no-verify",
        "--steps",
        "4",
        "--stage1-steps",
        "2",
        "--lb",
        "2",
        "--lr",
        "2e-3",
        "--warmup",
        "1",
        "--train-seed",
        "5",
    ]);
    let sched_path = grown.join("bert2bert_schedule.json");
    assert_eq!(report["schedule"].as_str().unwrap(), s(&sched_path));
    let sched = json_file(&sched_path);
    assert_eq!(sched["format"], "bert2bert-schedule");
    assert_eq!(sched["version"], 1);
    assert_eq!(sched["family"], "bert");
    assert_eq!(sched["layers"], 6);
    assert_eq!(
        (sched["lb"].as_u64(), sched["stage1_steps"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(sched["lr"]["peak"].as_f64(), Some(2e-3));
    assert_eq!(sched["seed"], 5);
    let depths: Vec<u64> = sched["submodels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["depth"].as_u64().unwrap())
        .collect();
    assert_eq!(depths, [2, 4, 6]);

    // --schedule replaces the schedule flags: giving both is a usage error.
    let run = tmp.path().join("run");
    let mut args = vec![
        "pretrain",
        "--init",
        s(&grown),
        "--schedule",
        s(&sched_path),
        "--out",
        s(&run),
    ];
    args.extend_from_slice(RUN);
    let o = xtask(&[args.as_slice(), &["--steps", "9"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!run.exists());

    let export = run.join("batches.safetensors");
    let o = xtask(&[args.as_slice(), &["--export-batches", s(&export)]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_file(&run.join("bert2bert_schedule.json")), sched);
    let m = metrics(&run);
    let stages: Vec<u64> = m.iter().map(|x| x["stage"].as_u64().unwrap()).collect();
    assert_eq!(
        stages,
        [1, 1, 1, 2, 2],
        "step 0 line, 2 stage-1 steps, 2 stage-2 steps"
    );
    // The run's settings are the schedule's: its seed and its step count.
    let args_json = json_file(&run.join("pretrain_args.json"));
    assert_eq!(
        (args_json["seed"].as_u64(), args_json["steps"].as_u64()),
        (Some(5), Some(4))
    );
    // The carried schedule of --init does not travel into the run's model folder.
    assert!(!run.join("model/bert2bert_schedule.json").exists());

    let meta = json_file(&run.join("batches.json"));
    assert_eq!(meta["format"], "bert2bert-batches");
    assert_eq!(
        (meta["steps"].as_u64(), meta["first_step"].as_u64()),
        (Some(4), Some(0))
    );
    let t = candle_core::safetensors::load(&export, &candle_core::Device::Cpu).unwrap();
    assert_eq!(t["input_ids"].dims(), [4, 2, 16]);
    assert_eq!(t["labels"].dims(), [4, 2, 16]);
    let loss: Vec<f64> = t["loss"].to_vec1().unwrap();
    let logged: Vec<f64> = m[1..]
        .iter()
        .map(|x| x["train_loss"].as_f64().unwrap())
        .collect();
    assert_eq!(loss, logged, "the exported losses are the trainer's");
    let depth: Vec<i64> = t["depth"].to_vec1().unwrap();
    let frozen: Vec<i64> = t["frozen_below"].to_vec1().unwrap();
    for i in 0..2 {
        assert!([2, 4, 6].contains(&depth[i]) && frozen[i] == depth[i] - 2);
    }
    assert_eq!((depth[2], depth[3], frozen[3]), (6, 6, 0));
    let labels: Vec<i64> = t["labels"].flatten_all().unwrap().to_vec1().unwrap();
    assert!(labels.iter().any(|&l| l >= 0) && labels.iter().filter(|&&l| l == -100).count() > 40);

    // A schedule for another depth is refused before anything is written.
    let mut other = sched.clone();
    other["layers"] = 4.into();
    other["submodels"].as_array_mut().unwrap().pop();
    let other_path = tmp.path().join("other.json");
    std::fs::write(&other_path, other.to_string()).unwrap();
    let run2 = tmp.path().join("run2");
    let mut args2 = vec![
        "pretrain",
        "--init",
        s(&grown),
        "--schedule",
        s(&other_path),
        "--out",
        s(&run2),
    ];
    args2.extend_from_slice(RUN);
    let o = xtask(&args2);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("other.json") && e.contains("4 layers, the model has 6"),
        "{e}"
    );
    assert!(!run2.exists());
}
