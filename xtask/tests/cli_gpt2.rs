//! The command line with GPT-2 (issue 7), end to end through the binary: family detection,
//! exact growth at a non-integer ratio, identity depth, target configs, and the pre-LN-only
//! options refused for BERT (exit 2, nothing left on disk).

mod common;
use common::{grow_json, json_file, s, stderr, testdata, verify_exact, xtask};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A writable copy of the GPT-2 fixture (with its generation config, which must travel).
fn copy_gpt2(dir: &Path) -> PathBuf {
    let files = ["config.json", "model.safetensors", "generation_config.json"];
    common::copy_fixture("hf-gpt2-tiny", &files, dir)
}

/// The tensor names in a safetensors file's header.
fn tensor_names(file: &Path) -> BTreeSet<String> {
    let bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect()
}

/// The names a GPT2LMHeadModel with `layers` blocks and a tied head stores (what transformers'
/// `save_pretrained` wrote for the fixture, with the block count changed).
fn hf_names(layers: usize) -> BTreeSet<String> {
    let fixture = tensor_names(&testdata("hf-gpt2-tiny").join("model.safetensors"));
    let mut out = BTreeSet::new();
    for n in &fixture {
        match n.strip_prefix("transformer.h.0.") {
            Some(rest) => {
                for l in 0..layers {
                    out.insert(format!("transformer.h.{l}.{rest}"));
                }
            }
            None if !n.starts_with("transformer.h.") => {
                out.insert(n.clone());
            }
            None => {}
        }
    }
    out
}

/// The exact GPT-2 growths: `--map exact` at a non-integer width ratio, and identity depth.
/// Each preserves the function (the report, and `verify --expect-exact` on its own), writes the
/// names transformers writes, and carries the other config fields and files.
#[test]
fn gpt2_exact_growths_preserve_the_function() {
    type Check = fn(&serde_json::Value);
    let cases: [(&str, &[&str], usize, Check); 2] = [
        (
            // Default target: 1.5x width (64 -> 96, head size 32 kept: 3 heads).
            "exact map at 1.5x",
            &[],
            2,
            |cfg| {
                assert_eq!(cfg["n_embd"], 96);
                assert_eq!(cfg["n_head"], 3);
                assert_eq!(cfg["n_inner"], serde_json::Value::Null, "4 x n_embd");
                let eps = cfg["layer_norm_epsilon"].as_f64().unwrap();
                assert!((eps - 1e-5 * 64.0 / 96.0).abs() < 1e-15, "{eps}");
                assert_eq!(
                    cfg["activation_function"], "gelu_new",
                    "other fields carried"
                );
                assert_eq!(cfg["architectures"][0], "GPT2LMHeadModel");
            },
        ),
        (
            "identity depth",
            &["--hidden", "96", "--layers", "5", "--depth", "identity"],
            5,
            |_| {},
        ),
    ];
    for (name, more, layers, check) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let src = copy_gpt2(tmp.path());
        let out = tmp.path().join("grown");
        let args = [
            "--source",
            s(&src),
            "--out",
            s(&out),
            "--method",
            "fpi",
            "--map",
            "exact",
        ];
        let report = grow_json(&[&args[..], more].concat());
        assert_eq!(report["grow"]["family"], "gpt2", "{name}");
        assert_eq!(report["grow"]["expected_exact"], true, "{name}: {report:#}");
        assert_eq!(report["verify"]["exact"], true, "{name}: {report:#}");
        assert!(
            report["verify"]["lm_logits"]["max_rel"].as_f64().unwrap() < 1e-5,
            "{name}"
        );
        let cfg = json_file(&out.join("config.json"));
        assert_eq!(cfg["n_layer"], layers, "{name}");
        check(&cfg);
        assert!(out.join("generation_config.json").is_file(), "{name}");
        assert_eq!(
            tensor_names(&out.join("model.safetensors")),
            hf_names(layers),
            "{name}"
        );
        let o = verify_exact(&src, &out);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("lm logits"),
            "{name}"
        );
    }
}

/// `--target-config` reads GPT-2's field names; paper FPI at an integer ratio is exact; and a
/// non-exact growth fails `verify --expect-exact` with exit 1.
#[test]
fn gpt2_target_config_and_expect_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_gpt2(tmp.path());
    let target = tmp.path().join("target.json");
    std::fs::write(
        &target,
        r#"{"model_type": "gpt2", "n_layer": 2, "n_embd": 128, "n_head": 4, "n_inner": null}"#,
    )
    .unwrap();
    let out = tmp.path().join("x2");
    let report = grow_json(&[
        "--source",
        s(&src),
        "--out",
        s(&out),
        "--method",
        "fpi",
        "--target-config",
        s(&target),
    ]);
    assert_eq!(report["grow"]["target"]["intermediate"], 512);
    assert_eq!(report["verify"]["exact"], true, "{report:#}");
    let cfg = json_file(&out.join("config.json"));
    assert_eq!(
        (cfg["n_embd"].as_u64(), cfg["n_head"].as_u64()),
        (Some(128), Some(4))
    );
    assert_eq!(cfg["layer_norm_epsilon"].as_f64(), Some(1e-5));

    let balanced = tmp.path().join("balanced");
    let report = grow_json(&[
        "--source",
        s(&src),
        "--out",
        s(&balanced),
        "--method",
        "fpi",
        "--hidden",
        "96",
    ]);
    assert_eq!(report["grow"]["expected_exact"], false);
    let o = verify_exact(&src, &balanced);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not function-preserving"),
        "{}",
        stderr(&o)
    );

    let bert_target = tmp.path().join("bert.json");
    std::fs::write(
        &bert_target,
        r#"{"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 512}"#,
    )
    .unwrap();
    let o = xtask(&[
        "grow",
        "--source",
        s(&src),
        "--out",
        s(&tmp.path().join("never")),
        "--target-config",
        s(&bert_target),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("the target config is a bert model but the source is gpt2"));
    assert!(!tmp.path().join("never").exists());
}

#[test]
fn bert_refuses_pre_ln_only_options_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::copy_fixture(
        "hf-bert-tiny",
        &["config.json", "model.safetensors"],
        tmp.path(),
    );
    for (flag, value) in [("--map", "exact"), ("--depth", "identity")] {
        let out = tmp.path().join("grown");
        let o = xtask(&[
            "grow",
            "--source",
            s(&src),
            "--out",
            s(&out),
            "--layers",
            "3",
            flag,
            value,
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains(&format!("{flag} {value} is not available for BERT models")),
            "{e}"
        );
        assert!(e.contains("post-LN"), "{e}");
        assert_eq!(e.lines().count(), 1, "one readable line: {e}");
        assert!(!out.exists(), "nothing written");
    }
}
