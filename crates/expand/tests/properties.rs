//! The seven properties of issue 3, each over at least 128 random cases.

mod common;

use bert2bert_checkpoint::random::Heads;
use bert2bert_checkpoint::{Bert, BertLayer, Linear, Model};
use bert2bert_expand::expn::reciprocal;
use bert2bert_expand::maps::{IndexMap, MapRole, layer_order};
use bert2bert_expand::{
    AkiScope, Depth, GrowOptions, GrowPlan, MapKind, Method, Target, VerifyOptions, grow, verify,
};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::cell::RefCell;

fn bert(m: &Model) -> &Bert {
    m.as_bert().unwrap()
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![Method::Fpi, Method::Aki])
}
fn map_kind() -> impl Strategy<Value = MapKind> {
    prop::sample::select(vec![MapKind::Balanced, MapKind::Random])
}
fn scope() -> impl Strategy<Value = AkiScope> {
    prop::sample::select(vec![AkiScope::Internal, AkiScope::All])
}
fn depth() -> impl Strategy<Value = Depth> {
    prop::sample::select(vec![Depth::Stack, Depth::Interleave])
}

/// The typed linear maps of a layer with their (in map, out map) under FPI.
fn linears<'a>(
    l: &'a BertLayer,
    g: &'a IndexMap,
    u: &'a IndexMap,
    f: &'a IndexMap,
) -> [(&'static str, &'a Linear, &'a IndexMap, &'a IndexMap); 6] {
    [
        ("query", &l.query, g, u),
        ("key", &l.key, g, u),
        ("value", &l.value, g, u),
        ("attention output", &l.attention_output, u, g),
        ("intermediate", &l.intermediate, g, f),
        ("output", &l.output, f, g),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Property 1: FPI with an integer width ratio and balanced maps preserves the function: every
    /// layer's hidden states, the MLM and NSP logits within 1e-5 relative, on padded batches.
    #[test]
    fn p1_fpi_integer_ratio_preserves_function(
        s in shape(), k in 1usize..=3, extra_ffn in 0usize..=24, heads in heads(),
        seed in any::<u64>(), map_seed in any::<u64>(), seq in 1usize..=12, batch in 1usize..=3,
    ) {
        let m = model(&s, heads, seed);
        let t = Target {
            layers: s.layers,
            hidden: s.hidden() * k,
            heads: s.heads * k,
            intermediate: s.ffn + extra_ffn,
        };
        let opts = GrowOptions { seed: map_seed, ..GrowOptions::default() };
        let (g, report) = grow(&m, &t, &opts).unwrap();
        prop_assert!(report.expected_exact, "{}", report);
        let v = verify(&m, &g, &VerifyOptions { batches: 1, seq_len: seq, batch_size: batch, seed }).unwrap();
        prop_assert_eq!(v.layers.len(), s.layers + 1);
        prop_assert_eq!(v.mlm_logits.is_some(), heads.mlm);
        for d in v.diffs() {
            prop_assert!(d.max_rel <= 1e-5, "{}: {:.3e}\n{}", d.name, d.max_rel, v);
        }
        prop_assert!(v.exact);
    }

    /// Property 2: A target equal to the source returns the model unchanged, bit for bit, whatever the
    /// options.
    #[test]
    fn p2_same_shape_is_bit_identical(
        s in shape(), heads in heads(), seed in any::<u64>(), method in method(),
        map in map_kind(), aki_scope in scope(), depth in depth(), map_seed in any::<u64>(),
    ) {
        let m = model(&s, heads, seed);
        let opts = GrowOptions { method, map, aki_scope, depth, seed: map_seed };
        let (g, report) = grow(&m, &Target::of(&bert(&m).config), &opts).unwrap();
        prop_assert!(report.expected_exact);
        prop_assert!(g == m);
        let (a, b) = (m.named_tensors(), g.named_tensors());
        prop_assert_eq!(a.len(), b.len());
        for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
            prop_assert_eq!(na, nb);
            prop_assert_eq!(ta.shape(), tb.shape());
            prop_assert!(ta.iter().zip(tb.iter()).all(|(x, y)| x.to_bits() == y.to_bits()), "{}", na);
        }
    }

    /// Property 3: In-dim division: summing a grown matrix's rows over the copies of each source input
    /// unit gives the source row back (at the copied output units), for every linear map of
    /// every layer and head, any ratio and either map kind.
    #[test]
    fn p3_rows_sum_back_to_the_source(
        s in shape(), extra_heads in 0usize..=5, extra_ffn in 0usize..=30, heads in heads(),
        seed in any::<u64>(), map in map_kind(), map_seed in any::<u64>(),
    ) {
        let m = model(&s, heads, seed);
        let t = Target {
            layers: s.layers,
            hidden: (s.heads + extra_heads) * s.head_dim,
            heads: s.heads + extra_heads,
            intermediate: s.ffn + extra_ffn,
        };
        let opts = GrowOptions { map, seed: map_seed, ..GrowOptions::default() };
        let plan = GrowPlan::new(&m, &t, &opts).unwrap();
        let g = plan.build();
        let (src, grown) = (bert(&m), bert(&g));
        let hidden = plan.hidden_map();
        let ident2 = IndexMap::identity(2);
        let mut checks: Vec<(String, &Linear, &Linear, &IndexMap, &IndexMap)> = Vec::new();
        for (l, (sl, gl)) in src.layers.iter().zip(&grown.layers).enumerate() {
            let (u, f) = (plan.head_unit_map(l), plan.ffn_map(l));
            for ((name, a, gin, gout), (_, b, _, _)) in linears(sl, hidden, u, f).into_iter().zip(linears(gl, hidden, u, f)) {
                checks.push((format!("layer {l} {name}"), a, b, gin, gout));
            }
        }
        if let (Some(a), Some(b)) = (&src.pooler, &grown.pooler) {
            checks.push(("pooler".into(), a, b, hidden, hidden));
        }
        if let (Some(a), Some(b)) = (&src.mlm, &grown.mlm) {
            checks.push(("mlm transform".into(), &a.transform, &b.transform, hidden, hidden));
        }
        if let (Some(a), Some(b)) = (&src.nsp, &grown.nsp) {
            checks.push(("nsp".into(), a, b, hidden, &ident2));
        }
        for (name, a, b, gin, gout) in checks {
            prop_assert_eq!(b.weight.dim(), (gin.target(), gout.target()));
            for k in 0..gin.source() {
                let copies: Vec<usize> = (0..gin.target()).filter(|&i| gin.map()[i] == k).collect();
                prop_assert_eq!(copies.len() as u32, gin.counts()[k]);
                for j in 0..gout.target() {
                    let sum: f32 = copies.iter().map(|&i| b.weight[[i, j]]).sum();
                    let want = a.weight[[k, gout.map()[j]]];
                    let tol = 2.0 * copies.len() as f32 * f32::EPSILON * want.abs();
                    prop_assert!((sum - want).abs() <= tol, "{}: row {} col {}: {} vs {}", name, k, j, sum, want);
                }
            }
            for j in 0..gout.target() {
                prop_assert_eq!(b.bias[j].to_bits(), a.bias[gout.map()[j]].to_bits());
            }
        }
    }

    /// Property 4: AKI: original units equal FPI's; new units are the layer above's slices (expanded by
    /// this layer's maps); the top layer equals FPI; outside the scope everything is FPI's.
    #[test]
    fn p4_aki_takes_new_units_from_the_layer_above(
        s in shape(), extra_heads in 0usize..=4, extra_ffn in 0usize..=20, heads in heads(),
        seed in any::<u64>(), map in map_kind(), aki_scope in scope(), map_seed in any::<u64>(),
    ) {
        let m = model(&s, heads, seed);
        let t = Target {
            layers: s.layers,
            hidden: (s.heads + extra_heads) * s.head_dim,
            heads: s.heads + extra_heads,
            intermediate: s.ffn + extra_ffn,
        };
        let fpi_opts = GrowOptions { map, seed: map_seed, ..GrowOptions::default() };
        let aki_opts = GrowOptions { method: Method::Aki, aki_scope, ..fpi_opts };
        let plan = GrowPlan::new(&m, &t, &aki_opts).unwrap();
        let aki = plan.build();
        let (fpi, _) = grow(&m, &t, &fpi_opts).unwrap();
        let (src, a, f) = (bert(&m), bert(&aki), bert(&fpi));
        // Outside the encoder nothing changes.
        prop_assert!(a.embeddings == f.embeddings && a.mlm == f.mlm && a.pooler == f.pooler && a.nsp == f.nsp);
        let g = plan.hidden_map();
        let ls = s.layers;
        for l in 0..ls {
            let (al, fl) = (&a.layers[l], &f.layers[l]);
            if l + 1 == ls {
                prop_assert!(al == fl, "the top layer must equal FPI");
                continue;
            }
            let above = &src.layers[l + 1];
            let (u, ff) = (plan.head_unit_map(l), plan.ffn_map(l));
            let all = aki_scope == AkiScope::All;
            for ((name, al, gin, gout), ((_, fl, _, _), (_, up, _, _))) in linears(al, g, u, ff)
                .into_iter()
                .zip(linears(fl, g, u, ff).into_iter().zip(linears(above, g, u, ff)))
            {
                // New heads and FFN neurons always; new hidden units only with scope `all`.
                let in_scope = !std::ptr::eq(gout, g) || all;
                for j in 0..gout.target() {
                    let new = j >= gout.source();
                    for i in 0..gin.target() {
                        let got = al.weight[[i, j]];
                        let want = if new && in_scope {
                            let r = gin.map()[i];
                            up.weight[[r, gout.map()[j]]] * reciprocal(gin.counts()[r])
                        } else {
                            fl.weight[[i, j]]
                        };
                        prop_assert_eq!(got.to_bits(), want.to_bits(), "layer {} {} [{}, {}]", l, name, i, j);
                    }
                    let want_b = if new && in_scope { up.bias[gout.map()[j]] } else { fl.bias[j] };
                    prop_assert_eq!(al.bias[j].to_bits(), want_b.to_bits(), "layer {} {} bias {}", l, name, j);
                }
            }
            for (name, aln, fln, upn) in [
                ("attention LayerNorm", &al.attention_layer_norm, &fl.attention_layer_norm, &above.attention_layer_norm),
                ("output LayerNorm", &al.output_layer_norm, &fl.output_layer_norm, &above.output_layer_norm),
            ] {
                for j in 0..g.target() {
                    let from_above = all && j >= g.source();
                    let (wg, wb) = if from_above {
                        (upn.weight[g.map()[j]], upn.bias[g.map()[j]])
                    } else {
                        (fln.weight[j], fln.bias[j])
                    };
                    prop_assert_eq!(aln.weight[j].to_bits(), wg.to_bits(), "layer {} {}", l, name);
                    prop_assert_eq!(aln.bias[j].to_bits(), wb.to_bits(), "layer {} {}", l, name);
                }
            }
        }
    }

    /// Property 5: Maps: old units keep their place; under `balanced` copy counts differ by at most one;
    /// the same seed gives the same map, and the counts add up.
    #[test]
    fn p5_maps_are_balanced_and_seeded(
        source in 1usize..=40, extra in 0usize..=100, seed in any::<u64>(), kind in map_kind(),
        layer in 0usize..=30, role in 0u8..3,
    ) {
        let role = match role { 0 => MapRole::Hidden, 1 => MapRole::Heads(layer), _ => MapRole::Ffn(layer) };
        let target = source + extra;
        let m = IndexMap::new(kind, source, target, seed, role);
        prop_assert_eq!(m.target(), target);
        prop_assert!((0..source).all(|i| m.map()[i] == i));
        prop_assert!(m.map().iter().all(|&k| k < source));
        prop_assert_eq!(m.counts().iter().map(|&c| c as usize).sum::<usize>(), target);
        for k in 0..source {
            prop_assert_eq!(m.counts()[k] as usize, m.map().iter().filter(|&&x| x == k).count());
        }
        if kind == MapKind::Balanced {
            let (lo, hi) = (m.counts().iter().min().unwrap(), m.counts().iter().max().unwrap());
            prop_assert!(hi - lo <= 1, "counts {:?}", m.counts());
            prop_assert_eq!(*lo as usize, target / source);
        }
        prop_assert_eq!(&m, &IndexMap::new(kind, source, target, seed, role));
    }

    /// Property 7: Depth: the layer order follows the spec for random (L_s, L_t), and the grown model's
    /// layers are the width-grown source layers in that order.
    #[test]
    fn p7_depth_order_follows_the_spec(ls in 1usize..=8, extra in 0usize..=30, rule in depth()) {
        let lt = ls + extra;
        let order = layer_order(rule, ls, lt);
        prop_assert_eq!(order.len(), lt);
        let (k, r) = (lt / ls, lt % ls);
        // Both rules copy each layer k times, the top r layers once more.
        for l in 0..ls {
            let want = k + usize::from(l >= ls - r);
            prop_assert_eq!(order.iter().filter(|&&x| x == l).count(), want);
        }
        match rule {
            Depth::Stack => {
                for (t, &l) in order.iter().enumerate() {
                    let want = if t < k * ls { t % ls } else { ls - r + (t - k * ls) };
                    prop_assert_eq!(l, want);
                }
            }
            // Identity (GPT-2 only) places its blocks like Interleave.
            Depth::Interleave | Depth::Identity => prop_assert!(order.windows(2).all(|w| w[0] <= w[1])),
        }
    }
}

/// Property 7 (continued): A grown model's target layer t is the width-grown source layer order[t].
#[test]
fn p7_grown_layers_follow_the_order() {
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    let strategy = (shape(), 0usize..=7, depth(), method(), any::<u64>());
    runner
        .run(&strategy, |(s, extra, rule, method, seed)| {
            let m = model(&s, Heads::MLM, seed);
            let lt = s.layers + extra;
            let t = Target {
                layers: lt,
                hidden: s.hidden() * 2,
                heads: s.heads * 2,
                intermediate: s.ffn + 3,
            };
            let opts = GrowOptions {
                method,
                depth: rule,
                seed,
                ..GrowOptions::default()
            };
            let (g, report) = grow(&m, &t, &opts).unwrap();
            let width_only = Target {
                layers: s.layers,
                ..t
            };
            let (w, _) = grow(&m, &width_only, &opts).unwrap();
            let order = layer_order(rule, s.layers, lt);
            prop_assert_eq!(&report.layer_order, &order);
            prop_assert_eq!(
                report.expected_exact,
                extra == 0 && (method == Method::Fpi || s.layers == 1)
            );
            for (t, &l) in order.iter().enumerate() {
                prop_assert!(bert(&g).layers[t] == bert(&w).layers[l], "layer {}", t);
            }
            Ok(())
        })
        .unwrap();
}

/// Property 6: A non-integer width ratio is not exact: the deviation is measured and reported, and the
/// balanced map is never worse than the random one in the mean over the run.
#[test]
fn p6_non_integer_ratio_balanced_beats_random_in_the_mean() {
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    let devs = RefCell::new(Vec::<(f32, f32)>::new());
    let strategy = (shape(), 1usize..=8, any::<u64>(), any::<u64>(), 4usize..=12)
        .prop_filter("at least two source heads", |(s, ..)| s.heads >= 2)
        .prop_filter("a non-integer ratio", |(s, extra, ..)| extra % s.heads != 0);
    runner
        .run(&strategy, |(s, extra, seed, map_seed, seq)| {
            let m = model(&s, Heads::ALL, seed);
            let t = Target {
                layers: s.layers,
                hidden: (s.heads + extra) * s.head_dim,
                heads: s.heads + extra,
                intermediate: s.ffn,
            };
            let vo = VerifyOptions {
                batches: 1,
                seq_len: seq,
                batch_size: 2,
                seed,
            };
            let mut pair = [0.0f32; 2];
            for (slot, map) in [MapKind::Balanced, MapKind::Random].into_iter().enumerate() {
                let opts = GrowOptions {
                    map,
                    seed: map_seed,
                    ..GrowOptions::default()
                };
                let (g, report) = grow(&m, &t, &opts).unwrap();
                prop_assert!(!report.expected_exact);
                prop_assert!(report.inexact_reasons[0].contains("LayerNorm"));
                let v = verify(&m, &g, &vo).unwrap();
                prop_assert!(v.max_rel.is_finite());
                prop_assert_eq!(v.exact, v.max_rel <= v.tolerance);
                pair[slot] = v.max_rel;
            }
            devs.borrow_mut().push((pair[0], pair[1]));
            Ok(())
        })
        .unwrap();
    let devs = devs.into_inner();
    let n = devs.len() as f32;
    let balanced = devs.iter().map(|d| d.0).sum::<f32>() / n;
    let random = devs.iter().map(|d| d.1).sum::<f32>() / n;
    println!(
        "mean max relative deviation over {n} cases: balanced {balanced:.3e}, random {random:.3e}"
    );
    assert!(
        balanced > 1e-5,
        "a non-integer ratio is expected to deviate measurably"
    );
    assert!(
        balanced <= random,
        "balanced {balanced:.3e} > random {random:.3e}"
    );
}
