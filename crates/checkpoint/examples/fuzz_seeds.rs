//! Writes the seed corpora for the fuzzers (fuzz/): for `read_safetensors`, small valid files
//! written by this crate (BERT in every weight dtype, GPT-2), plus the Hugging Face fixtures; for
//! `read_model_dir`, whole folders (config.json with one file or a sharded set) in its format.
//!
//! `cargo run -p bert2bert-checkpoint --example fuzz_seeds -- fuzz/corpus/read_safetensors
//! fuzz/corpus/read_model_dir`

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
    println!("{n} seeds in {}", out.display());
    let folders = PathBuf::from(
        std::env::args()
            .nth(2)
            .unwrap_or_else(|| "fuzz/corpus/read_model_dir".into()),
    );
    folder_seeds(&tmp, &folders);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Between two files of a `read_model_dir` input; keep in step with
/// `fuzz/fuzz_targets/read_model_dir.rs` (sections: config.json, model.safetensors, the index,
/// then the shards `model-00001.safetensors`, ...; an empty section is no file).
const SEPARATOR: &[u8] = b"\n--8<-- next file --8<--\n";

/// One `read_model_dir` input from the files of a folder, in section order.
fn folder_input(files: &[Vec<u8>]) -> Vec<u8> {
    files.join(SEPARATOR)
}

/// The seeds of `read_model_dir`: two-layer models of both families, single-file and sharded,
/// and a config claiming a billion layers (once an abort, see docs/fuzzing.md). Kept to a few
/// kilobytes each (the fixtures' 400 kB weights made executions ten times slower).
fn folder_seeds(tmp: &Path, out: &Path) {
    std::fs::create_dir_all(out).expect("create the corpus folder");
    let bert = Model::Bert(Bert::random(
        &BertConfig::new(12, 4, 2, 2, 8, 6),
        Heads::ALL,
        Init::TEST,
        2,
    ));
    let gpt2 = Model::Gpt2(Gpt2::random(
        &Gpt2Config::new(12, 4, 2, 2, 6),
        Init::TEST,
        2,
    ));
    let mut n = 0;
    for (model, tag, dtype) in [
        (&bert, "bert", Dtype::F32),
        (&bert, "bert", Dtype::F16),
        (&gpt2, "gpt2", Dtype::BF16),
    ] {
        let dir = tmp.join(format!("folder-{tag}-{dtype}"));
        ModelDir::new(PathBuf::new(), model.clone(), dtype, vec![])
            .write(&dir, &WriteOptions::default())
            .expect("write a seed model");
        let read = |f: &str| std::fs::read(dir.join(f)).expect("read a seed file");
        let (config, weights) = (read("config.json"), read("model.safetensors"));
        let single = folder_input(&[config.clone(), weights.clone()]);
        std::fs::write(out.join(format!("{tag}-{dtype}")), single).expect("write a seed");
        let [index, first, second] = sharded(&dir.join("model.safetensors"));
        let shards = folder_input(&[config.clone(), Vec::new(), index, first, second]);
        std::fs::write(out.join(format!("{tag}-{dtype}-sharded")), shards).expect("write a seed");
        n += 2;
        if tag == "bert" && dtype == Dtype::F32 {
            let text = String::from_utf8(config).expect("UTF-8 config");
            let lying = text.replace(
                "\"num_hidden_layers\": 2",
                "\"num_hidden_layers\": 1000000000",
            );
            assert_ne!(lying, text, "the seed config names num_hidden_layers");
            let input = folder_input(&[lying.into_bytes(), weights]);
            std::fs::write(out.join("regression-billion-layers"), input).expect("write a seed");
            n += 1;
        }
    }
    println!("{n} seeds in {}", out.display());
}

/// The tensors of safetensors file `path` split over two shards: `[index, shard 1, shard 2]`,
/// the index naming them `model-00001.safetensors` and `model-00002.safetensors`.
fn sharded(path: &Path) -> [Vec<u8>; 3] {
    let (header, data) = split(path);
    let names: Vec<&String> = header.keys().filter(|k| *k != "__metadata__").collect();
    let mut weight_map = serde_json::Map::new();
    let mut shards = [Vec::new(), Vec::new()];
    for (k, shard) in shards.iter_mut().enumerate() {
        let file = format!("model-{:05}.safetensors", k + 1);
        let mut h = serde_json::Map::new();
        let mut d = Vec::new();
        for name in names.iter().skip(k).step_by(2) {
            let e = &header[name.as_str()];
            let o = &e["data_offsets"];
            let (b, end) = (
                o[0].as_u64().unwrap() as usize,
                o[1].as_u64().unwrap() as usize,
            );
            let start = d.len();
            d.extend_from_slice(&data[b..end]);
            h.insert(
                (*name).clone(),
                serde_json::json!({"dtype": e["dtype"], "shape": e["shape"], "data_offsets": [start, d.len()]}),
            );
            weight_map.insert((*name).clone(), file.clone().into());
        }
        *shard = safetensors_bytes(&h, &d);
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    let [a, b] = shards;
    [index.to_string().into_bytes(), a, b]
}

/// A safetensors file from its header object and data section.
fn safetensors_bytes(header: &serde_json::Map<String, serde_json::Value>, data: &[u8]) -> Vec<u8> {
    let text = serde_json::to_string(header).expect("serialisable");
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    out
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
    std::fs::write(to, safetensors_bytes(&header, &data)).expect("write a seed");
}
