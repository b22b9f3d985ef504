//! The slice `exp` of the softmax and cross-entropy kernels against the C library's `expf`.

use bert2bert_train::expf::{exp, exp_sub};
use bert2bert_train::fused::tanh;

/// Whether `f32::exp` here is glibc's x86-64 `expf` in its FMA build, which `exp_sub` reproduces
/// word for word (glibc picks that build on CPUs with FMA and AVX2).
fn host_is_glibc_fma() -> bool {
    #[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
    {
        std::arch::is_x86_feature_detected!("fma") && std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(all(target_arch = "x86_64", target_env = "gnu")))]
    {
        false
    }
}

/// Distance in units in the last place between two finite f32 of the same sign.
fn ulps(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

/// Asserts `got` is `want` word for word where `exact` (NaN matching any NaN), else within an ulp.
fn assert_matches(got: f32, want: f32, exact: bool, what: impl Fn() -> String) {
    if want.is_nan() {
        assert!(got.is_nan(), "{} = {got:e}, want NaN", what());
    } else if exact {
        assert_eq!(
            want.to_bits(),
            got.to_bits(),
            "{} = {got:e}, want {want:e}",
            what()
        );
    } else {
        assert!(ulps(want, got) <= 1, "{} = {got:e}, want {want:e}", what());
    }
}

/// Checks `exp_sub` on `xs` (minus `c`) against `(x - c).exp()`: the same words on a glibc FMA
/// host, else within one unit in the last place (both are within about half a unit of exp).
fn check(xs: &[f32], c: f32) -> usize {
    let exact = host_is_glibc_fma();
    let mut ys = vec![0f32; xs.len()];
    exp_sub(&mut ys, xs, c);
    let mut checked = 0;
    for (&x, &y) in xs.iter().zip(&ys) {
        let want = (x - c).exp();
        assert_eq!(
            exp(x - c).to_bits(),
            y.to_bits(),
            "scalar and slice differ at {x:e} - {c:e}"
        );
        assert_matches(y, want, exact, || format!("exp({x:e} - {c:e})"));
        checked += 1;
    }
    checked
}

#[test]
fn exp_sub_gives_the_c_library_s_words_across_the_whole_range() {
    if !host_is_glibc_fma() {
        eprintln!(
            "note: not glibc x86-64 with FMA: checking exp_sub to one ulp, not word for word"
        );
    }
    // Every 4099th bit pattern (about a million values over every exponent and both signs),
    // then the edges: the fast path's bounds, the two arguments where glibc's SSE2 and FMA
    // builds differ, the subnormal and overflow ends, zeros, infinities, NaN.
    let mut xs: Vec<f32> = (0..=u32::MAX).step_by(4099).map(f32::from_bits).collect();
    for bits in [
        0x42af_ffff_u32,
        0x42b0_0000,
        0xc2af_ffff,
        0xc2b0_0000,
        0x4202_422f,
        0xc27c_65d9,
        0x42b1_7218,
        0xc2cf_f1b5,
        0xc2ce_8ed0,
        0x0000_0001,
        0x8000_0001,
        0x0000_0000,
        0x8000_0000,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
    ] {
        xs.push(f32::from_bits(bits));
    }
    // Odd lengths exercise the vector loops' remainders.
    for chunk in xs.chunks(1021) {
        check(chunk, 0.0);
    }
    // The subtraction happens in f32, as in `(x - max).exp()`.
    let row: Vec<f32> = (0..8191)
        .map(|i| ((i * 7919) % 2003) as f32 * 0.0137 - 9.0)
        .collect();
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    assert_eq!(check(&row, max), row.len());
    assert_eq!(check(&row, -3.25), row.len());
}

/// GPT-2's GELU tanh with its exp capped at 87 for the vector loop, against the formula it
/// replaces, `1 - 2 / (exp(2|u|) + 1)` with the C library's exp: the same words (on a glibc FMA
/// host; elsewhere within an ulp of it).
fn check_tanh(us: impl Iterator<Item = f32>) -> usize {
    let exact = host_is_glibc_fma();
    let mut n = 0;
    for u in us {
        let want = (1.0 - 2.0 / ((2.0 * u.abs()).exp() + 1.0)).copysign(u);
        let got = tanh(u);
        assert_matches(got, want, exact, || format!("tanh({u:e})"));
        n += 1;
    }
    n
}

#[test]
fn the_capped_tanh_gives_the_words_of_the_formula_with_the_c_library_s_exp() {
    let edges = [
        0.0f32,
        -0.0,
        8.5,
        9.5,
        43.5,
        44.0,
        44.5,
        100.0,
        -100.0,
        f32::INFINITY,
        f32::NAN,
    ];
    let n = check_tanh(
        (0..=u32::MAX)
            .step_by(4099)
            .map(f32::from_bits)
            .chain(edges),
    );
    assert!(n > 1_000_000);
}

/// All 2^32 inputs, for exp and tanh (a few minutes in a release build):
/// `cargo test --release -p bert2bert-train --test expf -- --ignored`.
#[test]
#[ignore = "exhaustive: run in release"]
fn exp_sub_and_tanh_give_the_c_library_s_words_for_every_f32() {
    let mut xs = vec![0f32; 1 << 20];
    let mut n = 0usize;
    for hi in 0..4096u32 {
        for (i, x) in xs.iter_mut().enumerate() {
            *x = f32::from_bits((hi << 20) | i as u32);
        }
        n += check(&xs, 0.0);
    }
    assert_eq!(n, 1 << 32);
    assert_eq!(check_tanh((0..=u32::MAX).map(f32::from_bits)), 1 << 32);
}
