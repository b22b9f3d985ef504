//! Shared helpers for the integration tests: valid random models written by the crate, and a
//! raw safetensors editor to corrupt or reshape them byte by byte.
#![allow(dead_code)] // each test binary uses a different subset

mod real_checkpoint;
#[allow(unused_imports)] // each test binary uses a different subset
pub use real_checkpoint::{real_checkpoint, real_checkpoint_from};

use bert2bert_checkpoint::random::{Heads, Init};
use bert2bert_checkpoint::safetensors::{SafetensorsWriter, TensorSpec};
use bert2bert_checkpoint::{
    Bert, BertConfig, CheckpointError, Dtype, Model, ModelDir, WriteOptions, read_model_dir,
};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A fixture folder under testdata/.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
}

/// A small BERT with every head: V=50, D=16, L=2, A=2, F=32, P=20.
pub fn small_bert(seed: u64) -> Bert {
    let cfg = BertConfig::new(50, 16, 2, 2, 32, 20);
    Bert::random(&cfg, Heads::ALL, Init::TEST, seed)
}

/// Writes `model` as a fresh folder `dir` in `dtype`.
pub fn write_model(model: &Model, dir: &Path, dtype: Dtype) {
    ModelDir::new(PathBuf::new(), model.clone(), dtype, vec![])
        .write(dir, &WriteOptions::default())
        .unwrap();
}

/// A valid small BERT folder at `root/name`, returned.
pub fn valid_bert_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    write_model(&Model::Bert(small_bert(1)), &dir, Dtype::F32);
    dir
}

/// Reads `dir/config.json` as a JSON object.
pub fn read_config(dir: &Path) -> Map<String, Value> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

/// Writes `cfg` as `dir/config.json`.
pub fn write_config(dir: &Path, cfg: &Map<String, Value>) {
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(cfg).unwrap(),
    )
    .unwrap();
}

/// Edits `dir/config.json` in place.
pub fn edit_config(dir: &Path, f: impl FnOnce(&mut Map<String, Value>)) {
    let mut cfg = read_config(dir);
    f(&mut cfg);
    write_config(dir, &cfg);
}

/// A safetensors file as an editable header object plus its data section.
pub struct RawSt {
    /// The header (tensor entries and `__metadata__`).
    pub header: Map<String, Value>,
    /// The data section.
    pub data: Vec<u8>,
}

impl RawSt {
    /// Reads `path`.
    pub fn read(path: &Path) -> Self {
        let buf = std::fs::read(path).unwrap();
        let n = u64::from_le_bytes(buf[..8].try_into().unwrap()) as usize;
        let header: Map<String, Value> = serde_json::from_slice(&buf[8..8 + n]).unwrap();
        Self {
            header,
            data: buf[8 + n..].to_vec(),
        }
    }

    /// The serialised file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut text = serde_json::to_string(&self.header).unwrap();
        while !text.len().is_multiple_of(8) {
            text.push(' ');
        }
        let mut out = (text.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(&self.data);
        out
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.to_bytes()).unwrap();
    }

    /// Tensor names (without `__metadata__`).
    pub fn names(&self) -> Vec<String> {
        self.header
            .keys()
            .filter(|k| *k != "__metadata__")
            .cloned()
            .collect()
    }

    /// The header entry of `name`.
    pub fn entry(&mut self, name: &str) -> &mut Map<String, Value> {
        self.header
            .get_mut(name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
            .as_object_mut()
            .unwrap()
    }

    /// Byte range of `name` in the data section.
    pub fn offsets(&self, name: &str) -> (usize, usize) {
        let o = &self.header[name]["data_offsets"];
        (
            o[0].as_u64().unwrap() as usize,
            o[1].as_u64().unwrap() as usize,
        )
    }

    /// The raw bytes of `name`.
    pub fn bytes(&self, name: &str) -> &[u8] {
        let (b, e) = self.offsets(name);
        &self.data[b..e]
    }

    /// The raw bytes of `name`, mutable.
    pub fn bytes_mut(&mut self, name: &str) -> &mut [u8] {
        let (b, e) = self.offsets(name);
        &mut self.data[b..e]
    }

    /// Removes `name` from the header (its bytes stay, unreferenced).
    pub fn remove(&mut self, name: &str) {
        self.header.remove(name).unwrap();
    }

    /// Renames tensor `from` to `to`.
    pub fn rename(&mut self, from: &str, to: &str) {
        let v = self.header.remove(from).unwrap();
        self.header.insert(to.into(), v);
    }

    /// Appends a tensor.
    pub fn add(&mut self, name: &str, dtype: &str, shape: &[usize], bytes: &[u8]) {
        let b = self.data.len();
        self.data.extend_from_slice(bytes);
        self.header.insert(
            name.into(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [b, b + bytes.len()]}),
        );
    }
}

/// Rewrites the single-file folder `dir` as two shards plus `model.safetensors.index.json`,
/// tensors alternating between the shards; returns the shard names.
pub fn shard_folder(dir: &Path) -> [String; 2] {
    let st = RawSt::read(&dir.join("model.safetensors"));
    let names = st.names();
    let shards = [
        "model-00001-of-00002.safetensors".to_owned(),
        "model-00002-of-00002.safetensors".to_owned(),
    ];
    let mut weight_map = Map::new();
    for (k, shard) in shards.iter().enumerate() {
        let mine: Vec<&String> = names.iter().skip(k).step_by(2).collect();
        let specs: Vec<TensorSpec> = mine
            .iter()
            .map(|n| {
                let e = &st.header[n.as_str()];
                TensorSpec {
                    name: (*n).clone(),
                    dtype: Dtype::from_name(e["dtype"].as_str().unwrap()).unwrap(),
                    shape: serde_json::from_value(e["shape"].clone()).unwrap(),
                }
            })
            .collect();
        let mut w = SafetensorsWriter::create(&dir.join(shard), &specs, &BTreeMap::new()).unwrap();
        for s in &specs {
            w.write_raw(&s.name, &s.shape, st.bytes(&s.name)).unwrap();
            weight_map.insert(s.name.clone(), Value::from(shard.as_str()));
        }
        w.finish().unwrap();
    }
    let total: usize = st.data.len();
    let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    shards
}

/// Names of the entries of folder `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The single weights file of a model folder.
pub fn weights(dir: &Path) -> PathBuf {
    dir.join("model.safetensors")
}

/// Reads `dir`, which must be refused; the error and its message.
pub fn read_err(dir: &Path) -> (CheckpointError, String) {
    let err = read_model_dir(dir).expect_err("bad input must be refused");
    let msg = err.to_string();
    (err, msg)
}

/// Fails unless `msg` contains every one of `parts`.
pub fn assert_names(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message `{msg}` does not name `{p}`");
    }
}

/// One bad-input case: how to break a valid folder, the error that must follow, and what its
/// message must name.
pub struct BadCase {
    /// What is broken (names the case when it fails).
    pub name: &'static str,
    /// Breaks one thing in the valid folder `dir`; returns message fragments known only then
    /// (sizes, tensor names).
    pub breaks: fn(dir: &Path) -> Vec<String>,
    /// Whether the error is the expected variant with the expected fields, given the folder and
    /// the fragments `breaks` returned.
    pub is: fn(err: &CheckpointError, dir: &Path, found: &[String]) -> bool,
    /// Fragments the message must contain, besides those `breaks` returned.
    pub names: &'static [&'static str],
}

/// Runs every case on a fresh valid folder `m` made by `valid`: each must be refused with its
/// error, and the message must name its fragments.
pub fn check_bad_cases(valid: fn(&Path, &str) -> PathBuf, cases: &[BadCase]) {
    for c in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = valid(tmp.path(), "m");
        let found = (c.breaks)(&dir);
        let err = match read_model_dir(&dir) {
            Ok(_) => panic!("{}: bad input was accepted", c.name),
            Err(e) => e,
        };
        assert!((c.is)(&err, &dir, &found), "{}: unexpected {err:?}", c.name);
        let msg = err.to_string();
        for part in c
            .names
            .iter()
            .copied()
            .chain(found.iter().map(String::as_str))
        {
            assert!(
                msg.contains(part),
                "{}: `{msg}` does not name `{part}`",
                c.name
            );
        }
    }
}

/// The length of the JSON header of safetensors file `path`.
pub fn header_len(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    u64::from_le_bytes(bytes[..8].try_into().unwrap())
}

/// Sets config field `key` of folder `dir` to `value`.
pub fn set(dir: &Path, key: &str, value: Value) {
    edit_config(dir, |c| {
        c.insert(key.into(), value);
    });
}

/// Edits `dir/model.safetensors` (header and data) with `f`.
pub fn edit_weights(dir: &Path, f: impl FnOnce(&mut RawSt)) {
    let mut st = RawSt::read(&weights(dir));
    f(&mut st);
    st.write(&weights(dir));
}
