//! `cargo xtask experiment` end to end on the smoke preset: an interrupted run resumes, a
//! finished one is skipped, the output files exist, the FLOPs accounting is ordered as the
//! methods imply, the savings follow their definition, and docs are checked against the summary.
//! (The science is not checked here: the smoke preset is far too small for that.)

mod common;
use common::{json_file, s, stderr, xtask};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn metrics(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

/// The runs of `method` in `setting`, by seed.
fn runs<'a>(summary: &'a Value, setting: &str, method: &str) -> &'a Vec<Value> {
    let set = summary["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == setting)
        .unwrap();
    let m = set["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["method"] == method)
        .unwrap_or_else(|| panic!("no {method} in {setting}"));
    m["runs"].as_array().unwrap()
}

fn total_flops(summary: &Value, setting: &str, method: &str, seed: usize) -> f64 {
    f(&runs(summary, setting, method)[seed]["total_flops"])
}

#[test]
fn smoke_experiment_resumes_skips_and_accounts_flops_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("smoke");
    let assets = root().join("assets");
    let base = [
        "experiment",
        "--preset",
        "smoke",
        "--quiet",
        "--out",
        s(&out),
        "--assets",
        s(&assets),
    ];

    // Interrupted at step 10 of every run (24 steps; StackBERT stacks at 6, stage 1 ends at 3).
    let o = xtask(&[&base[..], &["--stop-at", "10"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("run the same command again"),
        "{}",
        stderr(&o)
    );
    let fpi = out.join("runs/width-fpi-s0");
    assert!(
        !fpi.join("model").exists(),
        "stopped runs have no final model"
    );
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(fpi.join("checkpoint/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["step"], 10);

    // An experiment with other settings in the same folder is refused (seeds may change).
    let plan_path = out.join("experiment.json");
    let plan = std::fs::read_to_string(&plan_path).unwrap();
    assert!(plan.contains("\"steps\": 24,"), "{plan}");
    std::fs::write(
        &plan_path,
        plan.replacen("\"steps\": 24,", "\"steps\": 25,", 1),
    )
    .unwrap();
    let o = xtask(&base);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--restart"), "{}", stderr(&o));
    std::fs::write(&plan_path, plan).unwrap();

    // Resumed to the end by two worker processes (`--jobs 2`), each with one core.
    let o = xtask(&[&base[..], &["--jobs", "2"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let log = out.join("logs/width-fpi-s0.log");
    assert!(
        log.is_file(),
        "{} missing: no worker trained it",
        log.display()
    );
    for f in [
        "summary.json",
        "table.md",
        "experiment.json",
        "loss_vs_flops_width.png",
        "loss_vs_time_width.png",
        "loss_vs_flops_depth.png",
        "loss_vs_time_depth.png",
        "metrics/width-bert2bert-s1.jsonl",
        "metrics/source-2x32.jsonl",
        "metrics/source-gpt2-2x32.jsonl",
        "metrics/gpt2-exact-s0.jsonl",
        "loss_vs_flops_gpt2.png",
    ] {
        let p = out.join(f);
        assert!(p.is_file(), "{} missing", p.display());
        if f.ends_with(".png") {
            let bytes = std::fs::read(&p).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{f} is not a PNG");
            assert!(bytes.len() > 10_000, "{f} is suspiciously small");
        }
    }
    let summary = json_file(&out.join("summary.json"));
    assert_eq!(summary["complete"], true);
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(table.contains("| StackBERT |"), "{table}");
    // Smoke's 2-layer targets and 40-step sources are far from the paper's regime: the table
    // says why and prints no saving.
    assert!(
        table.contains("**Out of the paper's regime, so no saving is printed**")
            && table.contains("the target has 2 layers (at least 4)"),
        "{table}"
    );
    assert_eq!(summary["settings"][0]["regime"]["in_regime"], false);

    // The resumed run logged each step once, up to the end, with FLOPs never decreasing.
    let m = metrics(&fpi.join("metrics.jsonl"));
    let steps: Vec<u64> = m.iter().map(|x| x["step"].as_u64().unwrap()).collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    assert_eq!(*steps.last().unwrap(), 24);
    assert!(m.windows(2).all(|w| f(&w[0]["flops"]) <= f(&w[1]["flops"])));

    // FLOPs accounting: same shape, same steps, same FLOPs; stage 1 and the shallow phase cost less.
    for (setting, seeds) in [("width", 2), ("depth", 1)] {
        for seed in 0..seeds {
            let scratch = total_flops(&summary, setting, "scratch", seed);
            assert!(scratch > 0.0);
            assert_eq!(total_flops(&summary, setting, "fpi", seed), scratch);
            let b2b = total_flops(&summary, setting, "bert2bert", seed);
            assert!(
                b2b < scratch,
                "two-stage must be cheaper: {b2b} vs {scratch}"
            );
            if setting == "width" {
                for same in ["directcopy", "aki"] {
                    assert_eq!(
                        total_flops(&summary, setting, same, seed),
                        scratch,
                        "{same}"
                    );
                }
                let stack = total_flops(&summary, setting, "stackbert", seed);
                assert!(
                    stack < scratch && stack > 0.75 * scratch,
                    "{stack} vs {scratch}"
                );
            }
        }
    }
    // The GPT-2 setting: next-token runs of the same FLOPs budget; the exact map starts at the
    // source's own held-out loss (function preserved through growth at a 1.5x ratio, 1e-5
    // relative in f32), the paper's FPI map at a non-integer ratio does not.
    let gpt2 = summary["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "gpt2")
        .expect("a GPT-2 setting");
    assert_eq!(gpt2["arch"], "gpt2");
    let scratch = total_flops(&summary, "gpt2", "scratch", 0);
    for same in ["fpi", "exact", "aki"] {
        assert_eq!(total_flops(&summary, "gpt2", same, 0), scratch, "{same}");
    }
    assert!(total_flops(&summary, "gpt2", "bert2bert", 0) < scratch);
    let src_loss = f(&gpt2["source"]["eval_loss"]);
    let start = |m: &str| f(&runs(&summary, "gpt2", m)[0]["start_loss"]);
    assert!(
        (start("exact") - src_loss).abs() <= 1e-5 * src_loss,
        "exact map: {} vs source {src_loss}",
        start("exact")
    );
    assert!(
        (start("fpi") - src_loss).abs() > 1e-4,
        "paper FPI at 1.5x should not be exact for pre-LN: {} vs {src_loss}",
        start("fpi")
    );
    let model = out.join("runs/gpt2-exact-s0/model");
    let config = std::fs::read_to_string(model.join("config.json")).unwrap();
    assert!(config.contains("GPT2LMHeadModel"), "{config}");
    assert!(model.join("merges.txt").is_file());

    // bert2BERT logs both stages.
    let b2b = metrics(&out.join("runs/width-bert2bert-s0/metrics.jsonl"));
    assert!(b2b.iter().any(|x| x["stage"] == 1) && b2b.iter().any(|x| x["stage"] == 2));
    // StackBERT: the stacked model is evaluated at the stacking step (6), and a step of the
    // half-depth model costs less than a step after stacking.
    let st = metrics(&out.join("runs/stackbert-2x48-s0/metrics.jsonl"));
    let at = |step: u64| st.iter().find(|x| x["step"] == step).unwrap();
    assert!(at(6)["eval_loss"].is_f64());
    let shallow = (f(&at(6)["flops"]) - f(&at(4)["flops"])) / 2.0;
    let deep = (f(&at(8)["flops"]) - f(&at(6)["flops"])) / 2.0;
    assert!(shallow > 0.0 && shallow < deep, "{shallow} vs {deep}");

    // Savings follow their definition, from the summary's own numbers.
    for set in summary["settings"].as_array().unwrap() {
        let src = f(&set["source"]["flops"]);
        assert!(src > 0.0, "the source's pre-training FLOPs are reported");
        let scratch = &set["methods"][0]["runs"];
        for m in set["methods"].as_array().unwrap() {
            for (k, r) in m["runs"].as_array().unwrap().iter().enumerate() {
                let sf = f(&scratch[k]["total_flops"]);
                assert_eq!(r["target_loss"], scratch[k]["final_loss"]);
                if let Some(x) = r["flops_to_target"].as_f64() {
                    assert!(x <= f(&r["total_flops"]) + 1.0);
                    assert!((f(&r["saving"]) - (1.0 - x / sf)).abs() < 1e-12);
                    if let Some(w) = r["saving_with_source"].as_f64() {
                        assert!((w - (1.0 - (x + src) / sf)).abs() < 1e-12);
                        assert!(w < f(&r["saving"]));
                    }
                } else {
                    assert!(r["saving"].is_null());
                }
            }
        }
    }

    // A finished experiment is skipped: no run trains again.
    let before = std::fs::read(fpi.join("metrics.jsonl")).unwrap();
    let o = xtask(&base);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(fpi.join("metrics.jsonl")).unwrap(), before);

    // A clean clone of a committed results folder (no runs/): runs whose recorded metrics
    // reach the last step are not trained again; one whose record is missing is.
    let clone = tmp.path().join("clone");
    std::fs::create_dir_all(clone.join("metrics")).unwrap();
    for f in ["experiment.json", "summary.json"] {
        std::fs::copy(out.join(f), clone.join(f)).unwrap();
    }
    for e in std::fs::read_dir(out.join("metrics")).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "width-aki-s1.jsonl" {
            std::fs::copy(e.path(), clone.join("metrics").join(e.file_name())).unwrap();
        }
    }
    let on_clone = |extra: &[&str]| {
        let mut a = base.to_vec();
        a[5] = s(&clone);
        a.extend_from_slice(extra);
        xtask(&a)
    };
    let o = on_clone(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        clone.join("runs/width-aki-s1/model").is_dir(),
        "the unrecorded run trains"
    );
    assert!(
        !clone.join("runs/width-fpi-s0").exists(),
        "a recorded run trains again"
    );
    let again = json_file(&clone.join("summary.json"));
    assert_eq!(again["complete"], true);
    assert_eq!(
        runs(&again, "width", "fpi")[0]["final_loss"],
        runs(&summary, "width", "fpi")[0]["final_loss"]
    );
    // The same numbers for the retrained run: the record is not what made it finish.
    assert_eq!(
        runs(&again, "width", "aki")[1]["final_loss"],
        runs(&summary, "width", "aki")[1]["final_loss"]
    );
    // Starting over forgets the records: every run trains again (here to step 1).
    let o = on_clone(&["--restart", "--stop-at", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(clone.join("runs/width-fpi-s0/checkpoint").is_dir());
    assert_eq!(json_file(&clone.join("summary.json"))["complete"], false);

    // The document generator and its check.
    let doc = tmp.path().join("results.md");
    let o = xtask(&[&base[..], &["--report", "--doc", s(&doc)]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&doc).unwrap();
    assert!(text.contains("smoke/loss_vs_flops_width.png"), "{text}");
    let check = ["experiment", "--out", s(&out), "--check-doc", s(&doc)];
    let o = xtask(&check);
    assert!(o.status.success(), "{}", stderr(&o));
    // Prose outside the generated part is free; a changed number inside it is caught.
    std::fs::write(&doc, format!("{text}\nMore discussion.\n")).unwrap();
    assert!(xtask(&check).status.success());
    let scratch_total = format!("{:.3e}", total_flops(&summary, "width", "scratch", 0));
    assert!(
        text.contains(&scratch_total),
        "{scratch_total} not in the doc"
    );
    std::fs::write(&doc, text.replacen(&scratch_total, "1.000e0", 1)).unwrap();
    let o = xtask(&check);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not match"), "{}", stderr(&o));
}

/// docs/results.md is generated from results/mini/summary.json (or says no results exist yet).
#[test]
fn results_doc_matches_the_mini_summary() {
    check_results_doc("mini");
}

/// The GPT-2 part of docs/results.md has its own markers and its own summary.
#[test]
fn results_doc_matches_the_gpt2_mini_summary() {
    check_results_doc("gpt2-mini");
}

/// The regime run's part of docs/results.md, likewise.
#[test]
fn results_doc_matches_the_regime_gpt2_summary() {
    check_results_doc("regime-gpt2");
}

/// The BERT regime run's part (out of the regime, and saying why), likewise.
#[test]
fn results_doc_matches_the_regime_bert_summary() {
    check_results_doc("regime-bert");
}

/// The CPU run of the GPU-sized BERT regime preset (out of the regime, incomplete), likewise.
#[test]
fn results_doc_matches_the_regime_bert_gpu_summary() {
    check_results_doc("regime-bert-gpu");
}

/// The two-Bible BERT regime run's part (in progress over several sessions), likewise.
#[test]
fn results_doc_matches_the_regime_bert_bibles_summary() {
    check_results_doc("regime-bert-bibles");
}

fn check_results_doc(preset: &str) {
    let root = root();
    let o = xtask(&[
        "experiment",
        "--preset",
        preset,
        "--out",
        s(&root.join("results").join(preset)),
        "--check-doc",
        s(&root.join("docs/results.md")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}
