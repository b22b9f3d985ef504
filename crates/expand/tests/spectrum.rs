//! Feature `linalg`: the spectra show FPI's duplicated units and AKI breaking the symmetry.
#![cfg(feature = "linalg")]

use bert2bert_checkpoint::random::{Heads, Init};
use bert2bert_checkpoint::{Bert, BertConfig, Model};
use bert2bert_expand::spectrum::{spectra, spectrum};
use bert2bert_expand::{GrowOptions, Method, Target, grow};

#[test]
fn fpi_keeps_the_source_rank_and_aki_raises_it() {
    let cfg = BertConfig::new(40, 16, 3, 2, 32, 16);
    let m = Model::Bert(Bert::random(&cfg, Heads::ALL, Init::TEST, 3));
    let t = Target {
        layers: 3,
        hidden: 32,
        heads: 4,
        intermediate: 64,
    };
    let src = spectra(&m).unwrap();
    let (fpi, _) = grow(&m, &t, &GrowOptions::default()).unwrap();
    let aki_opts = GrowOptions {
        method: Method::Aki,
        ..GrowOptions::default()
    };
    let (aki, _) = grow(&m, &t, &aki_opts).unwrap();
    let (f, a) = (spectra(&fpi).unwrap(), spectra(&aki).unwrap());
    assert_eq!(src.len(), f.len());
    for ((s, f), a) in src.iter().zip(&f).zip(&a) {
        assert_eq!(s.name, f.name);
        // Random source matrices have full rank; copies add none: the grown matrices (twice
        // the size) keep the source's rank, half their singular values are zero.
        assert_eq!(s.rank, s.shape.0.min(s.shape.1), "{}", s.name);
        assert_eq!(f.rank, s.rank, "{}: FPI must not add rank", f.name);
        // The in-dim rows stay copies under AKI too, so the rank cannot grow either; the new
        // columns from the layer above spread the spectrum instead.
        assert_eq!(a.rank, f.rank, "{}", a.name);
        let below_top = !f.name.contains("layer.2.");
        let aki_grows = f.name.contains("attention.self") || f.name.contains("intermediate");
        if below_top && aki_grows {
            assert!(
                a.effective_rank > f.effective_rank + 0.1,
                "{}: AKI effective rank {} vs FPI {}",
                a.name,
                a.effective_rank,
                f.effective_rank
            );
        } else {
            assert_eq!(a.singular_values, f.singular_values, "{}", a.name);
        }
    }
}

#[test]
fn duplicated_columns_show_as_zero_singular_values() {
    let w = ndarray::Array2::from_shape_fn((4, 3), |(i, j)| (i * 3 + j) as f32 + (i * j) as f32);
    let dup = ndarray::concatenate![ndarray::Axis(1), w, w];
    let s = spectrum("w", w.view()).unwrap();
    let d = spectrum("dup", dup.view()).unwrap();
    assert_eq!(d.rank, s.rank);
    // Duplicating every column scales each singular value by sqrt(2).
    for (a, b) in s
        .singular_values
        .iter()
        .zip(&d.singular_values)
        .take(s.rank)
    {
        assert!((b / a - 2f64.sqrt()).abs() < 1e-9);
    }
}
