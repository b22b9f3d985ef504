//! The streaming plan and the in-memory growth give the same tensors and the same file, and
//! bad targets are refused with typed errors.

mod common;

use bert2bert_checkpoint::random::{Heads, Init};
use bert2bert_checkpoint::safetensors::{SafetensorsWriter, TensorSpec};
use bert2bert_checkpoint::{Bert, BertConfig, Dtype, Model, ModelDir, WriteOptions};
use bert2bert_expand::{
    AkiScope, Depth, ExpandError, GrowOptions, GrowPlan, MapKind, Method, Target, grow,
};
use common::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn options() -> impl Strategy<Value = GrowOptions> {
    (
        prop::sample::select(vec![Method::Fpi, Method::Aki]),
        prop::sample::select(vec![MapKind::Balanced, MapKind::Random]),
        prop::sample::select(vec![AkiScope::Internal, AkiScope::All]),
        prop::sample::select(vec![Depth::Stack, Depth::Interleave]),
        any::<u64>(),
    )
        .prop_map(|(method, map, aki_scope, depth, seed)| GrowOptions {
            method,
            map,
            aki_scope,
            depth,
            seed,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// The plan lists the grown model's tensors in `named_tensors` order with the same shapes,
    /// and produces each with the same bits, both through fresh arrays and a reused buffer.
    #[test]
    fn plan_tensors_equal_the_grown_model(
        s in shape(), heads in heads(), seed in any::<u64>(), opts in options(),
        extra_layers in 0usize..=4, extra_heads in 0usize..=4, extra_ffn in 0usize..=9,
        untied in any::<bool>(),
    ) {
        let mut b = Bert::random(&s.config(), heads, Init::TEST, seed);
        if untied && let Some(mlm) = &mut b.mlm {
            mlm.decoder = Some(b.embeddings.word.t().mapv(|x| x * 0.5 + 0.01));
        }
        let m = Model::Bert(b);
        let t = Target {
            layers: s.layers + extra_layers,
            hidden: (s.heads + extra_heads) * s.head_dim,
            heads: s.heads + extra_heads,
            intermediate: s.ffn + extra_ffn,
        };
        let plan = GrowPlan::new(&m, &t, &opts).unwrap();
        let (grown, report) = grow(&m, &t, &opts).unwrap();
        prop_assert_eq!(&report, &plan.report());
        grown.validate().unwrap();
        let named = grown.named_tensors();
        prop_assert_eq!(named.len(), plan.len());
        let mut buf = vec![f32::NAN; plan.max_tensor_len()];
        for (i, (name, t)) in named.iter().enumerate() {
            prop_assert_eq!(plan.name(i), name.as_str());
            prop_assert_eq!(plan.shape(i), t.shape());
            let fresh = plan.tensor(i);
            let n = fresh.len();
            plan.tensor_into(i, &mut buf[..n]);
            for ((a, b), c) in t.iter().zip(fresh.iter()).zip(&buf[..n]) {
                prop_assert_eq!(a.to_bits(), b.to_bits(), "{}", name);
                prop_assert_eq!(a.to_bits(), c.to_bits(), "{}", name);
            }
        }
        let g = grown.as_bert().unwrap();
        prop_assert_eq!(g.prefixed, bert_prefixed(&m));
        prop_assert_eq!(&g.config, &bert_config(&m).with_shape(t.layers, t.hidden, t.heads, t.intermediate));
    }
}

fn bert_prefixed(m: &Model) -> bool {
    m.as_bert().unwrap().prefixed
}

fn bert_config(m: &Model) -> BertConfig {
    m.as_bert().unwrap().config.clone()
}

/// Writing tensor by tensor from the plan gives the same `model.safetensors`, byte for byte,
/// as writing the in-memory grown model, in f32 and bf16.
#[test]
fn streamed_file_equals_the_written_grown_model() {
    let cfg = BertConfig::new(60, 16, 3, 2, 24, 20);
    let m = Model::Bert(Bert::random(&cfg, Heads::ALL, Init::TEST, 11));
    let t = Target {
        layers: 7,
        hidden: 40,
        heads: 5,
        intermediate: 50,
    };
    let opts = GrowOptions {
        method: Method::Aki,
        ..GrowOptions::default()
    };
    let (grown, _) = grow(&m, &t, &opts).unwrap();
    let plan = GrowPlan::new(&m, &t, &opts).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for dtype in [Dtype::F32, Dtype::BF16] {
        let dir = tmp.path().join(format!("mem-{dtype}"));
        ModelDir::new(tmp.path().into(), grown.clone(), dtype, vec![])
            .write(
                &dir,
                &WriteOptions {
                    dtype: Some(dtype),
                    overwrite: false,
                },
            )
            .unwrap();
        let specs: Vec<TensorSpec> = plan
            .tensors()
            .into_iter()
            .map(|(name, shape)| TensorSpec { name, dtype, shape })
            .collect();
        let meta = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
        let path = tmp.path().join(format!("streamed-{dtype}.safetensors"));
        let mut w = SafetensorsWriter::create(&path, &specs, &meta).unwrap();
        let mut buf = vec![0.0f32; plan.max_tensor_len()];
        for i in 0..plan.len() {
            let n: usize = plan.shape(i).iter().product();
            plan.tensor_into(i, &mut buf[..n]);
            let view = ndarray::ArrayViewD::from_shape(plan.shape(i), &buf[..n]).unwrap();
            w.write_f32(plan.name(i), view).unwrap();
        }
        w.finish().unwrap();
        let a = std::fs::read(dir.join("model.safetensors")).unwrap();
        let b = std::fs::read(&path).unwrap();
        assert!(
            a == b,
            "{dtype}: streamed file differs from the in-memory one"
        );
    }
}

fn refused(m: &Model, t: Target) -> ExpandError {
    grow(m, &t, &GrowOptions::default()).expect_err("must be refused")
}

/// Smaller targets, head size changes and shrinking FFNs are refused with typed errors whose
/// message names the dimension and both sizes.
#[test]
fn bad_targets_are_refused_clearly() {
    let cfg = BertConfig::new(30, 16, 2, 2, 32, 16);
    let m = Model::Bert(Bert::random(&cfg, Heads::MLM, Init::TEST, 1));
    let ok = Target::of(&cfg);
    let e = refused(&m, Target { layers: 1, ..ok });
    assert!(
        matches!(
            e,
            ExpandError::Shrink {
                what: "layers",
                from: 2,
                to: 1
            }
        ),
        "{e}"
    );
    let e = refused(
        &m,
        Target {
            hidden: 8,
            heads: 1,
            ..ok
        },
    );
    assert!(
        matches!(
            e,
            ExpandError::Shrink {
                what: "hidden size",
                ..
            }
        ),
        "{e}"
    );
    let e = refused(
        &m,
        Target {
            intermediate: 31,
            ..ok
        },
    );
    assert!(
        matches!(
            e,
            ExpandError::Shrink {
                what: "intermediate size",
                from: 32,
                to: 31
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("31") && e.to_string().contains("32"),
        "{e}"
    );
    // 32 hidden over 2 heads would make heads of 16, not 8.
    let e = refused(&m, Target { hidden: 32, ..ok });
    assert!(
        matches!(
            e,
            ExpandError::HeadSize {
                from: 8,
                to: 16,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("use 4 heads"), "{e}");
    let e = refused(
        &m,
        Target {
            hidden: 24,
            heads: 5,
            ..ok
        },
    );
    assert!(
        matches!(
            e,
            ExpandError::Indivisible {
                hidden: 24,
                heads: 5
            }
        ),
        "{e}"
    );
    let e = refused(&m, Target { heads: 0, ..ok });
    assert!(
        matches!(e, ExpandError::ZeroTarget { what: "heads" }),
        "{e}"
    );
    // An inconsistent model is refused before any growth.
    let mut b = m.as_bert().unwrap().clone();
    b.layers.pop();
    let e = refused(&Model::Bert(b), ok);
    assert!(matches!(e, ExpandError::InvalidModel(_)), "{e}");
}

/// The reports the command line prints: JSON fields and the human summary say what was done
/// and whether it is exact, with the reasons when it is not.
#[test]
fn reports_serialize_and_summarize() {
    let cfg = BertConfig::new(30, 16, 2, 2, 32, 64);
    let m = Model::Bert(Bert::random(&cfg, Heads::ALL, Init::TEST, 5));
    let wide = Target {
        layers: 2,
        hidden: 32,
        heads: 4,
        intermediate: 40,
    };
    let (g, r) = grow(&m, &wide, &GrowOptions::default()).unwrap();
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["expected_exact"], true);
    assert_eq!(j["options"]["method"], "fpi");
    assert_eq!(j["hidden_map"]["copy_histogram"]["2"], 16);
    assert_eq!(j["layers"].as_array().unwrap().len(), 2);
    assert!(r.summary().contains("expected exact: yes"), "{r}");
    let v = bert2bert_expand::verify(&m, &g, &bert2bert_expand::VerifyOptions::default()).unwrap();
    let vj = serde_json::to_value(&v).unwrap();
    assert_eq!(vj["exact"], true);
    assert_eq!(vj["layers"].as_array().unwrap().len(), 3);
    assert!(v.summary().contains("function preserved"), "{v}");
    assert!(plan_unknown(&m, &wide));

    let deep = Target { layers: 5, ..wide };
    let aki = GrowOptions {
        method: Method::Aki,
        ..GrowOptions::default()
    };
    let (g, r) = grow(&m, &deep, &aki).unwrap();
    assert!(!r.expected_exact);
    assert_eq!(r.inexact_reasons.len(), 2, "{:?}", r.inexact_reasons);
    assert!(
        r.summary()
            .contains("AKI new units from the layer above: 1<-2"),
        "{r}"
    );
    assert_eq!(r.layer_order, [0, 1, 0, 1, 1]);
    let v = bert2bert_expand::verify(&m, &g, &bert2bert_expand::VerifyOptions::default()).unwrap();
    assert!(!v.exact && v.max_rel > 1e-3, "{v}");
}

fn plan_unknown(m: &Model, t: &Target) -> bool {
    let plan = GrowPlan::new(m, t, &GrowOptions::default()).unwrap();
    matches!(
        plan.tensor_by_name("bert.no.such.weight"),
        Err(ExpandError::UnknownTensor(_))
    )
}
