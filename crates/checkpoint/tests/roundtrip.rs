//! Read -> write -> read is exact, and what we write is what the reference safetensors crate reads.

use bert2bert_checkpoint::random::{Heads, Init};
use bert2bert_checkpoint::{
    Bert, BertConfig, Dtype, Model, ModelDir, WriteOptions, read_model_dir,
};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
}

fn bytes_of(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

#[test]
fn hf_fixture_loads_with_exact_names_and_shapes() {
    let m = read_model_dir(&fixture("hf-bert-tiny")).unwrap();
    let b = m.model.as_bert().expect("a BERT");
    assert!(b.prefixed);
    assert_eq!(b.layers.len(), 2);
    assert_eq!(b.config.hidden_size, 64);
    assert!(b.mlm.as_ref().unwrap().decoder.is_none(), "decoder is tied");
    assert!(b.nsp.is_some() && b.pooler.is_some());
    // Every tensor of the file comes back under the same name and values (transposes undone).
    let store =
        bert2bert_checkpoint::safetensors::TensorStore::open_dir(&fixture("hf-bert-tiny")).unwrap();
    let named = m.model.named_tensors();
    assert_eq!(named.len(), store.names().count());
    for (name, t) in named {
        let stored = store.read_f32(&name).unwrap();
        assert_eq!(stored, t.to_owned(), "{name}");
    }
}

#[test]
fn round_trip_is_bit_exact_in_every_dtype() {
    let cfg = BertConfig::new(50, 16, 2, 2, 32, 20);
    let model = Model::Bert(Bert::random(&cfg, Heads::ALL, Init::TEST, 7));
    let tmp = tempfile::tempdir().unwrap();
    for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
        let a = tmp.path().join(format!("a-{dtype}"));
        let b = tmp.path().join(format!("b-{dtype}"));
        ModelDir::new(tmp.path().into(), model.clone(), dtype, vec![])
            .write(&a, &WriteOptions::default())
            .unwrap();
        let read = read_model_dir(&a).unwrap();
        assert_eq!(read.dtype, dtype);
        read.write(&b, &WriteOptions::default()).unwrap();
        assert_eq!(
            bytes_of(&a),
            bytes_of(&b),
            "{dtype}: file bytes differ after a round trip"
        );
        let again = read_model_dir(&b).unwrap();
        assert_eq!(read.model, again.model, "{dtype}");
        if dtype == Dtype::F32 {
            let (a, b) = (read.model.named_tensors(), model.named_tensors());
            assert_eq!(a, b, "f32 keeps every bit");
        }
        // The reference implementation parses what we wrote, with the same values.
        let buf = bytes_of(&a);
        let st = safetensors::SafeTensors::deserialize(&buf).unwrap();
        assert_eq!(st.len(), model.named_tensors().len());
    }
}

#[test]
fn config_unknown_fields_survive_and_shape_fields_update() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = read_model_dir(&fixture("hf-bert-tiny")).unwrap();
    let out = tmp.path().join("out");
    m.write(&out, &WriteOptions::default()).unwrap();
    let raw_in: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("hf-bert-tiny/config.json")).unwrap(),
    )
    .unwrap();
    let raw_out: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(raw_in, raw_out);
    let b = m.model.as_bert_mut().expect("a BERT");
    b.config.num_hidden_layers = 1;
    b.layers.truncate(1);
    let out2 = tmp.path().join("out2");
    m.write(&out2, &WriteOptions::default()).unwrap();
    let raw2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out2.join("config.json")).unwrap()).unwrap();
    assert_eq!(raw2["num_hidden_layers"], 1);
    assert_eq!(raw2["transformers_version"], raw_in["transformers_version"]);
}
