//! The streaming writer's checked path (`write_finite_f32`), the fast finiteness check, and the
//! layout loaded linear weights are held in.

use bert2bert_checkpoint::safetensors::{
    SafetensorsWriter, TensorSpec, TensorStore, check_finite, check_finite_slice,
};
use bert2bert_checkpoint::{CheckpointError, Dtype, read_model_dir};
use std::collections::BTreeMap;
use std::path::Path;

/// Values spanning several 1 MiB write chunks, with a ragged last chunk.
fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 * 0.013 - 6.5)
        .collect()
}

fn write_both(path_a: &Path, path_b: &Path, dtype: Dtype, shape: &[usize], v: &[f32]) {
    let specs = vec![TensorSpec {
        name: "w".into(),
        dtype,
        shape: shape.to_vec(),
    }];
    let meta = BTreeMap::new();
    let mut a = SafetensorsWriter::create(path_a, &specs, &meta).unwrap();
    a.write_finite_f32("w", shape, v).unwrap();
    a.finish().unwrap();
    let mut b = SafetensorsWriter::create(path_b, &specs, &meta).unwrap();
    let view = ndarray::ArrayViewD::from_shape(shape, v).unwrap();
    b.write_f32("w", view).unwrap();
    b.finish().unwrap();
}

#[test]
fn checked_writes_match_plain_writes_in_every_dtype() {
    // 3 x 100_003 f32 = 1.2 MB: more than one chunk, not a multiple of the chunk size.
    let shape = [3, 100_003];
    let v = values(shape.iter().product());
    let tmp = tempfile::tempdir().unwrap();
    for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F64] {
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        write_both(&a, &b, dtype, &shape, &v);
        let bytes = std::fs::read(&a).unwrap();
        assert_eq!(bytes, std::fs::read(&b).unwrap(), "{dtype}");
        // And the reference implementation reads back what was given (exactly, for F32).
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("w").unwrap().shape(), shape);
        if dtype == Dtype::F32 {
            let back = TensorStore::open_file(&a).unwrap().read_f32("w").unwrap();
            assert_eq!(back.as_slice().unwrap(), &v[..]);
        }
    }
}

#[test]
fn checked_writes_refuse_nan_and_inf_with_the_tensor_named() {
    let shape = [600_000];
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("x.safetensors");
    for (at, bad) in [
        (0, f32::NAN),
        (262_143, f32::INFINITY),
        (599_999, f32::NEG_INFINITY),
    ] {
        let mut v = values(shape[0]);
        v[at] = bad;
        v[at / 2 + 1] = f32::NAN;
        let specs = vec![TensorSpec {
            name: "enc.w".into(),
            dtype: Dtype::F32,
            shape: shape.to_vec(),
        }];
        let mut w = SafetensorsWriter::create(&path, &specs, &BTreeMap::new()).unwrap();
        let err = w.write_finite_f32("enc.w", &shape, &v).unwrap_err();
        match err {
            CheckpointError::NonFinite {
                path: p,
                tensor,
                count,
                index,
                ..
            } => {
                assert_eq!(p, path);
                assert_eq!(tensor, "enc.w");
                assert_eq!(count, 2, "at {at}");
                assert_eq!(index, (at / 2 + 1).min(at), "at {at}");
            }
            other => panic!("expected NonFinite, got {other}"),
        }
        // The tensor is not marked written, so the file cannot be finished as complete.
        assert!(w.finish().is_err());
    }
}

#[test]
fn checked_writes_refuse_wrong_lengths_and_undeclared_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("x.safetensors");
    let specs = vec![TensorSpec {
        name: "w".into(),
        dtype: Dtype::F32,
        shape: vec![2, 3],
    }];
    let mut w = SafetensorsWriter::create(&path, &specs, &BTreeMap::new()).unwrap();
    let e = w.write_finite_f32("w", &[2, 3], &[0.0; 5]).unwrap_err();
    assert!(e.to_string().contains("5 values given, 6 needed"), "{e}");
    let e = w.write_finite_f32("w", &[3, 2], &[0.0; 6]).unwrap_err();
    assert!(e.to_string().contains("declared as [2, 3]"), "{e}");
    let e = w.write_finite_f32("v", &[2, 3], &[0.0; 6]).unwrap_err();
    assert!(e.to_string().contains("not declared"), "{e}");
}

#[test]
fn fast_finiteness_check_agrees_with_the_reference_check() {
    let p = Path::new("m.safetensors");
    let n = 3 * 4096 + 17;
    assert!(check_finite_slice(p, "t", &values(n)).is_ok());
    assert!(check_finite_slice(p, "t", &[]).is_ok());
    assert!(check_finite_slice(p, "t", &[f32::MAX, f32::MIN, f32::MIN_POSITIVE, -0.0]).is_ok());
    for at in [0, 4095, 4096, n - 1] {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut v = values(n);
            v[at] = bad;
            let fast = check_finite_slice(p, "t", &v).unwrap_err().to_string();
            let slow = check_finite(p, "t", &v).unwrap_err().to_string();
            assert_eq!(fast, slow, "at {at}");
        }
    }
}

#[test]
fn loaded_linear_weights_keep_the_stored_bytes_column_major() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/hf-bert-tiny");
    let m = read_model_dir(&dir).unwrap();
    let b = m.model.as_bert().unwrap();
    let store = TensorStore::open_dir(&dir).unwrap();
    let q = &b.layers[0].query.weight;
    assert_eq!(q.dim(), (64, 64), "(in, out)");
    // (in, out) logically; in memory the file's (out, in) rows, so the transpose is contiguous.
    assert!(q.t().is_standard_layout());
    let stored = store
        .read_f32("bert.encoder.layer.0.attention.self.query.weight")
        .unwrap();
    assert_eq!(q.t().as_slice().unwrap(), stored.as_slice().unwrap());
    let f = &b.layers[1].intermediate.weight;
    assert_eq!(f.dim(), (64, b.config.intermediate_size));
    assert!(f.t().is_standard_layout());
}

#[test]
fn files_past_the_write_behind_mark_read_back_exactly() {
    // 18.5 M f32 = 74 MB: the writer starts writeback (every 64 MiB) in the middle of the
    // second tensor, then keeps writing; what is read back is what was given.
    let shapes = [vec![1_000_000], vec![4, 4_375_000]];
    let data: Vec<Vec<f32>> = shapes.iter().map(|s| values(s.iter().product())).collect();
    let specs: Vec<TensorSpec> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| TensorSpec {
            name: format!("t{i}"),
            dtype: Dtype::F32,
            shape: s.clone(),
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("big.safetensors");
    let mut w = SafetensorsWriter::create(&path, &specs, &BTreeMap::new()).unwrap();
    for (s, v) in specs.iter().zip(&data) {
        w.write_finite_f32(&s.name, &s.shape, v).unwrap();
    }
    w.finish().unwrap();
    let store = TensorStore::open_file(&path).unwrap();
    for (s, v) in specs.iter().zip(&data) {
        let back = store.read_f32(&s.name).unwrap();
        assert_eq!(back.shape(), &s.shape[..]);
        assert!(back.as_slice().unwrap() == &v[..], "{}", s.name);
    }
}

#[test]
fn reading_many_tensors_in_parallel_gives_each_read_in_order() {
    // 20 MB in all, past the threshold for threads; one tensor with a NaN, one integer tensor,
    // one missing name: each result is what `read_f32` alone gives.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.safetensors");
    let mut specs: Vec<TensorSpec> = (0..5)
        .map(|i| TensorSpec {
            name: format!("f{i}"),
            dtype: if i == 3 { Dtype::BF16 } else { Dtype::F32 },
            shape: vec![1_000_000 + i * 7],
        })
        .collect();
    specs.push(TensorSpec {
        name: "ids".into(),
        dtype: Dtype::I64,
        shape: vec![4],
    });
    let mut w = SafetensorsWriter::create(&path, &specs, &BTreeMap::new()).unwrap();
    for s in &specs[..5] {
        let mut v = values(s.shape[0]);
        if s.name == "f2" {
            v[123_456] = f32::NAN;
        }
        let view = ndarray::ArrayViewD::from_shape(&s.shape[..], &v[..]).unwrap();
        w.write_f32(&s.name, view).unwrap();
    }
    w.write_raw("ids", &[4], &[0u8; 32]).unwrap();
    w.finish().unwrap();
    let store = TensorStore::open_file(&path).unwrap();
    let names = ["f4", "ids", "f0", "f2", "nope", "f3", "f1"];
    let many = store.read_many_f32(&names);
    assert_eq!(many.len(), names.len());
    for (name, got) in names.iter().zip(many) {
        let alone = store.read_f32(name);
        match (got, alone) {
            (Ok(a), Ok(b)) => assert!(a == b, "{name}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{name}"),
            (a, b) => panic!("{name}: {:?} vs {:?}", a.is_ok(), b.is_ok()),
        }
    }
}
