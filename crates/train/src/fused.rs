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

/// An element-wise function with its derivative, run as a [`RowOp`] by [`Pointwise`].
trait PointOp: Send + Sync + Copy + 'static {
    /// Name of the forward op.
    const NAME: &'static str;
    /// Name of the backward op.
    const BWD_NAME: &'static str;
    /// The function.
    fn f(x: f32) -> f32;
    /// Its derivative.
    fn df(x: f32) -> f32;
}

/// A [`PointOp`] as a row op: rows are just chunks, the backward reads the input.
#[derive(Clone, Copy)]
struct Pointwise<P>(P);

impl<P: PointOp> RowOp for Pointwise<P> {
    const NAME: &'static str = P::NAME;
    const BWD_NAME: &'static str = P::BWD_NAME;
    const SAVES_OUTPUT: bool = false;
    fn rows(_: &Layout) -> Result<(usize, usize)> {
        // Element-wise: any split into rows will do.
        Ok((ELEMS_PER_TASK, 1))
    }
    fn forward(y: &mut [f32], x: &[f32]) {
        crate::expf::simd(|| {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = P::f(x);
            }
        })
    }
    fn backward(dx: &mut [f32], x: &[f32], g: &[f32]) {
        crate::expf::simd(|| {
            for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(g) {
                *dx = g * P::df(x);
            }
        })
    }
}

#[derive(Clone, Copy)]
struct GeluErf;

impl PointOp for GeluErf {
    const NAME: &'static str = "fused-gelu-erf";
    const BWD_NAME: &'static str = "fused-gelu-erf-bwd";
    #[inline(always)]
    fn f(x: f32) -> f32 {
        0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2))
    }
    #[inline(always)]
    fn df(x: f32) -> f32 {
        // d/dx x Phi(x) = Phi(x) + x phi(x).
        let cdf = 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2));
        let pdf = INV_SQRT_2PI * (-0.5 * x * x).exp();
        cdf + x * pdf
    }
}

/// tanh for f32 from one `exp`: absolute error below 2e-7 everywhere (tested), which is what
/// GELU needs (it uses `1 + tanh`); libm's `tanhf` goes through `expm1f` and cost GPT-2's step
/// more than its attention.
#[inline(always)]
pub fn tanh(u: f32) -> f32 {
    // 1 - 2 / (e^{2|u|} + 1), sign restored. Above 2|u| = 19 the quotient is below half an ulp
    // of 1 and the result is exactly 1, so capping the argument at 87 (where the branch-free exp
    // holds) changes no result; a NaN stays NaN through the comparison.
    let a = 2.0 * u.abs();
    let e = crate::expf::exp_core(if a > 87.0 { 87.0 } else { a });
    (1.0 - 2.0 / (e + 1.0)).copysign(u)
}

/// sqrt(2 / pi), as candle's `gelu` has it.
const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh approximation.
const GELU_TANH_CUBIC: f32 = 0.044715;

#[derive(Clone, Copy)]
struct GeluTanh;

impl PointOp for GeluTanh {
    const NAME: &'static str = "fused-gelu-tanh";
    const BWD_NAME: &'static str = "fused-gelu-tanh-bwd";
    #[inline(always)]
    fn f(v: f32) -> f32 {
        0.5 * v * (1.0 + tanh(SQRT_TWO_OVER_PI * v * (1.0 + GELU_TANH_CUBIC * v * v)))
    }
    #[inline(always)]
    fn df(v: f32) -> f32 {
        // y = v (1 + tanh u) / 2 with u = c v (1 + a v^2):
        // dy/dv = (1 + t) / 2 + v (1 - t^2) c (1 + 3 a v^2) / 2.
        let t = tanh(SQRT_TWO_OVER_PI * v * (1.0 + GELU_TANH_CUBIC * v * v));
        let du = SQRT_TWO_OVER_PI * (1.0 + 3.0 * GELU_TANH_CUBIC * v * v);
        0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du
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
        crate::expf::exp_sub(y, x, max);
        let mut sum = 0f32;
        for &y in y.iter() {
            sum += y;
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

/// A dense layer `x (n, in) -> (n, out)` with its bias added in the same pass: `W` stored
/// (out, in) as Hugging Face's `Linear` has it (`x W^T + b`), or (in, out) as GPT-2's `Conv1D`
/// (`x W + b`). Forward and backward run the same matmuls, in the same order, as the composed
/// `x.matmul(W^T).broadcast_add(b)`, so the values are bit for bit those; what goes is the
/// broadcast's cost (candle sums a bias gradient one divmod per element) and the gradient of an
/// input that leads to no variable (a frozen layer's output in stage 1).
struct Dense {
    /// `W` is stored (out, in).
    out_in: bool,
}

impl CustomOp3 for Dense {
    fn name(&self) -> &'static str {
        "fused-dense"
    }
    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let (n, k) = lx.shape().dims2()?;
        let rhs = if self.out_in {
            lw.transpose(0, 1)?
        } else {
            lw.clone()
        };
        let (k2, m) = rhs.shape().dims2()?;
        let b = f32_slice(sb, lb, self.name())?;
        if k2 != k || b.len() != m {
            bail!(
                "dense layer: input {:?}, weight {:?} (out_in {}), bias {}",
                lx.dims(),
                lw.dims(),
                self.out_in,
                b.len()
            );
        }
        let CpuStorage::F32(mut y) = sx.matmul(sw, (1, n, m, k), lx, &rhs)? else {
            bail!("dense layer: expected f32 tensors")
        };
        y.par_chunks_mut(m * ROWS_PER_TASK).for_each(|rows| {
            for row in rows.chunks_mut(m) {
                for (y, &b) in row.iter_mut().zip(b) {
                    *y += b;
                }
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((n, m))))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The products candle's matmul backward forms for `x.matmul(rhs)`: `g rhs^T` and
        // `x^T g` (then transposed back to `W`'s (out, in) when rhs = W^T).
        let dx = if !x.track_op() {
            None
        } else if self.out_in {
            Some(g.matmul(w)?)
        } else {
            Some(g.matmul(&w.t()?)?)
        };
        let dw = if !w.track_op() {
            None
        } else if self.out_in {
            Some(x.t()?.matmul(g)?.t()?)
        } else {
            Some(x.t()?.matmul(g)?)
        };
        let db = if b.track_op() {
            Some(g.contiguous()?.apply_op1_no_bwd(&ColumnSum)?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

/// Sums a contiguous `(n, m)` over its rows, rows in order (the order of candle's `sum_keepdim(0)`,
/// so the sums are bit for bit its), columns split across threads.
struct ColumnSum;

/// Columns per parallel task of [`ColumnSum`].
const COLUMNS_PER_TASK: usize = 64;

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "fused-column-sum"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = f32_slice(s, l, self.name())?;
        let (n, m) = l.shape().dims2()?;
        let mut out = vec![0f32; m];
        out.par_chunks_mut(COLUMNS_PER_TASK)
            .enumerate()
            .for_each(|(c, acc)| {
                let c0 = c * COLUMNS_PER_TASK;
                for row in g.chunks(m).take(n) {
                    for (a, &v) in acc.iter_mut().zip(&row[c0..]) {
                        *a += v;
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from(m)))
    }
}

/// Softmax over the last axis of `scores * scale + mask` for attention scores `(b, h, q, k)` and
/// an additive mask that broadcasts to them (BERT's `(b, 1, 1, k)`, GPT-2's `(1, 1, q, k)`): the
/// composed `softmax(broadcast_add(scores * scale, mask))`, bit for bit, in one pass each way.
struct AttentionSoftmax {
    scale: f32,
}

impl CustomOp2 for AttentionSoftmax {
    fn name(&self) -> &'static str {
        "fused-attention-softmax"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let CpuStorage::F32(mask) = s2 else {
            bail!("{}: expected an f32 mask", self.name())
        };
        let dims = l1.dims();
        let [b, h, q, k] = dims else {
            bail!("{}: scores must be (b, h, q, k), got {dims:?}", self.name())
        };
        let (b, h, q, k) = (*b, *h, *q, *k);
        let mask_l = l2.broadcast_as(dims)?;
        let st = mask_l.stride();
        let (st0, st1, st2, st3) = (st[0], st[1], st[2], st[3]);
        let off = mask_l.start_offset();
        let scale = self.scale;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(k * ROWS_PER_TASK)
            .zip(x.par_chunks(k * ROWS_PER_TASK))
            .enumerate()
            .for_each(|(task, (y, x))| {
                let mut row = vec![0f32; k];
                for (r, (y, x)) in y.chunks_mut(k).zip(x.chunks(k)).enumerate() {
                    let r = task * ROWS_PER_TASK + r;
                    let (bi, hi, qi) = (r / (h * q), r / q % h, r % q);
                    let m = off + bi * st0 + hi * st1 + qi * st2;
                    for (j, (v, &x)) in row.iter_mut().zip(x).enumerate() {
                        // candle's affine is `x * mul + add`; adding 0 keeps its bits.
                        *v = (x * scale + 0.0) + mask[m + j * st3];
                    }
                    Softmax::forward(y, &row);
                }
            });
        debug_assert_eq!(y.len(), b * h * q * k);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        _scores: &Tensor,
        _mask: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d = res.apply_op2_no_bwd(
            &grad.contiguous()?,
            &AttentionSoftmaxBwd { scale: self.scale },
        )?;
        Ok((Some(d), None))
    }
}

/// The backward of [`AttentionSoftmax`] on (probabilities, gradient): the softmax's, then the
/// scale's (`* scale + 0`, as candle's affine backward).
struct AttentionSoftmaxBwd {
    scale: f32,
}

impl CustomOp2 for AttentionSoftmaxBwd {
    fn name(&self) -> &'static str {
        "fused-attention-softmax-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let k = last_dim(l1)?;
        let scale = self.scale;
        let dx = map_rows2(y, g, k, ROWS_PER_TASK, |dx, y, g| {
            Softmax::backward(dx, y, g);
            dx.iter_mut().for_each(|v| *v = *v * scale + 0.0);
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// `x * mask` for a dropout mask made on the host. candle's `mul` would also form the
/// gradient of the mask (a constant) on every backward pass; this op forms only `x`'s, with the
/// same products (`x * mask` forward, `grad * mask` backward), so the values are bit for bit.
struct MaskMul(std::sync::Arc<Vec<f32>>);

impl CustomOp1 for MaskMul {
    fn name(&self) -> &'static str {
        "fused-mask-mul"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        if x.len() != self.0.len() {
            bail!("dropout mask of {} for {} values", self.0.len(), x.len());
        }
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(ELEMS_PER_TASK)
            .zip(
                x.par_chunks(ELEMS_PER_TASK)
                    .zip(self.0.par_chunks(ELEMS_PER_TASK)),
            )
            .for_each(|(y, (x, m))| {
                for ((y, &x), &m) in y.iter_mut().zip(x).zip(m) {
                    *y = x * m;
                }
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            grad.contiguous()?
                .apply_op1_no_bwd(&MaskMul(self.0.clone()))?,
        ))
    }
}

/// `x * mask` (dropout) with `mask` one value per element of `x`.
pub(crate) fn mask_mul(x: &Tensor, mask: Vec<f32>) -> Result<Tensor> {
    if use_fused(x) {
        x.contiguous()?
            .apply_op1(MaskMul(std::sync::Arc::new(mask)))
    } else {
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x.mul(&mask)
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

/// log(sum(exp(x))) of a row, `buf` (as long as the row) holding the exponentials.
fn log_sum_exp(x: &[f32], buf: &mut [f32]) -> f32 {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    crate::expf::exp_sub(buf, x, max);
    // In order, as the sum was always taken: the same rounding as before.
    max + buf.iter().sum::<f32>().ln()
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
        // Per row [loss, log-sum-exp]: the backward reads the second instead of another pass
        // of `exp` over the row.
        let mut out = vec![0f32; 2 * rows];
        out.par_chunks_mut(2)
            .zip(x.par_chunks(v).zip(t.par_iter()))
            .for_each_init(
                || vec![0f32; v],
                |buf, (o, (x, &t))| {
                    let lse = log_sum_exp(x, buf);
                    o[0] = lse - x[t as usize];
                    o[1] = lse;
                },
            );
        Ok((CpuStorage::F32(out), Shape::from((rows, 2))))
    }
    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // [gradient of the loss, saved log-sum-exp] per row.
        let g_lse = Tensor::cat(&[&grad.narrow(1, 0, 1)?, &res.narrow(1, 1, 1)?], 1)?;
        let dx = logits.contiguous()?.apply_op3_no_bwd(
            &g_lse,
            &targets.contiguous()?,
            &CrossEntropyBwd,
        )?;
        Ok((Some(dx), None))
    }
}

impl CustomOp3 for CrossEntropyBwd {
    fn name(&self) -> &'static str {
        "fused-cross-entropy-bwd"
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
        let g_lse = f32_slice(s2, l2, self.name())?;
        let t = targets_slice(s3, l3)?;
        let v = last_dim(l1)?;
        let rows = x.len() / v;
        if g_lse.len() != 2 * rows || t.len() != rows {
            bail!(
                "cross-entropy backward: {rows} rows, {} gradients, {} targets",
                g_lse.len() / 2,
                t.len()
            );
        }
        let mut dx = vec![0f32; rows * v];
        dx.par_chunks_mut(v)
            .zip(x.par_chunks(v))
            .zip(g_lse.par_chunks(2).zip(t.par_iter()))
            .for_each(|((dx, x), (g_lse, &t))| {
                let (g, lse) = (g_lse[0], g_lse[1]);
                // d loss / d x = softmax(x) - onehot(t).
                crate::expf::exp_sub(dx, x, lse);
                for dx in dx.iter_mut() {
                    *dx *= g;
                }
                dx[t as usize] -= g;
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
        x.contiguous()?.apply_op1(Rows(Pointwise(GeluErf)))
    } else {
        x.gelu_erf()
    }
}

/// The tanh approximation of GELU (GPT-2's `gelu_new`, candle's `gelu`).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if use_fused(x) {
        x.contiguous()?.apply_op1(Rows(Pointwise(GeluTanh)))
    } else {
        x.gelu()
    }
}

/// A dense layer on `x (n, in)`: `x W^T + b` when `W` is stored (out, in) (`out_in`, Hugging
/// Face `Linear`), `x W + b` when stored (in, out) (GPT-2 `Conv1D`).
pub fn dense(x: &Tensor, w: &Tensor, b: &Tensor, out_in: bool) -> Result<Tensor> {
    if use_fused(x) && w.device().is_cpu() {
        x.apply_op3(w, b, Dense { out_in })
    } else if out_in {
        x.matmul(&w.t()?)?.broadcast_add(b)
    } else {
        x.matmul(w)?.broadcast_add(b)
    }
}

/// Attention probabilities: softmax over the last axis of `scores (b, h, q, k) * scale + mask`,
/// `mask` broadcasting to the scores.
pub fn attention_softmax(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    if use_fused(scores) && mask.dtype() == DType::F32 && scores.rank() == 4 {
        scores.contiguous()?.apply_op2(
            mask,
            AttentionSoftmax {
                scale: scale as f32,
            },
        )
    } else {
        softmax_last_dim(&(scores * scale)?.broadcast_add(mask)?)
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
            .apply_op2(&targets.contiguous()?, CrossEntropy)?
            .narrow(1, 0, 1)?
            .squeeze(1)
    } else {
        let logp = crate::layers::log_softmax_last_dim(logits)?;
        logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()
    }
}
