//! The fused CPU kernels agree with the composed differentiable forms, values and gradients.

use bert2bert_train::bert::{layer_norm_composed, log_softmax_last_dim, softmax_composed};
use bert2bert_train::fused;
use candle_core::{Device, Tensor, Var};

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn randn(shape: (usize, usize), scale: f64, seed: u64) -> Tensor {
    // Seeded host values, so the test does not depend on candle's global generator.
    let mut r = bert2bert_checkpoint::random::SplitMix64::new(seed);
    let v: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| r.normal() * scale as f32)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Checks f against g: outputs, and gradients of sum(f(x) * r) with respect to every input.
fn check(
    name: &str,
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> Tensor,
    g: impl Fn(&[Tensor]) -> Tensor,
    tol: f32,
) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let yf = f(&ts);
    let yg = g(&ts);
    assert_eq!(yf.dims(), yg.dims(), "{name}");
    let d = max_diff(&yf, &yg);
    assert!(d <= tol, "{name}: outputs differ by {d}");
    let r = randn((1, yf.elem_count()), 1.0, 77)
        .reshape(yf.shape())
        .unwrap();
    let gf = (yf * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let gg = (yg * &r).unwrap().sum_all().unwrap().backward().unwrap();
    for (i, v) in vars.iter().enumerate() {
        let a = gf.get(v.as_tensor()).unwrap();
        let b = gg.get(v.as_tensor()).unwrap();
        let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        let scale = scale.to_scalar::<f32>().unwrap().max(1.0);
        let d = max_diff(a, b);
        assert!(
            d <= tol * scale,
            "{name}: gradient of input {i} differs by {d}"
        );
    }
}

#[test]
fn gelu_matches_candle_gelu_erf() {
    let x = randn((37, 53), 3.0, 1);
    check(
        "gelu",
        &[x],
        |t| fused::gelu_erf(&t[0]).unwrap(),
        |t| t[0].gelu_erf().unwrap(),
        1e-5,
    );
    // The erf approximation itself, against candle's.
    let x = Tensor::arange(-600f32, 600.0, &Device::Cpu).unwrap();
    let x = (x / 100.0).unwrap();
    let ours: Vec<f32> = x
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|&v| fused::erf(v))
        .collect();
    let ours = Tensor::new(ours, &Device::Cpu).unwrap();
    assert!(max_diff(&ours, &x.erf().unwrap()) < 3e-7);
}

#[test]
fn softmax_matches_composed() {
    let x = randn((24, 40), 4.0, 2);
    check(
        "softmax",
        &[x],
        |t| fused::softmax_last_dim(&t[0]).unwrap(),
        |t| softmax_composed(&t[0]).unwrap(),
        1e-6,
    );
}

#[test]
fn layer_norm_matches_composed() {
    let x = (randn((50, 48), 2.0, 3) + 0.7).unwrap();
    let w = (randn((1, 48), 0.3, 4).reshape(48).unwrap() + 1.0).unwrap();
    let b = randn((1, 48), 0.3, 5).reshape(48).unwrap();
    check(
        "layer_norm",
        &[x, w, b],
        |t| fused::layer_norm(&t[0], &t[1], &t[2], 1e-12).unwrap(),
        |t| layer_norm_composed(&t[0], &t[1], &t[2], 1e-12).unwrap(),
        2e-5,
    );
}

#[test]
fn cross_entropy_matches_composed() {
    let logits = randn((19, 101), 3.0, 6);
    let targets: Vec<u32> = (0..19).map(|i| (i * 37 % 101) as u32).collect();
    let targets = Tensor::new(targets, &Device::Cpu).unwrap();
    check(
        "cross_entropy",
        &[logits],
        |t| fused::cross_entropy_rows(&t[0], &targets).unwrap(),
        |t| {
            log_softmax_last_dim(&t[0])
                .unwrap()
                .gather(&targets.unsqueeze(1).unwrap(), 1)
                .unwrap()
                .squeeze(1)
                .unwrap()
                .neg()
                .unwrap()
        },
        2e-6,
    );
    let bad = Tensor::new(&[0u32, 500], &Device::Cpu).unwrap();
    let err = fused::cross_entropy_rows(&randn((2, 101), 1.0, 1), &bad).unwrap_err();
    assert!(err.to_string().contains("outside a vocabulary"), "{err}");
}
