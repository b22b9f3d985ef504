//! GPT-2 growth plans: the pre-LN-only options refused for BERT, the exact-mode layout on the
//! Hugging Face fixture, and the grown config.

use bert2bert_checkpoint::random::{Heads, Init};
use bert2bert_checkpoint::{Bert, BertConfig, Model, read_model_dir};
use bert2bert_expand::{
    Depth, ExpandError, GrowOptions, GrowPlan, MapKind, Target, VerifyOptions, grow, verify,
};
use std::path::Path;

fn fixture() -> Model {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/hf-gpt2-tiny");
    read_model_dir(&dir).unwrap().model
}

#[test]
fn bert_refuses_exact_map_and_identity_depth() {
    let m = Model::Bert(Bert::random(
        &BertConfig::new(20, 8, 2, 2, 16, 16),
        Heads::MLM,
        Init::TEST,
        1,
    ));
    let t = Target {
        layers: 3,
        hidden: 12,
        heads: 3,
        intermediate: 24,
    };
    for (opts, option) in [
        (
            GrowOptions {
                map: MapKind::Exact,
                ..GrowOptions::default()
            },
            "--map exact",
        ),
        (
            GrowOptions {
                depth: Depth::Identity,
                ..GrowOptions::default()
            },
            "--depth identity",
        ),
    ] {
        let e = GrowPlan::new(&m, &t, &opts).unwrap_err();
        assert!(
            matches!(e, ExpandError::Unsupported { option: o, family: "BERT", .. } if o == option),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains("post-LN"), "{msg}");
    }
}

/// 64 -> 96 (k = 1, r = 32): the first 64 units copy the source, the last 32 are mean-units
/// whose LayerNorm gamma and beta are 0 and whose reader rows are non-zero (trainable).
#[test]
fn exact_layout_on_the_fixture() {
    let m = fixture();
    let t = Target {
        layers: 2,
        hidden: 96,
        heads: 3,
        intermediate: 384,
    };
    let opts = GrowOptions {
        map: MapKind::Exact,
        ..GrowOptions::default()
    };
    let plan = GrowPlan::new(&m, &t, &opts).unwrap();
    assert_eq!(plan.mean_units(), 32);
    let cfg = plan.gpt2_config().unwrap();
    assert_eq!((cfg.n_embd, cfg.n_head, cfg.n_layer), (96, 3, 2));
    assert_eq!(cfg.n_inner, None, "4 x n_embd stays implicit");
    assert!((cfg.layer_norm_epsilon - 1e-5 * 64.0 / 96.0).abs() < 1e-18);
    let report = plan.report();
    assert!(report.expected_exact, "{report}");
    assert!(report.to_string().contains("32 mean-units"), "{report}");
    let g = plan.build();
    let (s, g2) = (m.as_gpt2().unwrap(), g.as_gpt2().unwrap());
    let scale = (64.0f64 / 96.0).sqrt() as f32;
    for (a, b) in [(&s.blocks[0].ln_1, &g2.blocks[0].ln_1), (&s.ln_f, &g2.ln_f)] {
        for j in 0..64 {
            assert_eq!(b.weight[j], a.weight[j] * scale);
        }
        assert!(b.weight.iter().skip(64).all(|&x| x == 0.0));
        assert!(b.bias.iter().skip(64).all(|&x| x == 0.0));
    }
    let fc = &g2.blocks[0].fc.weight;
    assert!(
        fc.rows()
            .into_iter()
            .skip(64)
            .all(|r| r.iter().any(|&x| x != 0.0))
    );
    // Mean-units of the token embedding hold each row's mean.
    for v in [0, 17, 299] {
        let mean = s.wte.row(v).iter().map(|&x| x as f64).sum::<f64>() / 64.0;
        assert!((g2.wte[[v, 80]] as f64 - mean).abs() < 1e-7);
    }
    let v = verify(&m, &g, &VerifyOptions::default()).unwrap();
    assert!(v.exact, "{v}");
}

/// Paper FPI at a non-integer ratio is honest about LayerNorm: reported inexact and measured
/// far above the tolerance, while exact mode at the same shape is within it.
#[test]
fn fpi_non_integer_ratio_is_reported_and_measured_inexact() {
    let m = fixture();
    let t = Target {
        layers: 2,
        hidden: 96,
        heads: 3,
        intermediate: 384,
    };
    let (g, report) = grow(&m, &t, &GrowOptions::default()).unwrap();
    assert!(!report.expected_exact);
    assert!(
        report.inexact_reasons[0].contains("--map exact"),
        "{report}"
    );
    let v = verify(&m, &g, &VerifyOptions::default()).unwrap();
    assert!(v.max_rel > 1e-3, "{v}");
}

#[test]
fn gpt2_head_size_is_fixed() {
    let m = fixture();
    let t = Target {
        layers: 2,
        hidden: 96,
        heads: 4,
        intermediate: 384,
    };
    let e = GrowPlan::new(&m, &t, &GrowOptions::default()).unwrap_err();
    assert!(matches!(e, ExpandError::HeadSize { from: 32, .. }), "{e:?}");
}

#[test]
fn verify_refuses_models_of_different_families() {
    let gpt2 = fixture();
    let bert = Model::Bert(Bert::random(
        &BertConfig::new(300, 64, 2, 2, 128, 32),
        Heads::MLM,
        Init::TEST,
        1,
    ));
    let e = verify(&bert, &gpt2, &VerifyOptions::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("the source is bert but the grown model is gpt2"),
        "{e}"
    );
}
