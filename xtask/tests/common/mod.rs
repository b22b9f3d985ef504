//! Helpers shared by the command-line tests: run the built binary, find the fixtures.
#![allow(dead_code)] // each test file uses a subset

#[path = "../../../crates/checkpoint/tests/common/real_checkpoint.rs"]
mod real_checkpoint;
#[allow(unused_imports)] // used by cli.rs only
pub use real_checkpoint::real_checkpoint;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A folder of `testdata/`.
pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

/// Runs the xtask binary with `args`.
pub fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("runs")
}

/// The run's standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A path as `&str` for argument lists.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A JSON file, parsed.
pub fn json_file(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Runs `grow` with `args` and `--json`, requires success, and returns the report.
pub fn grow_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["grow"];
    all.extend_from_slice(args);
    all.push("--json");
    let o = xtask(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Runs the xtask binary with `args` and the environment variables `env` set.
pub fn xtask_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("runs")
}

/// A writable copy of `files` of fixture `name` in `dir/src`.
pub fn copy_fixture(name: &str, files: &[&str], dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    for f in files {
        std::fs::copy(testdata(name).join(f), src.join(f)).unwrap();
    }
    src
}

/// `verify --source --grown --expect-exact`.
pub fn verify_exact(source: &Path, grown: &Path) -> Output {
    xtask(&[
        "verify",
        "--source",
        s(source),
        "--grown",
        s(grown),
        "--expect-exact",
    ])
}

/// Fails unless `dir` holds exactly `keep` (no temporary folders left behind).
pub fn assert_only(dir: &Path, keep: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut keep: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    keep.sort();
    assert_eq!(names, keep, "unexpected leftovers in {}", dir.display());
}

/// Every file under `dir` with its bytes, to check that a refused command changed nothing.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}
