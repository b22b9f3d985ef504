//! `exp` over f32 slices in SIMD registers, bit for bit the `expf` of glibc on x86-64.
//!
//! The softmax and cross-entropy kernels spend most of their time in `f32::exp`, which calls the
//! C library's scalar `expf` once per element (a GPT-2 step takes 67 million of them in its LM
//! head). glibc's `expf` (Arm's optimized-routines algorithm: a 32-entry table of 2^(i/32) and a
//! cubic in double precision) is short and branch-free inside |x| < 88, so it runs here on whole
//! slices where the compiler can keep eight doubles per register. Its x86-64 build with FMA
//! (`__expf_fma`, what glibc picks on every CPU with FMA) fuses the range reduction and the
//! polynomial's multiply-adds; this module makes the same fusions with `mul_add`, so the results
//! are the same words: every one of the 2^32 inputs was checked against the host's `expf`
//! (`tests/expf.rs`, the ignored exhaustive test). Training numerics do not move. Arguments
//! outside the fast range (|x| >= 88, infinities, NaN) take the C library's `expf` itself.

/// 2^(i/32) as binary64 words, minus `i << 47` (glibc's `__exp2f_data.tab`).
const TAB: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];
/// 32 / ln 2 (`0x1.71547652b82fep+0 * 32`).
const INV_LN2_N: f64 = f64::from_bits(0x3ff71547652b82fe) * 32.0;
/// 1.5 * 2^52: adding it rounds to an integer, kept in the low bits of the sum's word.
const SHIFT: f64 = f64::from_bits(0x4338000000000000);
/// The cubic for 2^(r/32), r in [-1/2, 1/2] (`__exp2f_data.poly_scaled`).
const C0: f64 = f64::from_bits(0x3fac6af84b912394) / 32768.0;
const C1: f64 = f64::from_bits(0x3fcebfce50fac4f3) / 1024.0;
const C2: f64 = f64::from_bits(0x3fe62e42ff0c52d6) / 32.0;
/// The top 12 bits of 88.0f32: at or above this magnitude (or for inf and NaN) the fast path
/// does not apply.
const TOP12_88: u32 = 0x42b;

/// exp(x) for |x| < 88, as glibc's `__expf_fma` computes it (a NaN gives a NaN), inlined
/// without a branch so that element-wise loops run under [`simd`] stay in vector registers.
#[inline(always)]
pub(crate) fn exp_core(x: f32) -> f32 {
    let xd = f64::from(x);
    // x * 32 / ln 2 = k + r with k an integer, |r| <= 1/2.
    let kd = INV_LN2_N.mul_add(xd, SHIFT);
    let ki = kd.to_bits();
    let kd = kd - SHIFT;
    let r = INV_LN2_N.mul_add(xd, -kd);
    // 2^(k/32) from the table entry for k mod 32 and k / 32 added to the exponent.
    let s = f64::from_bits(TAB[(ki % 32) as usize].wrapping_add(ki << 47));
    let z = C0.mul_add(r, C1);
    let r2 = r * r;
    let y = C2.mul_add(r, 1.0);
    let y = z.mul_add(r2, y);
    (y * s) as f32
}

#[inline(always)]
fn outside(x: f32) -> bool {
    (x.to_bits() >> 20) & 0x7ff >= TOP12_88
}

#[inline(always)]
fn exp_sub_body(dst: &mut [f32], src: &[f32], c: f32) {
    // Every lane takes the fast path (safe for any input: the table index is reduced mod 32);
    // the few outside its range are recomputed below.
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = exp_core(s - c);
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        let x = s - c;
        if outside(x) {
            *d = x.exp();
        }
    }
}

/// `dst[i] = exp(src[i] - c)`, the subtraction in f32, each value bit for bit `(src[i] - c).exp()`
/// with glibc's x86-64 `expf`.
///
/// # Panics
/// If the slices differ in length.
pub fn exp_sub(dst: &mut [f32], src: &[f32], c: f32) {
    assert_eq!(dst.len(), src.len(), "exp_sub: slices of different lengths");
    simd(|| exp_sub_body(dst, src, c))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f` compiled for AVX-512 (else AVX2) with FMA where the CPU has them. Rust never fuses a
/// multiply and an add by itself, so only explicit `mul_add`s (those of [`exp_core`]) change
/// instruction, never a result.
#[inline(always)]
pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { run_avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { run_avx2(f) };
        }
    }
    f()
}

/// exp(x) by the same arithmetic as [`exp_sub`], one value at a time.
pub fn exp(x: f32) -> f32 {
    if outside(x) { x.exp() } else { exp_core(x) }
}
