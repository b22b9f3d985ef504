//! GPT-2 growth properties (issue 7), each over at least 128 random cases: exact mode preserves
//! the function at non-integer width ratios, identity depth preserves it, paper FPI is exact at
//! integer ratios, AKI keeps FPI's original units, exact at an integer ratio is FPI, and the
//! streamed tensors are the built model's.

use bert2bert_checkpoint::random::Init;
use bert2bert_checkpoint::{Gpt2, Gpt2Config, Model};
use bert2bert_expand::{
    AkiScope, Depth, GrowOptions, GrowPlan, MapKind, Method, Target, VerifyOptions, grow, verify,
};
use ndarray::{ArrayViewD, Axis, Slice};
use proptest::prelude::*;

/// Cases per property (the issue asks for at least 128).
const CASES: u32 = 128;

/// A small GPT-2 source shape.
#[derive(Clone, Copy, Debug)]
struct Shape {
    layers: usize,
    heads: usize,
    head_dim: usize,
    ffn: usize,
    vocab: usize,
    positions: usize,
    tied: bool,
    prefixed: bool,
}

impl Shape {
    fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    fn model(&self, seed: u64) -> Model {
        let mut c = Gpt2Config::new(
            self.vocab,
            self.hidden(),
            self.layers,
            self.heads,
            self.positions,
        );
        c.n_inner = Some(self.ffn);
        c.tie_word_embeddings = self.tied;
        let mut m = Gpt2::random(&c, Init::TEST, seed);
        m.prefixed = self.prefixed;
        Model::Gpt2(m)
    }
}

/// Shapes with at least `min_heads` heads (two are needed for a non-integer width ratio).
fn shape(min_heads: usize) -> impl Strategy<Value = Shape> {
    any_shape(min_heads).prop_filter("LayerNorm over at least 8 units", |s| s.hidden() >= 8)
}

/// Shapes for the bit-exact properties, down to 2 hidden units.
///
/// The 1e-5 properties use [`shape`]: a LayerNorm over 4 random units occasionally sees a tiny
/// spread and amplifies one-ulp differences (the grown model sums its dot products in another
/// order) past 1e-5 relative. That is the source function's own conditioning, as large for FPI
/// at an integer ratio as for exact mode: measured worst of 1000 random cases at D_s >= 4,
/// 8.4e-6 (FPI) and 3.1e-6 (exact); at D_s >= 8, 2.9e-6 and 4.2e-6 (docs/growth-gpt2.md).
fn any_shape(min_heads: usize) -> impl Strategy<Value = Shape> {
    (
        1usize..=3,
        min_heads..=4,
        prop::sample::select(vec![2usize, 4, 8]),
        1usize..=24,
        5usize..=50,
        8usize..=16,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(layers, heads, head_dim, ffn, vocab, positions, tied, prefixed)| Shape {
                layers,
                heads,
                head_dim,
                ffn,
                vocab,
                positions,
                tied,
                prefixed,
            },
        )
}

/// The source's layer count, `heads` target heads, FFN grown by `extra_ffn`.
fn target(s: &Shape, layers: usize, heads: usize, extra_ffn: usize) -> Target {
    Target {
        layers,
        hidden: heads * s.head_dim,
        heads,
        intermediate: s.ffn + extra_ffn,
    }
}

/// Target heads that make D_t / D_s non-integer: heads + extra, bumped off multiples.
fn non_integer_heads(heads: usize, extra: usize) -> usize {
    let t = heads + extra;
    if t.is_multiple_of(heads) { t + 1 } else { t }
}

fn gpt2(m: &Model) -> &Gpt2 {
    m.as_gpt2().unwrap()
}

/// Asserts that every compared output (each layer, final hidden, logits) is within 1e-5.
fn assert_preserved(src: &Model, grown: &Model, seed: u64, seq: usize, batch: usize) {
    let seq = seq.min(gpt2(src).config.n_positions);
    let opts = VerifyOptions {
        batches: 1,
        seq_len: seq,
        batch_size: batch,
        seed,
    };
    let v = verify(src, grown, &opts).unwrap();
    assert!(v.lm_logits.is_some());
    for d in v.diffs() {
        assert!(d.max_rel <= 1e-5, "{}: {:.3e}\n{}", d.name, d.max_rel, v);
    }
    assert!(v.exact);
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![Method::Fpi, Method::Aki])
}

fn scope() -> impl Strategy<Value = AkiScope> {
    prop::sample::select(vec![AkiScope::Internal, AkiScope::All])
}

fn map_kind() -> impl Strategy<Value = MapKind> {
    prop::sample::select(vec![MapKind::Balanced, MapKind::Random, MapKind::Exact])
}

fn depth() -> impl Strategy<Value = Depth> {
    prop::sample::select(vec![Depth::Stack, Depth::Interleave, Depth::Identity])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Exact mode (copies + mean-units, LayerNorm and epsilon scaling) preserves every layer's
    /// stream and the logits within 1e-5 at non-integer width ratios, whatever the head and FFN
    /// growth, tied or untied head.
    #[test]
    fn exact_mode_preserves_logits_at_non_integer_ratios(
        s in shape(2), extra_heads in 1usize..=6, extra_ffn in 0usize..=24,
        seed in any::<u64>(), map_seed in any::<u64>(), seq in 1usize..=16, batch in 1usize..=3,
    ) {
        let m = s.model(seed);
        let t = target(&s, s.layers, non_integer_heads(s.heads, extra_heads), extra_ffn);
        prop_assert!(!t.hidden.is_multiple_of(s.hidden()));
        let opts = GrowOptions { map: MapKind::Exact, seed: map_seed, ..GrowOptions::default() };
        let plan = GrowPlan::new(&m, &t, &opts).unwrap();
        let (k, r) = (t.hidden / s.hidden(), t.hidden % s.hidden());
        prop_assert_eq!(plan.mean_units(), r);
        let report = plan.report();
        prop_assert!(report.expected_exact, "{}", report);
        let g = plan.build();
        let eps = gpt2(&g).config.layer_norm_epsilon;
        let want = 1e-5 * (k * s.hidden()) as f64 / t.hidden as f64;
        prop_assert!((eps - want).abs() <= 1e-12 * want, "epsilon {} vs {}", eps, want);
        assert_preserved(&m, &g, seed, seq, batch);
    }

    /// Identity depth growth (new blocks with zero output projections) preserves the function,
    /// alone or with exact width growth.
    #[test]
    fn identity_depth_preserves_logits(
        s in shape(1), extra_layers in 1usize..=4, extra_heads in 0usize..=4,
        extra_ffn in 0usize..=8, seed in any::<u64>(), map_seed in any::<u64>(),
        seq in 1usize..=16, batch in 1usize..=2,
    ) {
        let m = s.model(seed);
        let t = target(&s, s.layers + extra_layers, s.heads + extra_heads, extra_ffn);
        let opts = GrowOptions {
            map: MapKind::Exact, depth: Depth::Identity, seed: map_seed, ..GrowOptions::default()
        };
        let (g, report) = grow(&m, &t, &opts).unwrap();
        prop_assert!(report.expected_exact, "{}", report);
        prop_assert_eq!(gpt2(&g).blocks.len(), t.layers);
        let zero_blocks = gpt2(&g)
            .blocks
            .iter()
            .filter(|b| b.attn_proj.weight.iter().chain(b.mlp_proj.bias.iter()).all(|&x| x == 0.0))
            .count();
        prop_assert_eq!(zero_blocks, extra_layers);
        assert_preserved(&m, &g, seed, seq, batch);
    }

    /// Paper FPI with balanced maps is exact at integer width ratios (epsilon unchanged).
    #[test]
    fn fpi_balanced_is_exact_at_integer_ratios(
        s in shape(1), k in 1usize..=3, extra_ffn in 0usize..=24,
        seed in any::<u64>(), map_seed in any::<u64>(), seq in 1usize..=16, batch in 1usize..=3,
    ) {
        let m = s.model(seed);
        let t = target(&s, s.layers, s.heads * k, extra_ffn);
        let opts = GrowOptions { seed: map_seed, ..GrowOptions::default() };
        let (g, report) = grow(&m, &t, &opts).unwrap();
        prop_assert!(report.expected_exact, "{}", report);
        prop_assert_eq!(gpt2(&g).config.layer_norm_epsilon, 1e-5);
        assert_preserved(&m, &g, seed, seq, batch);
    }

    /// AKI changes only new units: on every tensor's original output units (the first D_s of
    /// each of Q, K and V in `c_attn`) it equals FPI bit for bit, for every map kind and scope.
    #[test]
    fn aki_original_units_equal_fpi(
        s in any_shape(1), extra_heads in 0usize..=4, extra_ffn in 0usize..=12, extra_layers in 0usize..=2,
        seed in any::<u64>(), map_seed in any::<u64>(), map in map_kind(), aki_scope in scope(),
        depth in depth(),
    ) {
        let m = s.model(seed);
        let t = target(&s, s.layers + extra_layers, s.heads + extra_heads, extra_ffn);
        let fpi = GrowOptions { map, depth, seed: map_seed, ..GrowOptions::default() };
        let aki = GrowOptions { method: Method::Aki, aki_scope, ..fpi };
        let (a, ra) = grow(&m, &t, &aki).unwrap();
        let (f, _) = grow(&m, &t, &fpi).unwrap();
        let src_shapes: std::collections::HashMap<String, Vec<usize>> = gpt2(&m)
            .named_tensors()
            .into_iter()
            .map(|(n, v)| (strip_layer(&n), v.shape().to_vec()))
            .collect();
        let mut differs = false;
        for ((na, ta), (nf, tf)) in a.named_tensors().iter().zip(f.named_tensors()) {
            prop_assert_eq!(na, &nf);
            differs |= ta != tf;
            let out_s = *src_shapes[&strip_layer(na)].last().unwrap();
            let (a_orig, f_orig) = (original_units(na, ta, out_s), original_units(na, &tf, out_s));
            prop_assert!(a_orig == f_orig, "{} differs on original units", na);
        }
        let aki_applies = ra.layers.iter().any(|l| l.knowledge_from.is_some());
        let grows_inside = extra_heads > 0 || extra_ffn > 0;
        if aki_applies && grows_inside {
            prop_assert!(differs, "AKI changed nothing");
        }
    }

    /// With no mean-units (an integer ratio) exact mode is paper FPI with balanced maps, bit
    /// for bit.
    #[test]
    fn exact_at_integer_ratio_is_balanced_fpi(
        s in any_shape(1), k in 1usize..=3, extra_ffn in 0usize..=12, seed in any::<u64>(),
        map_seed in any::<u64>(), method in method(), aki_scope in scope(),
    ) {
        let m = s.model(seed);
        let t = target(&s, s.layers, s.heads * k, extra_ffn);
        let bal = GrowOptions { method, aki_scope, seed: map_seed, ..GrowOptions::default() };
        let ex = GrowOptions { map: MapKind::Exact, ..bal };
        let (a, _) = grow(&m, &t, &bal).unwrap();
        let (b, _) = grow(&m, &t, &ex).unwrap();
        prop_assert_eq!(a.config_json(), b.config_json());
        for ((na, ta), (nb, tb)) in a.named_tensors().iter().zip(b.named_tensors()) {
            prop_assert_eq!(na, &nb);
            prop_assert!(ta.iter().zip(tb.iter()).all(|(x, y)| x.to_bits() == y.to_bits()), "{}", na);
        }
    }

    /// Growing to the source's own shape returns the model unchanged, bit for bit, config
    /// included, whatever the options.
    #[test]
    fn same_shape_is_bit_identical(
        s in any_shape(1), seed in any::<u64>(), map_seed in any::<u64>(), map in map_kind(),
        method in method(), aki_scope in scope(), depth in depth(),
    ) {
        let m = s.model(seed);
        let t = target(&s, s.layers, s.heads, 0);
        let (g, report) = grow(&m, &t, &GrowOptions { method, map, aki_scope, depth, seed: map_seed }).unwrap();
        prop_assert!(report.expected_exact, "{}", report);
        prop_assert!(g == m);
    }

    /// The streamed plan lists the grown model's tensors in `named_tensors` order, with its
    /// names and shapes, and produces the same bits as the in-memory build.
    #[test]
    fn plan_streams_the_built_model(
        s in any_shape(1), extra_heads in 0usize..=4, extra_ffn in 0usize..=12, extra_layers in 0usize..=2,
        seed in any::<u64>(), map_seed in any::<u64>(), map in map_kind(), method in method(),
        aki_scope in scope(), depth in depth(),
    ) {
        let m = s.model(seed);
        let t = target(&s, s.layers + extra_layers, s.heads + extra_heads, extra_ffn);
        let opts = GrowOptions { method, map, aki_scope, depth, seed: map_seed };
        let plan = GrowPlan::new(&m, &t, &opts).unwrap();
        let built = plan.build();
        built.validate().unwrap();
        let named = built.named_tensors();
        prop_assert_eq!(plan.len(), named.len());
        for (i, (name, v)) in named.iter().enumerate() {
            prop_assert_eq!(plan.name(i), name.as_str());
            prop_assert_eq!(plan.shape(i), v.shape());
            let streamed = plan.tensor(i);
            prop_assert!(streamed.iter().zip(v.iter()).all(|(x, y)| x.to_bits() == y.to_bits()), "{}", name);
        }
        let cfg = plan.config_json();
        prop_assert_eq!(&cfg["n_embd"], t.hidden);
        prop_assert_eq!(&cfg["n_head"], t.heads);
        prop_assert_eq!(&cfg["n_layer"], t.layers);
        prop_assert_eq!(&cfg["n_inner"], t.intermediate);
    }
}

/// A tensor name with its block index removed (`h.3.ln_1.weight` -> `h.*.ln_1.weight`).
fn strip_layer(name: &str) -> String {
    name.split('.')
        .map(|p| if p.parse::<usize>().is_ok() { "*" } else { p })
        .collect::<Vec<_>>()
        .join(".")
}

/// The values at the original output units (last axis in the stored (in, out) layout; the
/// first `out_s / 3` of each of Q, K and V in `c_attn`; an untied `lm_head` (V, D) keeps all V).
fn original_units(name: &str, t: &ArrayViewD<'_, f32>, out_s: usize) -> Vec<f32> {
    let ax = Axis(t.ndim() - 1);
    if name == "lm_head.weight" {
        return t.iter().copied().collect();
    }
    if name.contains("c_attn") {
        let (d_s, d_t) = (out_s / 3, t.shape()[ax.0] / 3);
        return (0..3)
            .flat_map(|p| {
                t.slice_axis(ax, Slice::from(p * d_t..p * d_t + d_s))
                    .iter()
                    .copied()
                    .collect::<Vec<_>>()
            })
            .collect();
    }
    t.slice_axis(ax, Slice::from(0..out_s))
        .iter()
        .copied()
        .collect()
}
