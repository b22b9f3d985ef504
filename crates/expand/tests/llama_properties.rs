//! Properties of Llama-family growth (issue 12), checked with the reference forward pass on
//! random models: exact mode preserves the function at random non-integer width ratios and
//! random GQA group counts (with identity depth too), balanced FPI is exact at integer ratios,
//! exact mode at an integer ratio is balanced FPI bit for bit, every query head keeps reading
//! its KV head, growing to the same shape is the identity, and the streamed source gives the
//! same bits as the model in memory.

use bert2bert_checkpoint::llama::{Part, Role};
use bert2bert_checkpoint::random::Init;
use bert2bert_checkpoint::{Dtype, Llama, LlamaConfig, LlamaKind, LlamaSource};
use bert2bert_expand::llama::{gqa_maps, verify_llama};
use bert2bert_expand::{
    Depth, ExpandError, GrowOptions, LlamaPlan, LlamaTarget, MapKind, Method, VerifyOptions,
};
use proptest::prelude::*;

const KINDS: [LlamaKind; 4] = [
    LlamaKind::Llama,
    LlamaKind::Mistral,
    LlamaKind::Qwen2,
    LlamaKind::Qwen3,
];

#[derive(Clone, Debug)]
struct Case {
    source: LlamaConfig,
    target: LlamaTarget,
    seed: u64,
}

/// A random source (hidden >= 8: see docs/growth-gpt2.md on tiny norms' conditioning) and a
/// target whose hidden size is any larger value and whose KV / query heads keep every group.
fn case(integer_ratio: bool) -> impl Strategy<Value = Case> {
    (
        (0usize..4, 8usize..=16, 1usize..=2, 1usize..=3, 1usize..=2),
        (
            4usize..=12,
            1usize..=3,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        (1usize..=16, 1usize..=3, 0usize..=2, 0usize..=6, 0usize..=2),
        (2usize..=3, any::<u64>()),
    )
        .prop_map(
            move |(
                (kind, d, kv, g, hdh),
                (f, layers, tied, abias, mbias),
                (dplus, kvm, gplus, fplus, lplus),
                (mult, seed),
            )| {
                let kind = KINDS[kind];
                let hd = 2 * hdh;
                let mut c = LlamaConfig::new(kind, 23, d, layers, kv * g, kv, hd, f, tied);
                if kind == LlamaKind::Llama {
                    c.qkv_bias = abias;
                    c.o_bias = abias;
                    c.mlp_bias = mbias;
                }
                let kv_t = kv * kvm;
                let g_t = g.div_ceil(kvm) + gplus;
                let hidden = if integer_ratio { d * mult } else { d + dplus };
                Case {
                    target: LlamaTarget {
                        layers: layers + lplus,
                        hidden,
                        heads: kv_t * g_t,
                        kv_heads: kv_t,
                        intermediate: f + fplus,
                    },
                    source: c,
                    seed,
                }
            },
        )
}

fn verify_opts() -> VerifyOptions {
    VerifyOptions {
        batches: 1,
        seq_len: 7,
        batch_size: 2,
        seed: 5,
    }
}

fn grow(src: &Llama, t: &LlamaTarget, opts: &GrowOptions) -> Llama {
    LlamaPlan::new(src, t, opts).unwrap().build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn exact_mode_preserves_the_function_at_any_ratio_and_gqa(c in case(false)) {
        let src = Llama::random(&c.source, Init::TEST, c.seed);
        let opts = GrowOptions {
            method: Method::Fpi,
            map: MapKind::Exact,
            depth: Depth::Identity,
            seed: c.seed,
            ..GrowOptions::default()
        };
        let plan = LlamaPlan::new(&src, &c.target, &opts).unwrap();
        prop_assert!(plan.report().expected_exact, "{}", plan.report());
        let g = plan.build().unwrap();
        // The tie is kept.
        prop_assert_eq!(g.config.tie_word_embeddings, c.source.tie_word_embeddings);
        prop_assert_eq!(g.config.rms_norm_eps, c.source.rms_norm_eps, "epsilon unchanged");
        let v = verify_llama(&src, &g, &verify_opts()).unwrap();
        prop_assert!(v.exact, "{:?} -> {}: {}", c.source.kind, c.target, v);
    }

    #[test]
    fn balanced_fpi_is_exact_at_integer_ratios(c in case(true)) {
        let src = Llama::random(&c.source, Init::TEST, c.seed);
        let mut t = c.target;
        t.layers = c.source.num_hidden_layers;
        let opts = GrowOptions { seed: c.seed, ..GrowOptions::default() };
        let plan = LlamaPlan::new(&src, &t, &opts).unwrap();
        prop_assert!(plan.report().expected_exact, "{}", plan.report());
        let g = plan.build().unwrap();
        let v = verify_llama(&src, &g, &verify_opts()).unwrap();
        prop_assert!(v.exact, "{}", v);
        // Exact mode at an integer ratio is the same growth, bit for bit.
        let exact = grow(&src, &t, &GrowOptions { map: MapKind::Exact, ..opts });
        prop_assert!(exact == g);
    }

    #[test]
    fn every_query_head_reads_a_copy_of_its_kv_head(c in case(false)) {
        let s = &c.source;
        let (a_s, k_s) = (s.num_attention_heads, s.num_key_value_heads);
        let (a_t, k_t) = (c.target.heads, c.target.kv_heads);
        for kind in [MapKind::Balanced, MapKind::Random, MapKind::Exact] {
            let m = match gqa_maps(kind, (a_s, k_s), (a_t, k_t), c.seed, 1) {
                Ok(m) => m,
                // A random KV map may copy some KV head too rarely for its group: refused.
                Err(e) if kind == MapKind::Random => {
                    prop_assert!(e.contains("query slots"), "{}", e);
                    continue;
                }
                Err(e) => return Err(TestCaseError::fail(e)),
            };
            let (g_s, g_t) = (a_s / k_s, a_t / k_t);
            for q in 0..a_t {
                prop_assert_eq!(m.kv.map()[q / g_t], m.q.map()[q] / g_s);
            }
            prop_assert!(m.q.counts().iter().all(|&n| n >= 1), "every source head kept");
            prop_assert!((0..k_s).all(|j| m.kv.map()[j] == j), "old KV heads in place");
            if g_s == g_t {
                prop_assert!((0..a_s).all(|q| m.q.map()[q] == q), "old heads in place");
            }
        }
    }

    #[test]
    fn growing_to_the_same_shape_returns_the_source(c in case(false), aki in any::<bool>()) {
        let src = Llama::random(&c.source, Init::TEST, c.seed);
        let opts = GrowOptions {
            method: if aki { Method::Aki } else { Method::Fpi },
            map: MapKind::Exact,
            seed: c.seed,
            ..GrowOptions::default()
        };
        let same = grow(&src, &LlamaTarget::of(&c.source), &opts);
        prop_assert!(same == src);
    }

    #[test]
    fn aki_keeps_the_original_units_of_fpi(c in case(false)) {
        let src = Llama::random(&c.source, Init::TEST, c.seed);
        let mut t = c.target;
        t.layers = c.source.num_hidden_layers;
        let base = GrowOptions { seed: c.seed, ..GrowOptions::default() };
        let fpi = grow(&src, &t, &base);
        let aki = grow(&src, &t, &GrowOptions { method: Method::Aki, ..base });
        let f = c.source.intermediate_size;
        for l in 0..t.layers {
            // The FFN map keeps old units in place: their gate rows are FPI's.
            let a = aki.mat(Role::Layer(l, Part::Gate));
            let b = fpi.mat(Role::Layer(l, Part::Gate));
            prop_assert!(a.slice(ndarray::s![..f, ..]) == b.slice(ndarray::s![..f, ..]));
            // Readers of the stream and writers to it are unchanged (scope internal).
            prop_assert!(aki.get(Role::Layer(l, Part::Down)) == fpi.get(Role::Layer(l, Part::Down)));
        }
        // The top layer has no layer above: FPI throughout.
        let top = t.layers - 1;
        prop_assert!(aki.get(Role::Layer(top, Part::Gate)) == fpi.get(Role::Layer(top, Part::Gate)));
    }
}

#[test]
fn streamed_and_in_memory_sources_grow_the_same_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let c = LlamaConfig::new(LlamaKind::Qwen3, 31, 12, 2, 4, 2, 4, 20, true);
    let m = Llama::random(&c, Init::TEST, 11);
    let dir = m
        .write(&tmp.path().join("src"), Dtype::F32, false, None)
        .unwrap();
    let src = LlamaSource::open(&dir).unwrap();
    let t = LlamaTarget {
        layers: 3,
        hidden: 17,
        heads: 6,
        kv_heads: 3,
        intermediate: 27,
    };
    for method in [Method::Fpi, Method::Aki] {
        let opts = GrowOptions {
            method,
            map: MapKind::Exact,
            ..GrowOptions::default()
        };
        let a = grow(&m, &t, &opts);
        let b = LlamaPlan::new(&src, &t, &opts).unwrap().build().unwrap();
        assert!(a.tensors == b.tensors, "{method}");
    }
}

#[test]
fn non_integer_balanced_growth_is_reported_and_measured_inexact() {
    let c = LlamaConfig::new(LlamaKind::Llama, 40, 16, 2, 4, 2, 4, 24, false);
    let src = Llama::random(&c, Init::TEST, 2);
    let t = LlamaTarget {
        layers: 2,
        hidden: 24,
        heads: 6,
        kv_heads: 3,
        intermediate: 36,
    };
    let plan = LlamaPlan::new(&src, &t, &GrowOptions::default()).unwrap();
    assert!(!plan.report().expected_exact);
    let v = verify_llama(&src, &plan.build().unwrap(), &verify_opts()).unwrap();
    assert!(!v.exact && v.max_rel > 1e-3, "{v}");
}

#[test]
fn targets_that_cannot_keep_the_groups_or_shrink_are_refused() {
    let c = LlamaConfig::new(LlamaKind::Llama, 40, 32, 1, 8, 2, 4, 24, false);
    let src = Llama::random(&c, Init::TEST, 2);
    let t = LlamaTarget {
        layers: 1,
        hidden: 48,
        heads: 9,
        kv_heads: 3,
        intermediate: 36,
    };
    match LlamaPlan::new(&src, &t, &GrowOptions::default()).unwrap_err() {
        ExpandError::Target(m) => assert!(m.contains("query slots"), "{m}"),
        e => panic!("{e}"),
    }
    let t = LlamaTarget {
        kv_heads: 1,
        heads: 8,
        ..t
    };
    assert!(matches!(
        LlamaPlan::new(&src, &t, &GrowOptions::default()).unwrap_err(),
        ExpandError::Shrink {
            what: "KV heads",
            ..
        }
    ));
}

#[test]
fn identity_blocks_write_nothing_and_mqa_grows() {
    // One KV head (multi-query) grown to two; an identity block on top.
    let c = LlamaConfig::new(LlamaKind::Mistral, 40, 16, 1, 4, 1, 4, 24, true);
    let src = Llama::random(&c, Init::TEST, 4);
    let t = LlamaTarget {
        layers: 2,
        hidden: 20,
        heads: 6,
        kv_heads: 2,
        intermediate: 30,
    };
    let opts = GrowOptions {
        map: MapKind::Exact,
        depth: Depth::Identity,
        ..GrowOptions::default()
    };
    let g = grow(&src, &t, &opts);
    assert!(g.get(Role::Layer(1, Part::O)).iter().all(|&v| v == 0.0));
    assert!(g.get(Role::Layer(1, Part::Down)).iter().all(|&v| v == 0.0));
    assert!(g.get(Role::Layer(1, Part::Q)).iter().any(|&v| v != 0.0));
    let v = verify_llama(&src, &g, &verify_opts()).unwrap();
    assert!(v.exact, "{v}");
}

#[test]
fn stack_and_interleave_copy_the_width_grown_layers_in_their_order() {
    // 2 -> 5 layers at a non-integer width ratio with Qwen3's q/k norms and a changed group
    // size: every grown layer is, tensor for tensor, the width-grown copy of the source layer
    // the rule names (stack 0 1 0 1 1, interleave 0 0 1 1 1), and the added layers are reported.
    let c = LlamaConfig::new(LlamaKind::Qwen3, 31, 12, 2, 4, 2, 4, 20, false);
    let src = Llama::random(&c, Init::TEST, 9);
    let wide = LlamaTarget {
        layers: 2,
        hidden: 17,
        heads: 6,
        kv_heads: 2,
        intermediate: 27,
    };
    let deep = LlamaTarget { layers: 5, ..wide };
    let base = GrowOptions {
        map: MapKind::Exact,
        ..GrowOptions::default()
    };
    let w = grow(&src, &wide, &base);
    for (depth, order) in [
        (Depth::Stack, [0, 1, 0, 1, 1]),
        (Depth::Interleave, [0, 0, 1, 1, 1]),
    ] {
        let opts = GrowOptions { depth, ..base };
        let plan = LlamaPlan::new(&src, &deep, &opts).unwrap();
        assert_eq!(plan.layer_order(), order, "{depth}");
        let report = plan.report();
        assert!(
            !report.expected_exact,
            "{depth}: added layers are not exact"
        );
        assert!(report.to_string().contains("3 layers added"), "{report}");
        let g = plan.build().unwrap();
        assert_eq!(g.config.num_hidden_layers, 5);
        for (l, &s) in order.iter().enumerate() {
            for part in [
                Part::InputNorm,
                Part::Q,
                Part::K,
                Part::V,
                Part::O,
                Part::QNorm,
            ] {
                assert_eq!(
                    g.get(Role::Layer(l, part)),
                    w.get(Role::Layer(s, part)),
                    "{depth} {l}"
                );
            }
            for part in [Part::PostNorm, Part::Gate, Part::Up, Part::Down] {
                assert_eq!(
                    g.get(Role::Layer(l, part)),
                    w.get(Role::Layer(s, part)),
                    "{depth} {l}"
                );
            }
        }
        assert_eq!(g.get(Role::Embed), w.get(Role::Embed));
        assert_eq!(g.get(Role::LmHead), w.get(Role::LmHead));
    }
    // The width part alone preserves the function.
    let v = verify_llama(&src, &w, &verify_opts()).unwrap();
    assert!(v.exact, "{v}");
}
