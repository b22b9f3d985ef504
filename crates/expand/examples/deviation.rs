//! Measures how far grown models deviate from their source, to set and document tolerances
//! (docs/growth.md): `cargo run --release -p bert2bert-expand --example deviation`.

use bert2bert_checkpoint::random::{Heads, Init, SplitMix64};
use bert2bert_checkpoint::{Bert, BertConfig, Model};
use bert2bert_expand::{GrowOptions, MapKind, Target, VerifyOptions, grow, verify};

fn dev(m: &Model, t: &Target, map: MapKind, seed: u64, vo: &VerifyOptions) -> f32 {
    let opts = GrowOptions {
        map,
        seed,
        ..GrowOptions::default()
    };
    let (g, _) = grow(m, t, &opts).expect("valid target");
    verify(m, &g, vo).expect("comparable").max_rel
}

fn main() {
    let mut rng = SplitMix64::new(42);
    let (mut exact_max, mut non_min, mut bal, mut rnd, mut n) =
        (0f32, f32::INFINITY, 0f64, 0f64, 0);
    for case in 0..400u64 {
        let heads = 2 + rng.below(3);
        let dh = [2, 4, 8][rng.below(3)];
        let layers = 1 + rng.below(3);
        let cfg = BertConfig::new(
            5 + rng.below(46),
            heads * dh,
            layers,
            heads,
            1 + rng.below(24),
            16,
        );
        let m = Model::Bert(Bert::random(&cfg, Heads::ALL, Init::TEST, case));
        let vo = VerifyOptions {
            batches: 1,
            seq_len: 1 + rng.below(12),
            batch_size: 2,
            seed: case,
        };
        let k = 2 + rng.below(2);
        let exact = Target {
            layers,
            hidden: heads * dh * k,
            heads: heads * k,
            intermediate: cfg.intermediate_size + rng.below(9),
        };
        exact_max = exact_max.max(dev(&m, &exact, MapKind::Balanced, case, &vo));
        let extra = 1 + rng.below(heads - 1);
        let non = Target {
            layers,
            hidden: (heads + extra) * dh,
            heads: heads + extra,
            intermediate: cfg.intermediate_size,
        };
        let b = dev(&m, &non, MapKind::Balanced, case, &vo);
        let r = dev(&m, &non, MapKind::Random, case, &vo);
        non_min = non_min.min(b);
        bal += b as f64;
        rnd += r as f64;
        n += 1;
    }
    println!("small random models (Init::TEST), {n} cases:");
    println!("  integer ratio, balanced FPI: largest max_rel {exact_max:.2e}");
    println!(
        "  non-integer ratio: smallest max_rel (balanced) {non_min:.2e}; mean balanced {:.2e}, mean random {:.2e}",
        bal / n as f64,
        rnd / n as f64
    );
    // A BERT-base-width encoder (4 layers to keep this quick), both initialisations.
    let cfg = BertConfig::new(2000, 768, 4, 12, 3072, 128);
    let vo = VerifyOptions {
        batches: 2,
        seq_len: 64,
        batch_size: 4,
        seed: 1,
    };
    for (name, init) in [
        ("FRESH (HF init)", Init::FRESH),
        ("TEST (unit-scale)", Init::TEST),
    ] {
        let m = Model::Bert(Bert::random(&cfg, Heads::ALL, init, 7));
        for (what, t) in [
            (
                "768 -> 1536 (x2)",
                Target {
                    layers: 4,
                    hidden: 1536,
                    heads: 24,
                    intermediate: 6144,
                },
            ),
            (
                "768 -> 2304 (x3)",
                Target {
                    layers: 4,
                    hidden: 2304,
                    heads: 36,
                    intermediate: 9216,
                },
            ),
            (
                "768 -> 1024 (x4/3)",
                Target {
                    layers: 4,
                    hidden: 1024,
                    heads: 16,
                    intermediate: 4096,
                },
            ),
        ] {
            for map in [MapKind::Balanced, MapKind::Random] {
                println!(
                    "4 x 768 {name}, {what}, {map}: max_rel {:.2e}",
                    dev(&m, &t, map, 0, &vo)
                );
            }
        }
    }
}
