//! A grown checkpoint loads unchanged in candle-transformers' `BertModel`, and candle's forward
//! pass on it reproduces what Hugging Face transformers computed for the source (the fixture's
//! `expected.json`) on the source's hidden units.

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{BertModel, Config};
use std::path::Path;
use std::process::Command;

#[test]
fn grown_fixture_loads_in_candle_and_matches_transformers_outputs() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/hf-bert-tiny");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("grown");
    let o = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "grow",
            "--source",
            fixture.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args([
            "--method",
            "fpi",
            "--hidden",
            "128",
            "--layers",
            "2",
            "--no-verify",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let config: Config =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config.hidden_size, 128);
    let dev = Device::Cpu;
    // SAFETY: the file is not modified while mapped.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[out.join("model.safetensors")],
            DType::F32,
            &dev,
        )
        .unwrap()
    };
    let model = BertModel::load(vb, &config).expect("candle loads the grown checkpoint");

    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("expected.json")).unwrap())
            .unwrap();
    let rows = |k: &str| -> Vec<Vec<u32>> { serde_json::from_value(expected[k].clone()).unwrap() };
    let (ids, types, mask) = (
        rows("input_ids"),
        rows("token_type_ids"),
        rows("attention_mask"),
    );
    let t = |v: &Vec<Vec<u32>>| Tensor::new(v.clone(), &dev).unwrap();
    let hidden = model
        .forward(&t(&ids), &t(&types), Some(&t(&mask)))
        .unwrap();
    let hidden: Vec<Vec<Vec<f32>>> = hidden.to_vec3().unwrap();
    let want: Vec<Vec<Vec<f32>>> =
        serde_json::from_value(expected["last_hidden_state"].clone()).unwrap();
    // FPI at 2x with the balanced map keeps old units in place (g(i) = i for i < 64), so the
    // grown model's first 64 units are the source's hidden state.
    let (mut max_abs, mut scale) = (0f32, 0f32);
    for (b, row) in want.iter().enumerate() {
        for (s, vals) in row.iter().enumerate() {
            if mask[b][s] == 0 {
                continue;
            }
            for (j, &w) in vals.iter().enumerate() {
                max_abs = max_abs.max((hidden[b][s][j] - w).abs());
                scale = scale.max(w.abs());
            }
        }
    }
    // Two independent f32 implementations (PyTorch, candle) on differently shaped sums: 1e-5
    // relative is the f32 budget of docs/growth.md.
    assert!(
        max_abs / scale < 1e-5,
        "max abs {max_abs}, relative {}",
        max_abs / scale
    );
}
