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
    // Dropped-on-purpose paths: buffers and heads equal to the embeddings.
    let bert_all = out.join("bert-all-F32");
    let word = tensor_bytes(&bert_all, "bert.embeddings.word_embeddings.weight");
    let ids: Vec<u8> = (0..6i64).flat_map(i64::to_le_bytes).collect();
    with_extra(
        &bert_all,
        &out.join("bert-buffers-tied-decoder"),
        &[
            ("bert.embeddings.position_ids", "I64", vec![1, 6], ids),
            ("cls.predictions.decoder.weight", "F32", vec![12, 4], word),
        ],
    );
    let gpt2 = out.join("gpt2-F32");
    let wte = tensor_bytes(&gpt2, "transformer.wte.weight");
    with_extra(
        &gpt2,
        &out.join("gpt2-buffers-lm-head"),
        &[
            (
                "transformer.h.0.attn.bias",
                "U8",
                vec![1, 1, 6, 6],
                vec![1; 36],
            ),
            (
                "transformer.h.0.attn.masked_bias",
                "F32",
                vec![],
                (-1e4f32).to_le_bytes().to_vec(),
            ),
            ("lm_head.weight", "F32", vec![12, 4], wte),
        ],
    );
    n += 2;
    // Regression seed: an empty tensor whose dims multiply past isize::MAX (once a panic in
    // ndarray; see docs/fuzzing.md).
    let header = format!(
        r#"{{"x":{{"dtype":"F32","shape":[0,{big},{big}],"data_offsets":[0,0]}}}}"#,
        big = 1u64 << 62
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    std::fs::write(out.join("regression-empty-huge-dims"), bytes).expect("write a seed");
    n += 1;
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

fn split(path: &Path) -> (serde_json::Map<String, serde_json::Value>, Vec<u8>) {
    let buf = std::fs::read(path).expect("read a seed");
    let n = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes")) as usize;
    let header = serde_json::from_slice(&buf[8..8 + n]).expect("a valid header");
    (header, buf[8 + n..].to_vec())
}

fn tensor_bytes(path: &Path, name: &str) -> Vec<u8> {
    let (header, data) = split(path);
    let o = &header[name]["data_offsets"];
    let (b, e) = (
        o[0].as_u64().unwrap() as usize,
        o[1].as_u64().unwrap() as usize,
    );
    data[b..e].to_vec()
}

/// Copies safetensors file `from` to `to` with `extra` tensors appended.
fn with_extra(from: &Path, to: &Path, extra: &[(&str, &str, Vec<usize>, Vec<u8>)]) {
    let (mut header, mut data) = split(from);
    for (name, dtype, shape, bytes) in extra {
        let b = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            (*name).into(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [b, data.len()]}),
        );
    }
    let text = serde_json::to_string(&header).expect("serialisable");
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&data);
    std::fs::write(to, out).expect("write a seed");
}
