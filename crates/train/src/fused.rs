//! Fused, multi-threaded CPU kernels with hand-written backward passes for the element-wise
//! parts of a BERT step: erf-GELU, row softmax, LayerNorm and the MLM cross-entropy.
//!
//! candle 0.11's CPU element-wise ops are single-threaded and its backward materialises every
//! intermediate, so the composed forms (see `bert.rs`) spend more time than the matmuls at these
//! widths. On the CPU these kernels replace them; on any other device the composed,
//! differentiable forms run, so the code stays device-generic. Each kernel is checked against the
//! composed form, values and gradients, in `tests/fused.rs`.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, bail,
};
use rayon::prelude::*;

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 16;
/// Elements per parallel task of an element-wise kernel.
const ELEMS_PER_TASK: usize = 4096;

/// `f(out_row, x_row)` for every row of `d` values of `x`, `rows_per_task` rows to a parallel
/// task; the output has the shape of `x`.
fn map_rows(
    x: &[f32],
    d: usize,
    rows_per_task: usize,
    f: impl Fn(&mut [f32], &[f32]) + Sync,
) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    let n = d * rows_per_task;
    y.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(|(y, x)| {
        for (y, x) in y.chunks_mut(d).zip(x.chunks(d)) {
            f(y, x);
        }
    });
    y
}

/// [`map_rows`] over two inputs of the same shape: `f(out_row, a_row, b_row)`.
fn map_rows2(
    a: &[f32],
    b: &[f32],
    d: usize,
    rows_per_task: usize,
    f: impl Fn(&mut [f32], &[f32], &[f32]) + Sync,
) -> Vec<f32> {
    let mut y = vec![0f32; a.len()];
    let n = d * rows_per_task;
    y.par_chunks_mut(n)
        .zip(a.par_chunks(n).zip(b.par_chunks(n)))
        .for_each(|(y, (a, b))| {
            for ((y, a), b) in y.chunks_mut(d).zip(a.chunks(d)).zip(b.chunks(d)) {
                f(y, a, b);
            }
        });
    y
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{what}: expected an f32 tensor")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{what}: input is not contiguous"),
    }
}

fn last_dim(l: &Layout) -> Result<usize> {
    match l.dims().last() {
        Some(&d) if d > 0 => Ok(d),
        _ => bail!("fused op on a tensor without a last axis: {:?}", l.dims()),
    }
}

/// erf(x) for f32, Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
#[inline]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * (-a * a).exp();
    y.copysign(x)
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi).
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// A row-local op with a hand-written backward: the forward maps each row of its input, the
/// backward each row of one saved tensor (the forward's input or output) with the gradient.
trait RowOp: Send + Sync + Copy + 'static {
    /// Name of the forward op.
    const NAME: &'static str;
    /// Name of the backward op.
    const BWD_NAME: &'static str;
    /// Whether the backward reads the forward's output (else its input).
    const SAVES_OUTPUT: bool;
    /// Values per row and rows per parallel task, for an input of layout `l`.
    fn rows(l: &Layout) -> Result<(usize, usize)>;
    /// One output row from one input row.
    fn forward(y: &mut [f32], x: &[f32]);
    /// One row of the input gradient from the saved row and the output gradient.
    fn backward(dx: &mut [f32], saved: &[f32], g: &[f32]);
}

/// The candle op running a [`RowOp`]'s forward.
#[derive(Clone, Copy)]
struct Rows<K>(K);
/// The candle op running a [`RowOp`]'s backward on (saved, gradient).
struct RowsBwd<K>(K);

impl<K: RowOp> CustomOp1 for Rows<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let (d, per_task) = K::rows(l)?;
        let y = map_rows(x, d, per_task, K::forward);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let saved = if K::SAVES_OUTPUT { res } else { arg };
        Ok(Some(
            saved.apply_op2_no_bwd(&grad.contiguous()?, &RowsBwd(self.0))?,
        ))
    }
}

impl<K: RowOp> CustomOp2 for RowsBwd<K> {
    fn name(&self) -> &'static str {
        K::BWD_NAME
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let saved = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let (d, per_task) = K::rows(l1)?;
        let dx = map_rows2(saved, g, d, per_task, K::backward);
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

#[derive(Clone, Copy)]
struct GeluErf;

impl RowOp for GeluErf {
    const NAME: &'static str = "fused-gelu-erf";
    const BWD_NAME: &'static str = "fused-gelu-erf-bwd";
    const SAVES_OUTPUT: bool = false;
    fn rows(_: &Layout) -> Result<(usize, usize)> {
        // Element-wise: any split into rows will do.
        Ok((ELEMS_PER_TASK, 1))
    }
    fn forward(y: &mut [f32], x: &[f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = 0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2));
        }
    }
    fn backward(dx: &mut [f32], x: &[f32], g: &[f32]) {
        for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(g) {
            // d/dx x Phi(x) = Phi(x) + x phi(x).
            let cdf = 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2));
            let pdf = INV_SQRT_2PI * (-0.5 * x * x).exp();
            *dx = g * (cdf + x * pdf);
        }
    }
}

#[derive(Clone, Copy)]
struct Softmax;

impl RowOp for Softmax {
    const NAME: &'static str = "fused-softmax";
    const BWD_NAME: &'static str = "fused-softmax-bwd";
    const SAVES_OUTPUT: bool = true;
    fn rows(l: &Layout) -> Result<(usize, usize)> {
        Ok((last_dim(l)?, ROWS_PER_TASK))
    }
    fn forward(y: &mut [f32], x: &[f32]) {
        let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0f32;
        for (y, &x) in y.iter_mut().zip(x) {
            *y = (x - max).exp();
            sum += *y;
        }
        let inv = 1.0 / sum;
        y.iter_mut().for_each(|y| *y *= inv);
    }
    fn backward(dx: &mut [f32], y: &[f32], g: &[f32]) {
        // dx = y (g - sum(g y)).
        let dot: f32 = y.iter().zip(g).map(|(a, b)| a * b).sum();
        for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(g) {
            *dx = y * (g - dot);
        }
    }
}

struct LayerNormOp {
    eps: f32,
}
struct LayerNormBwd {
    eps: f32,
}

fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let d = x.len() as f32;
    let mean = x.iter().sum::<f32>() / d;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let w = f32_slice(s2, l2, self.name())?;
        let b = f32_slice(s3, l3, self.name())?;
        let d = last_dim(l1)?;
        if w.len() != d || b.len() != d {
            bail!(
                "layer norm over {d} with weight {} and bias {}",
                w.len(),
                b.len()
            );
        }
        let y = map_rows(x, d, ROWS_PER_TASK, |y, x| {
            let (mean, rstd) = row_stats(x, self.eps);
            for i in 0..d {
                y[i] = (x[i] - mean) * rstd * w[i] + b[i];
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = x.dim(candle_core::D::Minus1)?;
        let rows = x.elem_count() / d;
        // One kernel returns [dx rows; dgamma; dbeta] stacked as (rows + 2, d).
        let all = x.apply_op3_no_bwd(&grad.contiguous()?, w, &LayerNormBwd { eps: self.eps })?;
        let dx = all.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = all.narrow(0, rows, 1)?.reshape(d)?;
        let db = all.narrow(0, rows + 1, 1)?.reshape(d)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp3 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "fused-layer-norm-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let w = f32_slice(s3, l3, self.name())?;
        let d = last_dim(l1)?;
        let rows = x.len() / d;
        let mut out = vec![0f32; (rows + 2) * d];
        let (dx, _) = out.split_at_mut(rows * d);
        let n = d * ROWS_PER_TASK;
        // Per task: dx rows, and partial sums of dgamma and dbeta.
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(n)
            .zip(x.par_chunks(n).zip(g.par_chunks(n)))
            .map(|(dx, (x, g))| {
                let mut dw = vec![0f32; d];
                let mut db = vec![0f32; d];
                let mut xhat = vec![0f32; d];
                for ((dx, x), g) in dx.chunks_mut(d).zip(x.chunks(d)).zip(g.chunks(d)) {
                    let (mean, rstd) = row_stats(x, self.eps);
                    let mut m1 = 0f32;
                    let mut m2 = 0f32;
                    for i in 0..d {
                        xhat[i] = (x[i] - mean) * rstd;
                        let dxhat = g[i] * w[i];
                        m1 += dxhat;
                        m2 += dxhat * xhat[i];
                        dw[i] += g[i] * xhat[i];
                        db[i] += g[i];
                    }
                    m1 /= d as f32;
                    m2 /= d as f32;
                    for i in 0..d {
                        dx[i] = rstd * (g[i] * w[i] - m1 - xhat[i] * m2);
                    }
                }
                (dw, db)
            })
            .collect();
        let (_, tail) = out.split_at_mut(rows * d);
        let (dw, db) = tail.split_at_mut(d);
        for (pw, pb) in partials {
            for i in 0..d {
                dw[i] += pw[i];
                db[i] += pb[i];
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, d))))
    }
}

struct CrossEntropy;
struct CrossEntropyBwd;

fn targets_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [u32]> {
    let CpuStorage::U32(v) = s else {
        bail!("cross-entropy targets must be u32")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("cross-entropy targets are not contiguous"),
    }
}

fn log_sum_exp(x: &[f32]) -> f32 {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    max + x.iter().map(|&v| (v - max).exp()).sum::<f32>().ln()
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let t = targets_slice(s2, l2)?;
        let v = last_dim(l1)?;
        let rows = x.len() / v;
        if t.len() != rows {
            bail!("cross-entropy of {rows} rows with {} targets", t.len());
        }
        if let Some(&bad) = t.iter().find(|&&t| t as usize >= v) {
            bail!("cross-entropy target {bad} outside a vocabulary of {v}");
        }
        let losses: Vec<f32> = x
            .par_chunks(v)
            .zip(t.par_iter())
            .map(|(x, &t)| log_sum_exp(x) - x[t as usize])
            .collect();
        Ok((CpuStorage::F32(losses), Shape::from(rows)))
    }
    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // Pack [logits | grad] per row so one kernel sees both; targets ride along as f32.
        let rows = logits.dim(0)?;
        let packed = Tensor::cat(
            &[
                logits,
                &grad.reshape((rows, 1))?,
                &targets.to_dtype(DType::F32)?.reshape((rows, 1))?,
            ],
            1,
        )?;
        Ok((Some(packed.apply_op1_no_bwd(&CrossEntropyBwd)?), None))
    }
}

impl CustomOp1 for CrossEntropyBwd {
    fn name(&self) -> &'static str {
        "fused-cross-entropy-bwd"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let p = f32_slice(s, l, self.name())?;
        let w = last_dim(l)?;
        let v = w - 2;
        let rows = p.len() / w;
        let mut dx = vec![0f32; rows * v];
        dx.par_chunks_mut(v)
            .zip(p.par_chunks(w))
            .for_each(|(dx, row)| {
                let (x, rest) = row.split_at(v);
                let (g, t) = (rest[0], rest[1] as usize);
                let lse = log_sum_exp(x);
                // d loss / d x = softmax(x) - onehot(t).
                for (dx, &x) in dx.iter_mut().zip(x) {
                    *dx = g * (x - lse).exp();
                }
                dx[t] -= g;
            });
        Ok((CpuStorage::F32(dx), Shape::from((rows, v))))
    }
}

fn use_fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// Exact (erf) GELU.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if use_fused(x) {
        x.contiguous()?.apply_op1(Rows(GeluErf))
    } else {
        x.gelu_erf()
    }
}

/// Softmax over the last axis.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if use_fused(x) {
        x.contiguous()?.apply_op1(Rows(Softmax))
    } else {
        crate::layers::softmax_composed(x)
    }
}

/// LayerNorm over the last axis with affine `weight` and `bias`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if use_fused(x) {
        x.contiguous()?
            .apply_op3(weight, bias, LayerNormOp { eps: eps as f32 })
    } else {
        crate::layers::layer_norm_composed(x, weight, bias, eps)
    }
}

/// Per-row cross-entropy of `logits (m, V)` against `targets (m)` (u32).
pub fn cross_entropy_rows(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if use_fused(logits) {
        logits
            .contiguous()?
            .apply_op2(&targets.contiguous()?, CrossEntropy)
    } else {
        let logp = crate::layers::log_softmax_last_dim(logits)?;
        logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()
    }
}
