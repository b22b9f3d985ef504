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

#[test]
fn gelu_tanh_is_candles_gelu_and_its_exact_derivative() {
    let x = randn((41, 47), 3.0, 11);
    // candle's backward uses six-digit constants, ours the exact derivative, and our tanh is
    // not libm's: values and gradients agree to about 1e-6.
    check(
        "gelu_tanh",
        std::slice::from_ref(&x),
        |t| fused::gelu_tanh(&t[0]).unwrap(),
        |t| t[0].gelu().unwrap(),
        1e-5,
    );
    // The one-exp tanh, against f64's, across the range GELU feeds it (and past it).
    for i in -20_000..=20_000 {
        let u = i as f32 * 0.001;
        let d = (fused::tanh(u) as f64 - (u as f64).tanh()).abs();
        assert!(d < 2e-7, "tanh({u}) off by {d}");
    }
    assert_eq!(fused::tanh(100.0), 1.0);
    assert_eq!(fused::tanh(-100.0), -1.0);
    assert_eq!(fused::tanh(0.0), 0.0);
    // The derivative against central differences in f64 of the same formula.
    let f = |v: f64| {
        let c = (2.0 / std::f64::consts::PI).sqrt();
        0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
    };
    let xs: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.15).collect();
    let xv = Var::new(xs.as_slice(), &Device::Cpu).unwrap();
    let g = fused::gelu_tanh(xv.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let dx = g.get(xv.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    for (&v, &d) in xs.iter().zip(&dx) {
        let h = 1e-5;
        let fd = (f(v as f64 + h) - f(v as f64 - h)) / (2.0 * h);
        assert!(
            (d as f64 - fd).abs() < 2e-6,
            "gelu_tanh'({v}) = {d}, differences say {fd}"
        );
    }
}

/// The composed dense layer the fused one replaces.
fn dense_composed(x: &Tensor, w: &Tensor, b: &Tensor, out_in: bool) -> Tensor {
    let y = if out_in {
        x.matmul(&w.t().unwrap()).unwrap()
    } else {
        x.matmul(w).unwrap()
    };
    y.broadcast_add(b).unwrap()
}

#[test]
fn dense_equals_matmul_plus_bias_bit_for_bit() {
    for out_in in [true, false] {
        let x = randn((67, 24), 1.0, 12);
        let w = if out_in {
            randn((40, 24), 0.2, 13)
        } else {
            randn((24, 40), 0.2, 13)
        };
        let b = randn((1, 40), 0.5, 14).reshape(40).unwrap();
        // Tolerance 0: the same matmuls and sums in the same order.
        check(
            "dense",
            &[x.clone(), w.clone(), b.clone()],
            |t| fused::dense(&t[0], &t[1], &t[2], out_in).unwrap(),
            |t| dense_composed(&t[0], &t[1], &t[2], out_in),
            0.0,
        );
        // An input that leads to no variable (a frozen layer's output) gets no gradient, and the
        // weights' are unchanged by that.
        let (wv, bv) = (Var::from_tensor(&w).unwrap(), Var::from_tensor(&b).unwrap());
        let r = randn((67, 40), 1.0, 15);
        let loss = |y: Tensor| (y * &r).unwrap().sum_all().unwrap();
        let gf = loss(fused::dense(&x, wv.as_tensor(), bv.as_tensor(), out_in).unwrap())
            .backward()
            .unwrap();
        let gc = loss(dense_composed(&x, wv.as_tensor(), bv.as_tensor(), out_in))
            .backward()
            .unwrap();
        assert!(gf.get(&x).is_none(), "a constant input got a gradient");
        for v in [&wv, &bv] {
            let (a, c) = (
                gf.get(v.as_tensor()).unwrap(),
                gc.get(v.as_tensor()).unwrap(),
            );
            assert_eq!(max_diff(a, c), 0.0, "out_in {out_in}");
        }
    }
    let err = fused::dense(
        &randn((3, 5), 1.0, 1),
        &randn((4, 6), 1.0, 2),
        &randn((1, 4), 1.0, 3).reshape(4).unwrap(),
        true,
    )
    .unwrap_err();
    assert!(err.to_string().contains("dense layer"), "{err}");
}

#[test]
fn attention_softmax_equals_scale_mask_softmax_bit_for_bit() {
    let (b, h, q) = (3, 2, 9);
    let scores = randn((b * h * q, q), 2.0, 16)
        .reshape((b, h, q, q))
        .unwrap();
    // BERT's padding mask (b, 1, 1, k) and GPT-2's causal one (1, 1, q, k).
    let pad: Vec<f32> = (0..b * q)
        .map(|i| if i % q >= q - i / q { -1e4 } else { 0.0 })
        .collect();
    let pad = Tensor::from_vec(pad, (b, 1, 1, q), &Device::Cpu).unwrap();
    let causal: Vec<f32> = (0..q * q)
        .map(|i| if i % q > i / q { -1e4 } else { 0.0 })
        .collect();
    let causal = Tensor::from_vec(causal, (1, 1, q, q), &Device::Cpu).unwrap();
    let scale = 1.0 / 8f64.sqrt();
    for mask in [pad, causal] {
        check(
            "attention_softmax",
            std::slice::from_ref(&scores),
            |t| fused::attention_softmax(&t[0], &mask, scale).unwrap(),
            |t| {
                let s = (&t[0] * scale).unwrap().broadcast_add(&mask).unwrap();
                fused::softmax_last_dim(&s).unwrap()
            },
            0.0,
        );
        check(
            "attention_softmax (composed softmax)",
            std::slice::from_ref(&scores),
            |t| fused::attention_softmax(&t[0], &mask, scale).unwrap(),
            |t| softmax_composed(&(&t[0] * scale).unwrap().broadcast_add(&mask).unwrap()).unwrap(),
            1e-6,
        );
    }
}

#[test]
fn dropout_keeps_scales_and_routes_the_gradient_through_the_same_mask() {
    let x = (randn((64, 99), 1.0, 17) + 3.0).unwrap(); // no zeros in x
    let xv = Var::from_tensor(&x).unwrap();
    let p = 0.3;
    let scale = 1.0 / ((1.0 - p) as f32);
    let y = bert2bert_train::bert::Dropout::train(5)
        .apply(xv.as_tensor(), p)
        .unwrap();
    let r = randn((64, 99), 1.0, 18);
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let dx = g
        .get(xv.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let (x, y, r) = [&x, &y, &r]
        .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .into();
    let mut dropped = 0;
    for i in 0..x.len() {
        if y[i] == 0.0 {
            dropped += 1;
            assert_eq!(dx[i], 0.0, "a dropped value passed gradient");
        } else {
            assert_eq!(y[i], x[i] * scale);
            assert_eq!(dx[i], r[i] * scale);
        }
    }
    let frac = dropped as f64 / x.len() as f64;
    assert!((frac - p).abs() < 0.03, "dropped {frac}, asked {p}");
    // The same seed draws the same mask.
    let again = bert2bert_train::bert::Dropout::train(5)
        .apply(&Tensor::new(x.as_slice(), &Device::Cpu).unwrap(), p)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(again, y);
}
