//! bert2BERT for Llama-family decoders (Llama, Mistral, Qwen2, Qwen3; docs/growth-llama.md):
//! FPI and AKI with grouped-query attention kept, one FFN map for gate and up, the exact
//! RMSNorm construction at any width ratio (k copies scaled by c = sqrt(D_t / (k D_s)) plus
//! r zero units; every norm's gamma divided by c, epsilon unchanged), identity depth growth,
//! and a plan that reads its source tensor by tensor (a [`LlamaWeights`]), so growth streams.
//!
//! Tensors are in Hugging Face orientation throughout: projections (out, in).

use crate::error::ExpandError;
use crate::expn::{MatrixSpec, Orient, VectorSpec, fill_matrix, fill_vector, reciprocal};
use crate::forward::gpt2::random_ids;
use crate::forward::llama::forward_llama;
use crate::gpt2::aligned_layers;
use crate::maps::{IndexMap, LayerMapSet, MapRole, layer_order};
use crate::options::{AkiScope, Depth, GrowOptions, MapKind, Method, Target, check_sizes};
use crate::report::{GrowReport, LayerMaps, MapSummary, ModuleReport};
use crate::verify::{Acc, VerifyOptions, VerifyReport};
use bert2bert_checkpoint::llama::{Part, Role, TensorDef, tensor_table};
use bert2bert_checkpoint::random::SplitMix64;
use bert2bert_checkpoint::{LlamaConfig, LlamaWeights};
use ndarray::{ArrayD, ArrayView1, ArrayView2, Axis, CowArray, Ix1, Ix2, IxDyn, Slice};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// The shape to grow a Llama-family model into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LlamaTarget {
    /// Decoder layers L_t.
    pub layers: usize,
    /// Hidden size D_t.
    pub hidden: usize,
    /// Query heads A_t.
    pub heads: usize,
    /// Key/value heads K_t (A_t a multiple of K_t).
    pub kv_heads: usize,
    /// FFN size F_t.
    pub intermediate: usize,
}

impl LlamaTarget {
    /// The shape of a config.
    pub fn of(c: &LlamaConfig) -> Self {
        Self {
            layers: c.num_hidden_layers,
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            intermediate: c.intermediate_size,
        }
    }

    /// The family-neutral part of the shape (for reports).
    pub fn base(&self) -> Target {
        Target {
            layers: self.layers,
            hidden: self.hidden,
            heads: self.heads,
            intermediate: self.intermediate,
        }
    }
}

impl fmt::Display for LlamaTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} layers x {} hidden, {} query / {} KV heads, FFN {}",
            self.layers, self.hidden, self.heads, self.kv_heads, self.intermediate
        )
    }
}

/// Query-head and KV-head maps of one layer that keep grouped-query attention: target query
/// head q copies source head `q[q]`, reads target KV head q / g_t, which copies source KV head
/// `kv[q / g_t]` = `q[q] / g_s`, the KV head its source head read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GqaMaps {
    /// Target query head -> source query head.
    pub q: IndexMap,
    /// Target KV head -> source KV head.
    pub kv: IndexMap,
}

/// The GQA-preserving head maps from (A_s query, K_s KV) to (A_t, K_t) heads for layer
/// `layer`: the KV map by `kind` with old KV heads in place; then, per source KV head s, the
/// query slots of the target groups that copy s take s's query heads once each, in order (so
/// every source head is kept), and the remaining slots by `kind` among s's heads.
pub fn gqa_maps(
    kind: MapKind,
    (a_s, k_s): (usize, usize),
    (a_t, k_t): (usize, usize),
    seed: u64,
    layer: usize,
) -> Result<GqaMaps, String> {
    if k_t < k_s || a_t < a_s {
        return Err(format!(
            "heads shrink ({a_s} / {k_s} -> {a_t} / {k_t} query / KV heads)"
        ));
    }
    if !a_t.is_multiple_of(k_t) {
        return Err(format!(
            "{a_t} query heads do not split into {k_t} KV groups"
        ));
    }
    let (g_s, g_t) = (a_s / k_s, a_t / k_t);
    let kv_kind = if kind == MapKind::Exact {
        MapKind::Balanced
    } else {
        kind
    };
    let kv = IndexMap::new(kv_kind, k_s, k_t, seed, MapRole::KvHeads(layer));
    let mut slots: Vec<Vec<usize>> = vec![Vec::new(); k_s];
    for (j, &s) in kv.map().iter().enumerate() {
        slots[s].extend(j * g_t..(j + 1) * g_t);
    }
    let mut q = vec![usize::MAX; a_t];
    let mut rng = SplitMix64::new(seed ^ 0x5157_4B56 ^ ((layer as u64) << 20));
    for (s, sl) in slots.iter().enumerate() {
        if sl.len() < g_s {
            return Err(format!(
                "source KV head {s} is read by {g_s} query heads, but the target gives its \
                 {} copies only {} query slots ({k_t} KV heads x {g_t} query heads each): \
                 use more query heads or fewer KV heads",
                sl.len() / g_t.max(1),
                sl.len()
            ));
        }
        let heads: Vec<usize> = (s * g_s..(s + 1) * g_s).collect();
        let mut round: Vec<usize> = Vec::new();
        for (n, &slot) in sl.iter().enumerate() {
            q[slot] = if n < g_s {
                heads[n]
            } else if kind == MapKind::Random {
                heads[rng.below(g_s)]
            } else {
                if round.is_empty() {
                    round = heads.clone();
                    for i in (1..round.len()).rev() {
                        round.swap(i, rng.below(i + 1));
                    }
                }
                round.pop().expect("non-empty round")
            };
        }
    }
    Ok(GqaMaps {
        q: IndexMap::from_parts(kind, a_s, q),
        kv,
    })
}

/// For AKI on a map whose old units may have moved: a map over `2 n` source units where each
/// source unit's first copy reads the layer's own matrix (unit s) and every later copy the
/// layer above's (unit n + s).
fn first_copies(map: &IndexMap) -> IndexMap {
    let n = map.source();
    let mut seen = vec![false; n];
    let m = map
        .map()
        .iter()
        .map(|&s| {
            if std::mem::replace(&mut seen[s], true) {
                n + s
            } else {
                s
            }
        })
        .collect();
    IndexMap::from_parts(map.kind, 2 * n, m)
}

fn m2<'b>(a: &'b CowArray<'_, f32, IxDyn>) -> ArrayView2<'b, f32> {
    a.view().into_dimensionality::<Ix2>().expect("2-d")
}

fn v1<'b>(a: &'b CowArray<'_, f32, IxDyn>) -> ArrayView1<'b, f32> {
    a.view().into_dimensionality::<Ix1>().expect("1-d")
}

/// Whether every unit below the source size is in place (then AKI's new units start there).
fn in_place(map: &IndexMap) -> bool {
    map.map()
        .iter()
        .take(map.source())
        .enumerate()
        .all(|(i, &s)| i == s)
}

/// Every index map and constant of one Llama-family growth; produces any grown tensor on demand
/// from the source's tensors (read one or two at a time).
pub struct LlamaPlan<'a> {
    src: &'a dyn LlamaWeights,
    source: LlamaTarget,
    target: LlamaTarget,
    opts: GrowOptions,
    config: LlamaConfig,
    hidden: IndexMap,
    /// In-map of residual readers: `hidden` with every count k in exact mode.
    reader: IndexMap,
    /// Exact mode: k, every source unit's number of copies (0 otherwise).
    copies: u32,
    /// Exact mode: r zero units at the end of the stream.
    zero_units: usize,
    /// Exact mode: c = sqrt(D_t / (k D_s)), the stream's scale on copies (1 otherwise).
    scale: f64,
    gqa: Vec<GqaMaps>,
    q_units: Vec<IndexMap>,
    kv_units: Vec<IndexMap>,
    maps: LayerMapSet,
    identity: Vec<bool>,
    table: Vec<TensorDef>,
}

impl fmt::Debug for LlamaPlan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlamaPlan")
            .field("source", &self.source)
            .field("target", &self.target)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// `HeadSize`-style refusal with the source's head size.
fn check_llama_target(c: &LlamaConfig, t: &LlamaTarget) -> Result<(), ExpandError> {
    let s = LlamaTarget::of(c);
    check_sizes(&[
        ("layers", s.layers, t.layers),
        ("hidden size", s.hidden, t.hidden),
        ("intermediate size", s.intermediate, t.intermediate),
        ("heads", s.heads, t.heads),
        ("KV heads", s.kv_heads, t.kv_heads),
    ])
}

impl<'a> LlamaPlan<'a> {
    /// Plans growing `src` to `target`. The head size never changes (the grown config keeps
    /// `head_dim`); refuses shrinking, and head counts that cannot keep every GQA group.
    pub fn new(
        src: &'a dyn LlamaWeights,
        target: &LlamaTarget,
        opts: &GrowOptions,
    ) -> Result<Self, ExpandError> {
        let c = src.config();
        check_llama_target(c, target)?;
        let source = LlamaTarget::of(c);
        let (ds, dt) = (c.hidden_size, target.hidden);
        let exact = opts.map == MapKind::Exact;
        let hidden = IndexMap::new(opts.map, ds, dt, opts.seed, MapRole::Hidden);
        let (copies, zero_units, scale, reader) = if exact {
            let k = dt / ds;
            let r = dt - k * ds;
            let reader = IndexMap::with_counts(opts.map, hidden.map().to_vec(), vec![k as u32; ds]);
            (k as u32, r, (dt as f64 / (k * ds) as f64).sqrt(), reader)
        } else {
            (0, 0, 1.0, hidden.clone())
        };
        let ls = c.num_hidden_layers;
        let hd = c.head_dim;
        let mut gqa = Vec::with_capacity(ls);
        for l in 0..ls {
            gqa.push(
                gqa_maps(
                    opts.map,
                    (source.heads, source.kv_heads),
                    (target.heads, target.kv_heads),
                    opts.seed,
                    l,
                )
                .map_err(ExpandError::Target)?,
            );
        }
        let q_units: Vec<IndexMap> = gqa.iter().map(|g| g.q.expand_heads(hd)).collect();
        let kv_units = gqa.iter().map(|g| g.kv.expand_heads(hd)).collect();
        let ffn_kind = if exact { MapKind::Balanced } else { opts.map };
        let maps = LayerMapSet {
            heads: gqa.iter().map(|g| g.q.clone()).collect(),
            head_units: q_units.clone(),
            ffn: (0..ls)
                .map(|l| {
                    IndexMap::new(
                        ffn_kind,
                        c.intermediate_size,
                        target.intermediate,
                        opts.seed,
                        MapRole::Ffn(l),
                    )
                })
                .collect(),
            order: layer_order(opts.depth, ls, target.layers),
        };
        let mut seen = vec![false; ls];
        let identity = maps
            .order
            .iter()
            .map(|&l| opts.depth == Depth::Identity && std::mem::replace(&mut seen[l], true))
            .collect();
        let config = c.with_shape(
            target.hidden,
            target.heads,
            target.kv_heads,
            target.intermediate,
            &maps.order,
        );
        let table = tensor_table(&config);
        Ok(Self {
            src,
            source,
            target: *target,
            opts: *opts,
            config,
            hidden,
            reader,
            copies,
            zero_units,
            scale,
            gqa,
            q_units,
            kv_units,
            maps,
            identity,
            table,
        })
    }

    fn exact(&self) -> bool {
        self.opts.map == MapKind::Exact
    }

    /// The grown model's config.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The grown model's tensor table (names, shapes, roles), in write order.
    pub fn table(&self) -> &[TensorDef] {
        &self.table
    }

    /// Number of output tensors.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether there is no output tensor (never).
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Values of the largest output tensor.
    pub fn max_tensor_len(&self) -> usize {
        self.table
            .iter()
            .map(|d| d.shape.iter().product::<usize>())
            .max()
            .unwrap_or(0)
    }

    /// The hidden map g (exact mode: its last r units are the zero units; their entries name
    /// the source unit whose reader rows and gamma they carry).
    pub fn hidden_map(&self) -> &IndexMap {
        &self.hidden
    }

    /// The GQA head maps of source layer `l`.
    pub fn gqa_maps(&self, l: usize) -> &GqaMaps {
        &self.gqa[l]
    }

    /// The FFN map of source layer `l` (gate, up and down share it).
    pub fn ffn_map(&self, l: usize) -> &IndexMap {
        &self.maps.ffn[l]
    }

    /// Target layer -> source layer.
    pub fn layer_order(&self) -> &[usize] {
        &self.maps.order
    }

    /// Exact mode: the number r of zero units at the end of the stream.
    pub fn zero_units(&self) -> usize {
        self.zero_units
    }

    /// Exact mode: the stream scale c = sqrt(D_t / (k D_s)) on copied units (1 otherwise).
    pub fn stream_scale(&self) -> f64 {
        self.scale
    }

    fn upper_of(&self, l: usize) -> Option<usize> {
        (self.opts.method == Method::Aki && l + 1 < self.source.layers).then_some(l + 1)
    }

    fn read(&self, role: Role) -> Result<CowArray<'a, f32, IxDyn>, ExpandError> {
        Ok(self.src.tensor(role)?)
    }

    /// A residual writer stored (D_s, in) or, for the embedding, (V, D_s): its hidden axis
    /// copied by g, AKI's new hidden units (scope `all`) from `upper`; exact mode then zeroes
    /// the zero units and scales the copies by c.
    fn fill_writer(
        &self,
        lower: ArrayView2<'_, f32>,
        upper: Option<ArrayView2<'_, f32>>,
        rows: Option<&IndexMap>,
        embedding: bool,
        out: &mut [f32],
    ) {
        let ds = self.source.hidden;
        if embedding {
            // (V, D): typed orientation (in = V, out = D) is the stored one.
            let spec = MatrixSpec {
                lower,
                upper,
                rows: None,
                cols: Some(&self.hidden),
                split: ds,
            };
            fill_matrix(&spec, Orient::Typed, out);
        } else {
            let spec = MatrixSpec {
                lower: lower.reversed_axes(),
                upper: upper.map(|u| u.reversed_axes()),
                rows,
                cols: Some(&self.hidden),
                split: ds,
            };
            fill_matrix(&spec, Orient::Hf, out);
        }
        self.finish_stream(out, embedding);
    }

    /// Exact mode on a grown residual-writer output: zero units 0, copies times c.
    fn finish_stream(&self, out: &mut [f32], embedding: bool) {
        if !self.exact() {
            return;
        }
        let dt = self.target.hidden;
        let first = dt - self.zero_units;
        let c = self.scale as f32;
        if embedding || out.len() == dt {
            for row in out.chunks_mut(dt) {
                let (copied, zero) = row.split_at_mut(first);
                if c != 1.0 {
                    copied.iter_mut().for_each(|v| *v *= c);
                }
                zero.fill(0.0);
            }
        } else {
            let n_in = out.len() / dt;
            let (copied, zero) = out.split_at_mut(first * n_in);
            if c != 1.0 {
                copied.iter_mut().for_each(|v| *v *= c);
            }
            zero.fill(0.0);
        }
    }

    /// A residual reader stored (out, D_s): in-dim by the hidden map (divide; exact mode: by
    /// k, zero units carry their nominal row / k), out-dim by `cols`, new output units from
    /// `upper` (AKI); `cols_in_place` false when old output units moved (GQA regrouping).
    fn fill_reader(
        &self,
        lower: ArrayView2<'_, f32>,
        upper: Option<ArrayView2<'_, f32>>,
        cols: Option<&IndexMap>,
        out: &mut [f32],
    ) {
        match (upper, cols) {
            (Some(up), Some(m)) if !in_place(m) => {
                let both = ndarray::concatenate(Axis(0), &[lower, up]).expect("same in-dim");
                let firsts = first_copies(m);
                let spec = MatrixSpec {
                    lower: both.t(),
                    upper: None,
                    rows: Some(&self.reader),
                    cols: Some(&firsts),
                    split: 0,
                };
                fill_matrix(&spec, Orient::Hf, out)
            }
            _ => {
                let spec = MatrixSpec {
                    lower: lower.reversed_axes(),
                    upper: upper.map(|u| u.reversed_axes()),
                    rows: Some(&self.reader),
                    cols,
                    split: cols.map_or(0, IndexMap::source),
                };
                fill_matrix(&spec, Orient::Hf, out)
            }
        }
    }

    /// A vector grown by `map` (a bias of a reader), new units from `upper`.
    fn fill_out_vector(
        &self,
        lower: ArrayView1<'_, f32>,
        upper: Option<ArrayView1<'_, f32>>,
        map: &IndexMap,
        out: &mut [f32],
    ) {
        match upper {
            Some(up) if !in_place(map) => {
                let both = ndarray::concatenate(Axis(0), &[lower, up]).expect("1-d");
                let firsts = first_copies(map);
                let spec = VectorSpec {
                    lower: both.view(),
                    upper: None,
                    map: Some(&firsts),
                    split: 0,
                    divide: false,
                };
                fill_vector(&spec, out)
            }
            _ => {
                let spec = VectorSpec {
                    lower,
                    upper,
                    map: Some(map),
                    split: map.source(),
                    divide: false,
                };
                fill_vector(&spec, out)
            }
        }
    }

    /// An RMSNorm gamma over the hidden units. `tied`: the final norm feeding the tied head.
    fn fill_norm(
        &self,
        lower: ArrayView1<'_, f32>,
        upper: Option<ArrayView1<'_, f32>>,
        tied: bool,
        out: &mut [f32],
    ) {
        let spec = VectorSpec {
            lower,
            upper,
            map: Some(&self.hidden),
            split: self.source.hidden,
            divide: tied && !self.exact(),
        };
        fill_vector(&spec, out);
        if !self.exact() {
            return;
        }
        // Copies read c h: gamma / c gives the source's output; the tied head reads k copies
        // of c E, so its norm takes gamma / (k c^2) = gamma D_s / D_t. At an integer ratio
        // (c = 1) these are FPI's factors, 1 and 1 / k, as the same f32 expressions.
        let factor = if tied {
            if self.zero_units == 0 {
                reciprocal(self.copies)
            } else {
                (self.source.hidden as f64 / self.target.hidden as f64) as f32
            }
        } else {
            (1.0 / self.scale) as f32
        };
        if factor != 1.0 {
            out.iter_mut().for_each(|v| *v *= factor);
        }
    }

    /// Writes grown tensor `i` (row-major, Hugging Face orientation) into `out`.
    ///
    /// # Panics
    /// If `out.len()` is not the tensor's number of values.
    pub fn tensor_into(&self, i: usize, out: &mut [f32]) -> Result<(), ExpandError> {
        let def = &self.table[i];
        let n: usize = def.shape.iter().product();
        assert_eq!(out.len(), n, "output buffer size");
        match def.role {
            Role::Embed => {
                let e = self.read(Role::Embed)?;
                self.fill_writer(m2(&e), None, None, true, out);
            }
            Role::Norm => {
                let g = self.read(Role::Norm)?;
                let tied = self.config.tie_word_embeddings;
                self.fill_norm(v1(&g), None, tied, out);
            }
            Role::LmHead => {
                let h = self.read(Role::LmHead)?;
                self.fill_reader(m2(&h), None, None, out);
            }
            Role::Layer(t, part) => {
                let l = self.maps.order[t];
                if self.identity[t]
                    && matches!(part, Part::O | Part::OBias | Part::Down | Part::DownBias)
                {
                    // An added identity block writes nothing to the stream.
                    out.fill(0.0);
                    return Ok(());
                }
                let own = |p: Part| self.read(Role::Layer(l, p));
                let above = |p: Part| {
                    self.upper_of(l)
                        .map(|u| self.read(Role::Layer(u, p)))
                        .transpose()
                };
                let all = self.opts.aki_scope == AkiScope::All;
                let above_all = |p: Part| if all { above(p) } else { Ok(None) };
                let (qu, kvu, ffn) = (&self.q_units[l], &self.kv_units[l], &self.maps.ffn[l]);
                match part {
                    Part::InputNorm | Part::PostNorm => {
                        let (a, b) = (own(part)?, above_all(part)?);
                        self.fill_norm(v1(&a), b.as_ref().map(v1), false, out);
                    }
                    Part::QNorm | Part::KNorm => {
                        // Per head, shared by every head: unchanged.
                        out.copy_from_slice(own(part)?.as_slice().expect("standard layout"));
                    }
                    Part::Q | Part::K | Part::V | Part::Gate | Part::Up => {
                        let cols = match part {
                            Part::Q => qu,
                            Part::K | Part::V => kvu,
                            _ => ffn,
                        };
                        let (a, b) = (own(part)?, above(part)?);
                        self.fill_reader(m2(&a), b.as_ref().map(m2), Some(cols), out);
                    }
                    Part::QBias | Part::KBias | Part::VBias | Part::GateBias | Part::UpBias => {
                        let map = match part {
                            Part::QBias => qu,
                            Part::KBias | Part::VBias => kvu,
                            _ => ffn,
                        };
                        let (a, b) = (own(part)?, above(part)?);
                        self.fill_out_vector(v1(&a), b.as_ref().map(v1), map, out);
                    }
                    Part::O | Part::Down => {
                        let rows = if part == Part::O { qu } else { ffn };
                        let (a, b) = (own(part)?, above_all(part)?);
                        self.fill_writer(m2(&a), b.as_ref().map(m2), Some(rows), false, out);
                    }
                    Part::OBias | Part::DownBias => {
                        let (a, b) = (own(part)?, above_all(part)?);
                        let spec = VectorSpec {
                            lower: v1(&a),
                            upper: b.as_ref().map(v1),
                            map: Some(&self.hidden),
                            split: self.source.hidden,
                            divide: false,
                        };
                        fill_vector(&spec, out);
                        self.finish_stream(out, false);
                    }
                }
            }
        }
        Ok(())
    }

    /// Grown tensor `i` in a new array.
    pub fn tensor(&self, i: usize) -> Result<ArrayD<f32>, ExpandError> {
        let shape = self.table[i].shape.clone();
        let mut v = vec![0.0f32; shape.iter().product()];
        self.tensor_into(i, &mut v)?;
        Ok(ArrayD::from_shape_vec(IxDyn(&shape), v).expect("shape matches size"))
    }

    /// The whole grown model in memory (for tests and small models).
    pub fn build(&self) -> Result<bert2bert_checkpoint::Llama, ExpandError> {
        let tensors = (0..self.len())
            .map(|i| self.tensor(i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(bert2bert_checkpoint::Llama::new(
            self.config.clone(),
            tensors,
        )?)
    }

    /// What this growth does and whether it is expected to be exact.
    pub fn report(&self) -> GrowReport {
        let c = self.src.config();
        let exact = self.exact();
        let hidden_ok = exact || self.hidden.is_uniform();
        let mut reasons = Vec::new();
        if !hidden_ok {
            reasons.push(format!(
                "hidden copy counts differ ({}): every RMSNorm's mean square shifts (--map exact avoids this)",
                MapSummary::of(&self.hidden)
            ));
        }
        let (layers, aki_reason) = LayerMaps {
            maps: &self.maps,
            hidden: &self.hidden,
            aki_all: self.opts.aki_scope == AkiScope::All,
            hidden_ok,
            identity: &self.identity,
        }
        .reports(|l| self.upper_of(l));
        reasons.extend(aki_reason);
        let added = self.target.layers - self.source.layers;
        if added > 0 && self.opts.depth != Depth::Identity {
            reasons.push(format!(
                "{added} layers added by {}: added layers are not function-preserving (--depth identity is)",
                self.opts.depth
            ));
        }
        let tied = c.tie_word_embeddings;
        let g = &self.gqa[0];
        let regrouped = !in_place(&g.q);
        let mut modules = vec![
            ModuleReport {
                module: "embed_tokens".into(),
                maps: if exact {
                    format!(
                        "hidden dim: {} copies by g scaled by c = {:.6}, {} zero units",
                        self.copies, self.scale, self.zero_units
                    )
                } else {
                    "hidden dim: copy by g".into()
                },
                exact: hidden_ok,
            },
            ModuleReport {
                module: "attention heads".into(),
                maps: format!(
                    "{} -> {} query heads, {} -> {} KV heads (group size {} -> {}), head_dim {} kept; \
                     every query head reads a copy of the KV head its source read{}",
                    self.source.heads,
                    self.target.heads,
                    self.source.kv_heads,
                    self.target.kv_heads,
                    self.source.heads / self.source.kv_heads,
                    self.target.heads / self.target.kv_heads,
                    c.head_dim,
                    if regrouped {
                        "; the group size changes, so query heads are regrouped (o_proj follows)"
                    } else {
                        ""
                    }
                ),
                exact: true,
            },
            ModuleReport {
                module: "mlp".into(),
                maps: "gate and up share one FFN map; down_proj divides by its counts".into(),
                exact: true,
            },
            ModuleReport {
                module: if tied {
                    "norm and tied lm_head (stays tied)".into()
                } else {
                    "norm".into()
                },
                maps: match (exact, tied) {
                    (true, true) => "gamma x D_s / D_t (= 1 / (k c^2)), epsilon unchanged".into(),
                    (true, false) => "gamma / c, epsilon unchanged".into(),
                    (false, true) => "copy by g and divide by C (tied lm_head fix)".into(),
                    (false, false) => "copy by g".into(),
                },
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
                maps: "copies of the block below with o_proj and down_proj zero".into(),
                exact: true,
            });
        }
        let grown_params: usize = self
            .table
            .iter()
            .map(|d| d.shape.iter().product::<usize>())
            .sum();
        let src_params: usize = tensor_table(c)
            .iter()
            .map(|d| d.shape.iter().product::<usize>())
            .sum();
        let summary = if exact {
            MapSummary {
                kind: MapKind::Exact,
                source: self.source.hidden,
                target: self.target.hidden,
                min_copies: self.copies,
                max_copies: self.copies,
                copy_histogram: BTreeMap::from([(self.copies, self.source.hidden)]),
            }
        } else {
            MapSummary::of(&self.hidden)
        };
        GrowReport {
            family: c.kind.name(),
            source: self.source.base(),
            target: self.target.base(),
            head_dim: c.head_dim,
            options: self.opts,
            hidden_map: summary,
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

/// The stream scale of a grown model against its source, read from the weights: c =
/// sqrt(D_t / (k D_s)) when the last r = D_t - k D_s columns of the grown embedding are all
/// zero (an exact-mode growth), else 1.
pub fn detect_stream_scale(ds: usize, grown_embed: ArrayView2<'_, f32>) -> f64 {
    let dt = grown_embed.ncols();
    let k = dt / ds.max(1);
    let r = dt - k * ds;
    if r == 0 || k == 0 {
        return 1.0;
    }
    let zero = grown_embed
        .columns()
        .into_iter()
        .skip(k * ds)
        .all(|c| c.iter().all(|&v| v == 0.0));
    if zero {
        (dt as f64 / (k * ds) as f64).sqrt()
    } else {
        1.0
    }
}

/// `verify` for two Llama-family models (either streamed or in memory): seeded uniform token
/// batches; the embeddings and each layer's output compared on the source's units (the grown
/// stream divided by its scale c, see [`detect_stream_scale`]), the final layer's output, and
/// the logits, which need no scaling.
pub fn verify_llama(
    s: &dyn LlamaWeights,
    g: &dyn LlamaWeights,
    opts: &VerifyOptions,
) -> Result<VerifyReport, ExpandError> {
    let (cs, cg) = (s.config(), g.config());
    let max_len = cs.max_position_embeddings.min(cg.max_position_embeddings);
    crate::verify::check_decoder_pair(
        opts,
        (cs.hidden_size, cg.hidden_size),
        (cs.vocab_size, cg.vocab_size),
        max_len,
        "max_position_embeddings",
    )?;
    let scale = {
        let e = g.tensor(Role::Embed)?;
        let e = e.view().into_dimensionality::<Ix2>().expect("2-d");
        detect_stream_scale(cs.hidden_size, e)
    } as f32;
    let aligned = aligned_layers(cs.num_hidden_layers, cg.num_hidden_layers);
    let mut layers = vec![Acc::default(); aligned.len() + 1];
    let (mut last, mut logits) = (Acc::default(), Acc::default());
    let units = Slice::from(0..cs.hidden_size);
    let mut rng = SplitMix64::new(opts.seed);
    for _ in 0..opts.batches {
        let ids = random_ids(cs.vocab_size, opts.batch_size, opts.seq_len, &mut rng);
        let a = forward_llama(s, &ids)?;
        let b = forward_llama(g, &ids)?;
        let unscale =
            |x: ndarray::ArrayView3<'_, f32>| x.slice_axis(Axis(2), units).mapv(|v| v / scale);
        let grown_index = std::iter::once(0).chain(aligned.iter().copied());
        for (l, (acc, t)) in layers.iter_mut().zip(grown_index).enumerate() {
            acc.add(
                a.hidden_states[l].view(),
                unscale(b.hidden_states[t].view()).view(),
            );
        }
        let (ha, hb) = (
            a.hidden_states.last().expect("L + 1 states"),
            b.hidden_states.last().expect("L + 1 states"),
        );
        last.add(ha.view(), unscale(hb.view()).view());
        logits.add(a.logits.view(), b.logits.view());
    }
    Ok(crate::verify::decoder_report(
        LlamaTarget::of(cs).base(),
        LlamaTarget::of(cg).base(),
        opts,
        layers,
        &aligned,
        last,
        logits,
    ))
}
