//! Writes the seed corpus for the safetensors fuzzer (fuzz/): small valid files written by this
//! crate (BERT in every weight dtype, GPT-2), plus the Hugging Face fixtures.
//!
//! `cargo run -p bert2bert-checkpoint --example fuzz_seeds -- fuzz/corpus/read_safetensors`

use bert2bert_checkpoint::random::{Heads, Init};
use bert2bert_checkpoint::{
    Bert, BertConfig, Dtype, Gpt2, Gpt2Config, Model, ModelDir, WriteOptions,
};
use std::path::{Path, PathBuf};

/// The shape the fuzz target loads BERTs with; keep in step with fuzz_targets/read_safetensors.rs.
fn fuzz_config() -> BertConfig {
    BertConfig::new(12, 4, 1, 2, 8, 6)
}

/// The shape the fuzz target loads GPT-2s with.
fn fuzz_gpt2_config() -> Gpt2Config {
    Gpt2Config::new(12, 4, 1, 2, 6)
}

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus/read_safetensors".into()),
    );
    std::fs::create_dir_all(&out).expect("create the corpus folder");
    let tmp = std::env::temp_dir().join(format!("bert2bert-seeds-{}", std::process::id()));
    let cfg = fuzz_config();
    let mut n = 0;
    for (heads, tag) in [(Heads::ALL, "all"), (Heads::MLM, "mlm")] {
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F64] {
            let model = Model::Bert(Bert::random(&cfg, heads, Init::TEST, 1));
            let dir = tmp.join(format!("{tag}-{dtype}"));
            ModelDir::new(PathBuf::new(), model, dtype, vec![])
                .write(&dir, &WriteOptions::default())
                .expect("write a seed model");
            copy(
                &dir.join("model.safetensors"),
                &out.join(format!("bert-{tag}-{dtype}")),
            );
            n += 1;
        }
    }
    for dtype in [Dtype::F32, Dtype::BF16] {
        let model = Model::Gpt2(Gpt2::random(&fuzz_gpt2_config(), Init::TEST, 1));
        let dir = tmp.join(format!("gpt2-{dtype}"));
        ModelDir::new(PathBuf::new(), model, dtype, vec![])
            .write(&dir, &WriteOptions::default())
            .expect("write a seed model");
        copy(
            &dir.join("model.safetensors"),
            &out.join(format!("gpt2-{dtype}")),
        );
        n += 1;
    }
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    for fixture in ["hf-bert-tiny", "hf-gpt2-tiny"] {
        copy(
            &testdata.join(fixture).join("model.safetensors"),
            &out.join(fixture),
        );
        n += 1;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    println!("{n} seeds in {}", out.display());
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
}
