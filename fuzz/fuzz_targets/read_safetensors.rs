//! Fuzzes the safetensors reader: header parsing, the in-memory tensor store, f32 conversion and
//! the BERT and GPT-2 loaders on top. Any input must give a value or a typed error, never a panic.
#![no_main]

use bert2bert_checkpoint::safetensors::{TensorStore, parse_header};
use bert2bert_checkpoint::{Bert, BertConfig, Gpt2, Gpt2Config};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz");
    let header = parse_header(path, data);
    let store = TensorStore::from_bytes(path, data.to_vec());
    // One file: the store accepts exactly what the parser accepts.
    assert_eq!(header.is_ok(), store.is_ok());
    let store = match store {
        Ok(s) => s,
        Err(e) => {
            assert!(
                e.to_string().starts_with("fuzz"),
                "error names the file: {e}"
            );
            return;
        }
    };
    let header = header.unwrap();
    let _ = store.dominant_float_dtype();
    assert!(store.largest_f32_bytes() <= store.total_f32_bytes());
    let names: Vec<String> = store.names().map(str::to_owned).collect();
    for name in &names {
        let info = store.info(name).unwrap();
        assert_eq!(
            store.bytes(name).unwrap().len(),
            info.numel() * info.dtype.size()
        );
        match store.read_f32(name) {
            Ok(t) => {
                assert_eq!(t.shape(), info.shape.as_slice());
                assert!(t.iter().all(|v| v.is_finite()));
            }
            Err(e) => assert!(e.to_string().contains(name.as_str())),
        }
    }
    assert_eq!(names.len(), header.tensors.len());
    // The loader on top, with the seeds' config (crates/checkpoint/examples/fuzz_seeds.rs).
    if let Ok((bert, _dropped)) = Bert::load(&store, BertConfig::new(12, 4, 1, 2, 8, 6)) {
        bert.validate().expect("a loaded model is valid");
    }
    if let Ok((gpt2, _dropped)) = Gpt2::load(&store, Gpt2Config::new(12, 4, 1, 2, 6)) {
        gpt2.validate().expect("a loaded model is valid");
    }
});
