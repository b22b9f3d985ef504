//! The command line with Llama-family checkpoints (issue 12), end to end through the binary:
//! exact growth at non-integer ratios with GQA for Llama, Qwen2 (tied) and Qwen3 (q/k norms),
//! `--target-config`, identity depth, sharded output, `verify --expect-exact`, the dtype kept,
//! and clear refusals (head size, GQA groups, pre-training).

mod common;
use common::{grow_json, json_file, s, stderr, testdata, xtask};
use std::path::{Path, PathBuf};

/// A writable copy of fixture `name` with its generation config (which must travel).
fn copy_fixture(name: &str, dir: &Path) -> PathBuf {
    let src = dir.join(name);
    std::fs::create_dir_all(&src).unwrap();
    for f in ["config.json", "model.safetensors", "generation_config.json"] {
        std::fs::copy(testdata(name).join(f), src.join(f)).unwrap();
    }
    src
}

#[test]
fn llama_exact_growth_at_1_5x_with_gqa_preserves_the_function() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture("hf-llama-tiny", tmp.path());
    let out = tmp.path().join("grown");
    // Default target: 64 -> 96 hidden, 4 -> 6 query heads, 2 -> 3 KV heads, FFN 160 -> 240.
    let r = grow_json(&[
        "--source",
        s(&src),
        "--out",
        s(&out),
        "--method",
        "fpi",
        "--map",
        "exact",
    ]);
    assert_eq!(r["grow"]["family"], "llama");
    assert_eq!(r["grow"]["expected_exact"], true, "{r:#}");
    assert_eq!(r["verify"]["exact"], true, "{r:#}");
    let cfg = json_file(&out.join("config.json"));
    assert_eq!(cfg["hidden_size"], 96);
    assert_eq!(cfg["num_attention_heads"], 6);
    assert_eq!(cfg["num_key_value_heads"], 3);
    assert_eq!(cfg["intermediate_size"], 240);
    assert_eq!(cfg["head_dim"], 16);
    assert_eq!(cfg["rms_norm_eps"], 1e-6, "epsilon unchanged");
    assert_eq!(cfg["rope_parameters"]["rope_theta"], 10000.0, "carried");
    assert!(out.join("generation_config.json").is_file());
    // verify on its own agrees.
    let o = xtask(&[
        "verify",
        "--source",
        s(&src),
        "--grown",
        s(&out),
        "--expect-exact",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn qwen3_from_a_target_config_with_identity_depth_and_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture("hf-qwen3-tiny", tmp.path());
    let mut target = json_file(&src.join("config.json"));
    for (k, v) in [
        ("hidden_size", 80),
        ("num_attention_heads", 8),
        ("num_key_value_heads", 4),
        ("intermediate_size", 200),
        ("num_hidden_layers", 3),
    ] {
        target[k] = v.into();
    }
    let tc = tmp.path().join("target.json");
    std::fs::write(&tc, target.to_string()).unwrap();
    let out = tmp.path().join("grown");
    let r = grow_json(&[
        "--source",
        s(&src),
        "--out",
        s(&out),
        "--target-config",
        s(&tc),
        "--method",
        "fpi",
        "--map",
        "exact",
        "--depth",
        "identity",
        "--max-shard-size",
        "200KB",
        "--steps",
        "8",
        "--stage1-steps",
        "4",
        "--lb",
        "2",
    ]);
    assert_eq!(r["verify"]["exact"], true, "{r:#}");
    assert!(out.join("model.safetensors.index.json").is_file());
    assert!(!out.join("model.safetensors").exists());
    let cfg = json_file(&out.join("config.json"));
    assert_eq!(cfg["num_hidden_layers"], 3);
    assert_eq!(cfg["layer_types"].as_array().unwrap().len(), 3);
    assert_eq!(cfg["tie_word_embeddings"], true, "the tie is kept");

    // The schedule names exactly the tensors written (tied: no lm_head), for the PyTorch package.
    let sched = json_file(&out.join("bert2bert_schedule.json"));
    assert_eq!(
        r["schedule"].as_str().unwrap(),
        s(&out.join("bert2bert_schedule.json"))
    );
    assert_eq!(sched["family"], "qwen3");
    assert_eq!(
        (sched["layers"].as_u64(), sched["lb"].as_u64()),
        (Some(3), Some(2))
    );
    let index = json_file(&out.join("model.safetensors.index.json"));
    let mut written: Vec<String> = index["weight_map"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    written.sort();
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&sched["parameters"]), written);
    assert!(!written.iter().any(|n| n == "lm_head.weight"));
    let no_decay = names(&sched["no_weight_decay"]);
    assert!(
        no_decay
            .iter()
            .any(|n| n == "model.layers.0.self_attn.q_norm.weight")
    );
    assert!(no_decay.iter().any(|n| n == "model.norm.weight"));
    assert!(!no_decay.iter().any(|n| n.ends_with("q_proj.weight")));
    // Sub-models of depth 2 and 3: the top two layers and the head (the final norm) train,
    // never the embeddings.
    let subs = sched["submodels"].as_array().unwrap();
    let depths: Vec<u64> = subs.iter().map(|m| m["depth"].as_u64().unwrap()).collect();
    assert_eq!(depths, [2, 3]);
    let top = names(&subs[1]["trainable"]);
    assert!(
        top.iter().all(|n| n.starts_with("model.layers.1.")
            || n.starts_with("model.layers.2.")
            || n == "model.norm.weight"),
        "{top:?}"
    );
    assert!(top.iter().any(|n| n == "model.norm.weight"));
    assert!(!top.iter().any(|n| n.starts_with("model.embed_tokens")));
}

#[test]
fn qwen2_tied_aki_is_not_exact_and_says_so_and_bf16_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture("hf-qwen2-tiny", tmp.path());
    let out = tmp.path().join("grown");
    let r = grow_json(&["--source", s(&src), "--out", s(&out), "--dtype", "bf16"]);
    assert_eq!(r["grow"]["expected_exact"], false);
    assert_eq!(r["dtype"], "BF16");
    let cfg = json_file(&out.join("config.json"));
    assert_eq!(cfg["dtype"], "bfloat16");
    // The grown bf16 folder is itself a source that keeps its dtype by default.
    let out2 = tmp.path().join("grown2");
    let r = grow_json(&[
        "--source",
        s(&out),
        "--out",
        s(&out2),
        "--no-verify",
        "--hidden",
        "128",
        "--heads",
        "8",
        "--kv-heads",
        "4",
    ]);
    assert_eq!(r["dtype"], "BF16");
}

#[test]
fn refusals_are_clear_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture("hf-llama-tiny", tmp.path());
    let out = tmp.path().join("grown");
    // Query heads that do not split into the KV groups.
    let o = xtask(&[
        "grow",
        "--source",
        s(&src),
        "--out",
        s(&out),
        "--heads",
        "5",
        "--kv-heads",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("KV"), "{}", stderr(&o));
    // A target config with another head size.
    let mut target = json_file(&src.join("config.json"));
    target["hidden_size"] = 128.into();
    target["head_dim"] = 32.into();
    let tc = tmp.path().join("target.json");
    std::fs::write(&tc, target.to_string()).unwrap();
    let o = xtask(&[
        "grow",
        "--source",
        s(&src),
        "--out",
        s(&out),
        "--target-config",
        s(&tc),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("head_dim 32"), "{}", stderr(&o));
    // Another family member as target.
    target["model_type"] = "qwen2".into();
    target["head_dim"] = 16.into();
    std::fs::write(&tc, target.to_string()).unwrap();
    let o = xtask(&[
        "grow",
        "--source",
        s(&src),
        "--out",
        s(&out),
        "--target-config",
        s(&tc),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // An output that is the source (or lies inside it), even with --overwrite: refused
    // before anything is written, the source untouched.
    let before = std::fs::read(src.join("model.safetensors")).unwrap();
    for out in [src.clone(), src.join("inner")] {
        let o = xtask(&["grow", "--source", s(&src), "--out", s(&out), "--overwrite"]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("source"), "{}", stderr(&o));
    }
    assert!(!src.join("inner").exists());
    assert_eq!(
        std::fs::read(src.join("model.safetensors")).unwrap(),
        before
    );
    // Pre-training a Llama-family model points to the PyTorch side.
    let o = xtask(&[
        "pretrain",
        "--init",
        s(&src),
        "--out",
        s(&tmp.path().join("run")),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("python/"), "{}", stderr(&o));
}

#[test]
fn the_llama_growth_benchmark_runs_at_a_tiny_size() {
    let tmp = tempfile::tempdir().unwrap();
    let o = xtask(&[
        "bench",
        "grow",
        "--arch",
        "llama",
        "--small",
        "--runs",
        "1",
        "--json",
        "--dir",
        s(tmp.path()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["grown_parameters"].as_u64().unwrap() > v["source_parameters"].as_u64().unwrap());
    assert!(v["time_ratio"].as_f64().unwrap() > 0.0);
    // The source was written in two shards, the output too.
    for d in ["source-llama", "grown-llama"] {
        assert!(
            tmp.path()
                .join(d)
                .join("model.safetensors.index.json")
                .is_file(),
            "{d}"
        );
    }
}
