//! bert2BERT for GPT-2 (docs/growth-gpt2.md): FPI and AKI with the fused `c_attn` split into
//! Q, K and V, the tied-`lm_head` fix on `ln_f`, the exact construction for pre-LN models
//! (k copies + r mean-units, spec section 5) at any width ratio, identity depth growth, and the
//! GPT-2 verification.
//!
//! GPT-2's `Conv1D` weights are stored (in, out) by Hugging Face, so the Hugging Face
//! orientation is the typed one for every tensor but an untied `lm_head` (stored (V, D)).

use crate::error::ExpandError;
use crate::expn::{MatrixSpec, Orient, VectorSpec, fill_matrix, fill_vector, reciprocal};
use crate::forward::gpt2::{forward_gpt2, random_ids, scales_by_layer_index};
use crate::maps::{IndexMap, LayerMapSet, MapRole, layer_order};
use crate::options::{AkiScope, Depth, GrowOptions, MapKind, Method, Target};
use crate::report::{GrowReport, LayerMaps, MapSummary, ModuleReport};
use crate::verify::{Acc, VerifyOptions, VerifyReport};
use bert2bert_checkpoint::bert::Leaf;
use bert2bert_checkpoint::gpt2::{Part, Role, TensorDef, tensor_table};
use bert2bert_checkpoint::random::SplitMix64;
use bert2bert_checkpoint::{Gpt2, Gpt2Block, Gpt2Config, LayerNorm, Linear};
use ndarray::{Array1, Array2, ArrayD, ArrayView1, ArrayView2, Axis, IxDyn, Slice, s};
use std::collections::BTreeMap;

/// Every index map, the layer order and the exact-mode constants of one GPT-2 growth.
#[derive(Debug)]
pub(crate) struct Gpt2Plan<'a> {
    src: &'a Gpt2,
    target: Target,
    opts: GrowOptions,
    config: Gpt2Config,
    /// The hidden map g over all D_t units.
    hidden: IndexMap,
    /// Exact mode: k = D_t div D_s, every source unit's number of copies.
    copies: u32,
    /// Exact mode: r = D_t - k D_s mean-units at the end of the stream; 0 otherwise.
    mean_units: usize,
    /// Out-map of residual writers: D_t -> D_s (+ 1 mean column in exact mode).
    writer: IndexMap,
    /// In-map of residual readers: D_t -> D_s (+ r pre-divided rows in exact mode).
    reader: IndexMap,
    /// Exact mode: sqrt(k D_s / D_t), the gamma factor on copied units.
    ln_scale: f64,
    pub(crate) maps: LayerMapSet,
    /// Per target layer: an added identity block (`Depth::Identity` repeats).
    identity: Vec<bool>,
    entries: Vec<TensorDef>,
}

/// The mean of `v`, accumulated in f64 and rounded once.
fn mean(v: ArrayView1<'_, f32>) -> f32 {
    (v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64) as f32
}

/// `w` with one more column holding each row's mean (exact mode's residual writers).
fn with_mean_column(w: ArrayView2<'_, f32>) -> Array2<f32> {
    let (n, d) = w.dim();
    let mut a = Array2::<f32>::zeros((n, d + 1));
    a.slice_mut(s![.., ..d]).assign(&w);
    for (i, row) in w.rows().into_iter().enumerate() {
        a[[i, d]] = mean(row);
    }
    a
}

/// `v` with its mean appended (exact mode's writer biases).
fn with_mean(v: ArrayView1<'_, f32>) -> Array1<f32> {
    let mut a = v.to_vec();
    a.push(mean(v));
    Array1::from_vec(a)
}

/// `v` with a 0 appended (exact mode's LayerNorm parameters: 0 on mean-units).
fn with_zero(v: ArrayView1<'_, f32>) -> Array1<f32> {
    let mut a = v.to_vec();
    a.push(0.0);
    Array1::from_vec(a)
}

impl<'a> Gpt2Plan<'a> {
    pub(crate) fn new(
        src: &'a Gpt2,
        target: &Target,
        opts: &GrowOptions,
    ) -> Result<Self, ExpandError> {
        src.validate()?;
        let c = &src.config;
        let (ds, dt) = (c.n_embd, target.hidden);
        target.check_growth_from(&Target::of_gpt2(c))?;
        let (seed, kind) = (opts.seed, opts.map);
        let exact = kind == MapKind::Exact;
        let hidden = IndexMap::new(kind, ds, dt, seed, MapRole::Hidden);
        let (copies, mean_units, writer, reader, rho) = if exact {
            let k = dt / ds;
            let r = dt - k * ds;
            let copied = &hidden.map()[..k * ds];
            let writer: Vec<usize> = copied
                .iter()
                .copied()
                .chain(std::iter::repeat_n(ds, r))
                .collect();
            let reader: Vec<usize> = copied.iter().copied().chain(ds..ds + r).collect();
            (
                k as u32,
                r,
                IndexMap::from_parts(kind, ds + 1, writer),
                IndexMap::from_parts(kind, ds + r, reader),
                (k * ds) as f64 / dt as f64,
            )
        } else {
            (0, 0, hidden.clone(), hidden.clone(), 1.0)
        };
        let ls = c.n_layer;
        let maps = LayerMapSet::new(opts, target, ls, c.n_head, c.head_dim(), c.inner_dim());
        let mut seen = vec![false; ls];
        let identity = maps
            .order
            .iter()
            .map(|&l| opts.depth == Depth::Identity && std::mem::replace(&mut seen[l], true))
            .collect();
        let mut config = c.with_shape(
            target.layers,
            target.hidden,
            target.heads,
            target.intermediate,
        );
        if exact {
            // The stream's variance shrinks by rho = k D_s / D_t; epsilon shrinks with it
            // (rho is exactly 1 at integer ratios, so epsilon is then unchanged to the bit).
            config.layer_norm_epsilon = c.layer_norm_epsilon * rho;
        }
        let mut plan = Self {
            src,
            target: *target,
            opts: *opts,
            config,
            hidden,
            copies,
            mean_units,
            writer,
            reader,
            ln_scale: rho.sqrt(),
            maps,
            identity,
            entries: Vec::new(),
        };
        plan.entries = plan.list_entries();
        Ok(plan)
    }

    fn exact(&self) -> bool {
        self.opts.map == MapKind::Exact
    }

    /// The grown tensors in the order of `Gpt2::named_tensors`, with Hugging Face shapes.
    fn list_entries(&self) -> Vec<TensorDef> {
        // The grown config's tensor table, with the source's prefix and head.
        tensor_table(&self.config, self.src.layout())
    }

    /// The source layer whose weights fill the new units of source layer `l`, if AKI applies.
    fn upper_of(&self, l: usize) -> Option<usize> {
        (self.opts.method == Method::Aki && l + 1 < self.src.blocks.len()).then_some(l + 1)
    }

    /// A residual writer (embedding or output projection) `lower` (in, D_s): out-dim by the
    /// hidden map, mean-units from the mean column in exact mode; in-dim by `rows` (divide).
    fn fill_writer(
        &self,
        lower: ArrayView2<'_, f32>,
        upper: Option<ArrayView2<'_, f32>>,
        rows: Option<&IndexMap>,
        out: &mut [f32],
    ) {
        let (lo, up) = if self.exact() {
            (Some(with_mean_column(lower)), upper.map(with_mean_column))
        } else {
            (None, None)
        };
        let spec = MatrixSpec {
            lower: lo.as_ref().map_or(lower, |a| a.view()),
            upper: up.as_ref().map(|a| a.view()).or(upper),
            rows,
            cols: Some(&self.writer),
            split: self.src.config.n_embd,
        };
        fill_matrix(&spec, Orient::Typed, out)
    }

    /// A residual writer's bias.
    fn fill_writer_bias(
        &self,
        lower: ArrayView1<'_, f32>,
        upper: Option<ArrayView1<'_, f32>>,
        out: &mut [f32],
    ) {
        let (lo, up) = if self.exact() {
            (Some(with_mean(lower)), upper.map(with_mean))
        } else {
            (None, None)
        };
        let spec = VectorSpec {
            lower: lo.as_ref().map_or(lower, |a| a.view()),
            upper: up.as_ref().map(|a| a.view()).or(upper),
            map: Some(&self.writer),
            split: self.src.config.n_embd,
            divide: false,
        };
        fill_vector(&spec, out)
    }

    /// `w` (D_s, out) with the r mean-unit rows of exact mode appended, each the row of its
    /// nominal source unit already divided by k. Role a reader takes from a mean-unit is free
    /// (the LayerNorm before it outputs 0 there); a non-zero row keeps that unit trainable,
    /// where zeros would be a fixed point of gradient descent (docs/growth-gpt2.md).
    fn reader_rows(&self, w: ArrayView2<'_, f32>) -> Array2<f32> {
        let ds = w.nrows();
        let first = self.copies as usize * ds;
        let inv = reciprocal(self.copies);
        let mut a = Array2::<f32>::zeros((ds + self.mean_units, w.ncols()));
        a.slice_mut(s![..ds, ..]).assign(&w);
        for j in 0..self.mean_units {
            let n = self.hidden.map()[first + j];
            a.row_mut(ds + j).assign(&w.row(n).mapv(|x| x * inv));
        }
        a
    }

    /// A residual reader `lower` (D_s, out): in-dim by the hidden map (divide), out-dim by
    /// `cols` (copy), new output units from `upper` (AKI).
    fn fill_reader(
        &self,
        lower: ArrayView2<'_, f32>,
        upper: Option<ArrayView2<'_, f32>>,
        cols: Option<&IndexMap>,
        orient: Orient,
        out: &mut [f32],
    ) {
        let (lo, up) = if self.exact() && self.mean_units > 0 {
            (
                Some(self.reader_rows(lower)),
                upper.map(|u| self.reader_rows(u)),
            )
        } else {
            (None, None)
        };
        let spec = MatrixSpec {
            lower: lo.as_ref().map_or(lower, |a| a.view()),
            upper: up.as_ref().map(|a| a.view()).or(upper),
            rows: Some(&self.reader),
            cols,
            split: cols.map_or(0, IndexMap::source),
        };
        fill_matrix(&spec, orient, out)
    }

    /// A LayerNorm parameter; `tied` applies the tied-`lm_head` fix (divide by the copy counts).
    fn fill_ln(
        &self,
        ln: &LayerNorm,
        upper: Option<&LayerNorm>,
        prm: Leaf,
        tied: bool,
        out: &mut [f32],
    ) {
        let pick = |n: &LayerNorm| match prm {
            Leaf::Weight => n.weight.to_owned(),
            Leaf::Bias => n.bias.to_owned(),
        };
        let ds = self.src.config.n_embd;
        if !self.exact() {
            let (lo, up) = (pick(ln), upper.map(pick));
            let spec = VectorSpec {
                lower: lo.view(),
                upper: up.as_ref().map(|a| a.view()),
                map: Some(&self.hidden),
                split: ds,
                divide: tied,
            };
            return fill_vector(&spec, out);
        }
        // Exact: copies scaled (gamma by sqrt(k D_s / D_t), both by 1 / k when tied), gamma
        // and beta 0 on mean-units (the appended 0).
        let (lo, up) = (
            with_zero(pick(ln).view()),
            upper.map(|u| with_zero(pick(u).view())),
        );
        let spec = VectorSpec {
            lower: lo.view(),
            upper: up.as_ref().map(|a| a.view()),
            map: Some(&self.writer),
            split: ds,
            divide: false,
        };
        fill_vector(&spec, out);
        let factor = match (prm, tied) {
            // r = 0: the same expression FPI uses, so exact growth at an integer ratio is FPI.
            (_, true) if self.mean_units == 0 => reciprocal(self.copies),
            (Leaf::Bias, true) => reciprocal(self.copies),
            (Leaf::Weight, true) => (self.ln_scale / self.copies as f64) as f32,
            (Leaf::Weight, false) => self.ln_scale as f32,
            (Leaf::Bias, false) => 1.0,
        };
        if factor != 1.0 {
            out.iter_mut().for_each(|v| *v *= factor);
        }
    }

    fn fill(&self, what: Role, lm_orient: Orient, out: &mut [f32]) {
        let s = self.src;
        let ds = s.config.n_embd;
        let all = self.opts.aki_scope == AkiScope::All;
        match what {
            Role::Wte => self.fill_writer(s.wte.view(), None, None, out),
            Role::Wpe => self.fill_writer(s.wpe.view(), None, None, out),
            Role::LnF(prm) => self.fill_ln(&s.ln_f, None, prm, s.lm_head.is_none(), out),
            Role::LmHead => {
                let head = s.lm_head.as_ref().expect("listed only when untied");
                self.fill_reader(head.view(), None, None, lm_orient, out)
            }
            Role::Block(t, part, prm) => {
                let l = self.maps.order[t];
                let blocks = &s.blocks;
                let b = &blocks[l];
                let up = self.upper_of(l).map(|u| &blocks[u]);
                let up_all = up.filter(|_| all);
                if self.identity[t] && matches!(part, Part::AttnProj | Part::MlpProj) {
                    // An added identity block writes nothing to the stream.
                    out.fill(0.0);
                    return;
                }
                match (part, prm) {
                    (Part::Ln1, _) => {
                        self.fill_ln(&b.ln_1, up_all.map(|u| &u.ln_1), prm, false, out)
                    }
                    (Part::Ln2, _) => {
                        self.fill_ln(&b.ln_2, up_all.map(|u| &u.ln_2), prm, false, out)
                    }
                    (Part::CAttn, Leaf::Weight) => {
                        // Split the fused Q | K | V, grow each by the head map, fuse back.
                        let dt = self.target.hidden;
                        let u = &self.maps.head_units[l];
                        let mut part_buf = vec![0.0f32; dt * dt];
                        for p in 0..3 {
                            let cols = s![.., p * ds..(p + 1) * ds];
                            let lower = b.c_attn.weight.slice(cols);
                            let upper = up.map(|x| x.c_attn.weight.slice(cols));
                            self.fill_reader(lower, upper, Some(u), Orient::Typed, &mut part_buf);
                            for (orow, prow) in out.chunks_mut(3 * dt).zip(part_buf.chunks(dt)) {
                                orow[p * dt..(p + 1) * dt].copy_from_slice(prow);
                            }
                        }
                    }
                    (Part::CAttn, Leaf::Bias) => {
                        let dt = self.target.hidden;
                        for (p, chunk) in out.chunks_mut(dt).enumerate() {
                            let r = p * ds..(p + 1) * ds;
                            let spec = VectorSpec {
                                lower: b.c_attn.bias.slice(s![r.clone()]),
                                upper: up.map(|x| x.c_attn.bias.slice(s![r.clone()])),
                                map: Some(&self.maps.head_units[l]),
                                split: ds,
                                divide: false,
                            };
                            fill_vector(&spec, chunk);
                        }
                    }
                    (Part::AttnProj, Leaf::Weight) => self.fill_writer(
                        b.attn_proj.weight.view(),
                        up_all.map(|u| u.attn_proj.weight.view()),
                        Some(&self.maps.head_units[l]),
                        out,
                    ),
                    (Part::AttnProj, Leaf::Bias) => self.fill_writer_bias(
                        b.attn_proj.bias.view(),
                        up_all.map(|u| u.attn_proj.bias.view()),
                        out,
                    ),
                    (Part::Fc, Leaf::Weight) => self.fill_reader(
                        b.fc.weight.view(),
                        up.map(|u| u.fc.weight.view()),
                        Some(&self.maps.ffn[l]),
                        Orient::Typed,
                        out,
                    ),
                    (Part::Fc, Leaf::Bias) => fill_vector(
                        &VectorSpec {
                            lower: b.fc.bias.view(),
                            upper: up.map(|u| u.fc.bias.view()),
                            map: Some(&self.maps.ffn[l]),
                            split: self.maps.ffn[l].source(),
                            divide: false,
                        },
                        out,
                    ),
                    (Part::MlpProj, Leaf::Weight) => self.fill_writer(
                        b.mlp_proj.weight.view(),
                        up_all.map(|u| u.mlp_proj.weight.view()),
                        Some(&self.maps.ffn[l]),
                        out,
                    ),
                    (Part::MlpProj, Leaf::Bias) => self.fill_writer_bias(
                        b.mlp_proj.bias.view(),
                        up_all.map(|u| u.mlp_proj.bias.view()),
                        out,
                    ),
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn name(&self, i: usize) -> &str {
        &self.entries[i].name
    }

    pub(crate) fn shape(&self, i: usize) -> &[usize] {
        &self.entries[i].shape
    }

    pub(crate) fn tensor_into(&self, i: usize, out: &mut [f32]) {
        let n: usize = self.entries[i].shape.iter().product();
        assert_eq!(out.len(), n, "output buffer size");
        self.fill(self.entries[i].role, Orient::Hf, out)
    }

    pub(crate) fn tensor(&self, i: usize) -> ArrayD<f32> {
        let shape = self.entries[i].shape.clone();
        let mut v = vec![0.0f32; shape.iter().product()];
        self.tensor_into(i, &mut v);
        ArrayD::from_shape_vec(IxDyn(&shape), v).expect("shape matches size")
    }

    pub(crate) fn config(&self) -> &Gpt2Config {
        &self.config
    }

    pub(crate) fn mean_units(&self) -> usize {
        self.mean_units
    }

    pub(crate) fn hidden_map(&self) -> &IndexMap {
        &self.hidden
    }

    fn vector(&self, what: Role, n: usize) -> Array1<f32> {
        let mut v = vec![0.0f32; n];
        self.fill(what, Orient::Typed, &mut v);
        Array1::from_vec(v)
    }

    /// A matrix in the typed orientation (Conv1D (in, out) as stored; an untied head (D, V)).
    fn matrix(&self, what: Role, dims: (usize, usize)) -> Array2<f32> {
        let mut v = vec![0.0f32; dims.0 * dims.1];
        self.fill(what, Orient::Typed, &mut v);
        Array2::from_shape_vec(dims, v).expect("shape matches size")
    }

    fn grown_block(&self, t: usize) -> Gpt2Block {
        let (d, f) = (self.target.hidden, self.target.intermediate);
        let w = |p| Role::Block(t, p, Leaf::Weight);
        let b = |p| Role::Block(t, p, Leaf::Bias);
        let lin = |p, i, o| Linear {
            weight: self.matrix(w(p), (i, o)),
            bias: self.vector(b(p), o),
        };
        let ln = |p| LayerNorm {
            weight: self.vector(w(p), d),
            bias: self.vector(b(p), d),
        };
        Gpt2Block {
            ln_1: ln(Part::Ln1),
            c_attn: lin(Part::CAttn, d, 3 * d),
            attn_proj: lin(Part::AttnProj, d, d),
            ln_2: ln(Part::Ln2),
            fc: lin(Part::Fc, d, f),
            mlp_proj: lin(Part::MlpProj, f, d),
        }
    }

    /// The whole grown model in memory. Each source block is grown once; its other copies are
    /// clones (identity blocks with the output projections zeroed).
    pub(crate) fn build(&self) -> Gpt2 {
        let s = self.src;
        let (d, v) = (self.target.hidden, self.config.vocab_size);
        let mut grown: Vec<Option<Gpt2Block>> = vec![None; s.blocks.len()];
        let blocks = self
            .maps
            .order
            .iter()
            .enumerate()
            .map(|(t, &l)| {
                let mut b = grown[l].get_or_insert_with(|| self.grown_block(t)).clone();
                if self.identity[t] {
                    for lin in [&mut b.attn_proj, &mut b.mlp_proj] {
                        lin.weight.fill(0.0);
                        lin.bias.fill(0.0);
                    }
                }
                b
            })
            .collect();
        Gpt2 {
            config: self.config.clone(),
            wte: self.matrix(Role::Wte, (v, d)),
            wpe: self.matrix(Role::Wpe, (self.config.n_positions, d)),
            blocks,
            ln_f: LayerNorm {
                weight: self.vector(Role::LnF(Leaf::Weight), d),
                bias: self.vector(Role::LnF(Leaf::Bias), d),
            },
            lm_head: s
                .lm_head
                .as_ref()
                .map(|_| self.matrix(Role::LmHead, (d, v))),
            prefixed: s.prefixed,
        }
    }

    /// The hidden map's summary; in exact mode the copies and the mean-units.
    fn hidden_summary(&self) -> MapSummary {
        if !self.exact() {
            return MapSummary::of(&self.hidden);
        }
        let ds = self.src.config.n_embd;
        MapSummary {
            kind: MapKind::Exact,
            source: ds,
            target: self.target.hidden,
            min_copies: self.copies,
            max_copies: self.copies,
            copy_histogram: BTreeMap::from([(self.copies, ds)]),
        }
    }

    pub(crate) fn report(&self) -> GrowReport {
        let s = self.src;
        let c = &s.config;
        let exact = self.exact();
        let hidden_ok = exact || self.hidden.is_uniform();
        let all = self.opts.aki_scope == AkiScope::All;
        let mut reasons = Vec::new();
        if !hidden_ok {
            reasons.push(format!(
                "hidden copy counts differ ({}): every LayerNorm's mean and variance shift (--map exact avoids this)",
                MapSummary::of(&self.hidden)
            ));
        }
        let (layers, aki_reason) = LayerMaps {
            maps: &self.maps,
            hidden: &self.hidden,
            aki_all: all,
            hidden_ok,
            identity: &self.identity,
        }
        .reports(|l| self.upper_of(l));
        reasons.extend(aki_reason);
        let added = self.target.layers - c.n_layer;
        if added > 0 && self.opts.depth != Depth::Identity {
            reasons.push(format!(
                "{added} layers added by {}: added layers are not function-preserving (--depth identity is)",
                self.opts.depth
            ));
        }
        if added > 0 && scales_by_layer_index(s) {
            reasons.push(
                "scale_attn_by_inverse_layer_idx: blocks that move to a new index scale their attention differently".into(),
            );
        }
        let tied = s.lm_head.is_none();
        let (emb, lnf) = if exact {
            (
                format!(
                    "hidden dim: {} copies by g, {} mean-units hold the row mean",
                    self.copies, self.mean_units
                ),
                format!(
                    "ln_f: gamma x sqrt(k D_s / D_t){}, mean-units 0, epsilon x k D_s / D_t",
                    if tied {
                        " / k, beta / k (tied lm_head fix)"
                    } else {
                        ""
                    }
                ),
            )
        } else {
            (
                "hidden dim: copy by g".to_owned(),
                if tied {
                    "ln_f: copy by g and divide by C (tied lm_head fix)".to_owned()
                } else {
                    "ln_f: copy by g".to_owned()
                },
            )
        };
        let mut modules = vec![
            ModuleReport {
                module: "embeddings (wte, wpe)".into(),
                maps: emb,
                exact: hidden_ok,
            },
            ModuleReport {
                module: if tied {
                    "ln_f and tied lm_head".into()
                } else {
                    "ln_f".into()
                },
                maps: lnf,
                exact: hidden_ok,
            },
        ];
        if !tied {
            modules.push(ModuleReport {
                module: "untied lm_head".into(),
                maps: "in: divide by g".into(),
                exact: true,
            });
        }
        if self.opts.depth == Depth::Identity && added > 0 {
            modules.push(ModuleReport {
                module: format!("{added} identity blocks"),
                maps: "copies of the block below with attn.c_proj and mlp.c_proj zero".into(),
                exact: true,
            });
        }
        let src_params: usize = s.named_tensors().iter().map(|(_, t)| t.len()).sum();
        let grown_params: usize = self
            .entries
            .iter()
            .map(|e| e.shape.iter().product::<usize>())
            .sum();
        GrowReport {
            family: "gpt2",
            source: Target::of_gpt2(c),
            target: self.target,
            head_dim: c.head_dim(),
            options: self.opts,
            hidden_map: self.hidden_summary(),
            layer_order: self.maps.order.clone(),
            layers,
            modules,
            source_parameters: src_params,
            grown_parameters: grown_params,
            expected_exact: reasons.is_empty(),
            inexact_reasons: reasons,
        }
    }
}

/// For each source layer output (1..=L_s), the grown layer output it is compared with: the
/// same index when the depths agree, else the last block of its group in the interleaved
/// placement that `Depth::Identity` uses.
pub(crate) fn aligned_layers(ls: usize, lg: usize) -> Vec<usize> {
    if ls == lg || lg < ls {
        return (1..=ls.min(lg)).collect();
    }
    let order = layer_order(Depth::Interleave, ls, lg);
    (0..ls)
        .map(|l| {
            order
                .iter()
                .rposition(|&x| x == l)
                .expect("every layer placed")
                + 1
        })
        .collect()
}

/// `verify` for two GPT-2 models.
pub(crate) fn verify_gpt2(
    s: &Gpt2,
    g: &Gpt2,
    opts: &VerifyOptions,
) -> Result<VerifyReport, ExpandError> {
    s.validate()?;
    g.validate()?;
    let (cs, cg) = (&s.config, &g.config);
    let max_len = cs.n_positions.min(cg.n_positions);
    crate::verify::check_decoder_pair(
        opts,
        (cs.n_embd, cg.n_embd),
        (cs.vocab_size, cg.vocab_size),
        max_len,
        "n_positions",
    )?;
    let aligned = aligned_layers(s.blocks.len(), g.blocks.len());
    let mut layers = vec![Acc::default(); aligned.len() + 1];
    let (mut last, mut logits) = (Acc::default(), Acc::default());
    let units = Slice::from(0..cs.n_embd);
    let mut rng = SplitMix64::new(opts.seed);
    for _ in 0..opts.batches {
        let ids = random_ids(cs.vocab_size, opts.batch_size, opts.seq_len, &mut rng);
        let a = forward_gpt2(s, &ids)?;
        let b = forward_gpt2(g, &ids)?;
        let grown_index = std::iter::once(0).chain(aligned.iter().copied());
        for (l, (acc, t)) in layers.iter_mut().zip(grown_index).enumerate() {
            let gb = b.hidden_states[t].slice_axis(Axis(2), units);
            acc.add(a.hidden_states[l].view(), gb);
        }
        let (ha, hb) = (
            a.hidden_states.last().expect("L + 1 states"),
            b.hidden_states.last().expect("L + 1 states"),
        );
        last.add(ha.view(), hb.slice_axis(Axis(2), units));
        logits.add(a.logits.view(), b.logits.view());
    }
    Ok(crate::verify::decoder_report(
        Target::of_gpt2(cs),
        Target::of_gpt2(cg),
        opts,
        layers,
        &aligned,
        last,
        logits,
    ))
}
