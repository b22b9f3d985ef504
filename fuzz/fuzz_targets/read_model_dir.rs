//! Fuzzes a whole model folder: `config.json` together with its tensors, as one file or as a
//! sharded set behind `model.safetensors.index.json`, through `read_model_dir`. Any input must
//! give a model or a typed error naming the folder, never a panic or an allocation the files do
//! not justify (a config claiming more than the tensors hold).
//!
//! Input: sections separated by `SEPARATOR`: `config.json`, `model.safetensors`,
//! `model.safetensors.index.json`, then shards `model-00001.safetensors`, ...; an empty section
//! (or a missing one) is a file that is not written. Seeds:
//! `crates/checkpoint/examples/fuzz_seeds.rs`, which writes the same format.
#![no_main]

use bert2bert_checkpoint::{Dtype, WriteOptions, read_model_dir};
use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Between two files of the input; keep in step with `fuzz_seeds.rs`.
const SEPARATOR: &[u8] = b"\n--8<-- next file --8<--\n";

/// The files of the folder, in section order (shards after these).
const NAMES: [&str; 3] = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
];

/// A folder of this process in memory-backed storage (the files are rewritten every run).
fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_owned()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("bert2bert-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzz folder");
        dir
    })
}

fn sections(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        out.push(&rest[..i]);
        rest = &rest[i + SEPARATOR.len()..];
    }
    out.push(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    let dir = root().join("m");
    let out = root().join("out");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir(&dir).expect("create the model folder");
    let parts = sections(data);
    if parts.len() > 12 {
        return; // more shards say nothing new and cost file writes
    }
    let mut file_bytes = 0usize;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        let name = match NAMES.get(i) {
            Some(n) => (*n).to_owned(),
            None => format!("model-{:05}.safetensors", i - NAMES.len() + 1),
        };
        std::fs::write(dir.join(name), part).expect("write a fuzz file");
        if i > 0 {
            file_bytes += part.len();
        }
    }
    match read_model_dir(&dir) {
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(dir.to_str().unwrap()),
                "error names the folder: {msg}"
            );
        }
        Ok(md) => {
            md.model.validate().expect("a loaded model is valid");
            // What was allocated is what the files hold: every element is at least 2 bytes
            // there (F16, BF16) and 4 here.
            let held = md.model.num_parameters() * 4;
            assert!(
                held <= 2 * file_bytes,
                "{held} bytes from {file_bytes} bytes of files"
            );
            // Written back (as F32, which holds every value read exactly) and read again, it is
            // the same weights.
            let opts = WriteOptions {
                dtype: Some(Dtype::F32),
                overwrite: false,
            };
            md.write(&out, &opts).expect("a loaded model writes");
            let again = read_model_dir(&out).expect("what was written reads");
            assert!(
                again.model.named_tensors() == md.model.named_tensors(),
                "round trip changed the weights"
            );
        }
    }
});
