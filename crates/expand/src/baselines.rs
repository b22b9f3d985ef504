//! The initialisations the paper compares bert2BERT against (spec section 9): DirectCopy and
//! the stacking step of StackBERT-style progressive training.
//!
//! - [`direct_copy`]: the source's weights in the top-left corner of every target tensor, the
//!   rest drawn fresh (N(0, `initializer_range`) weights, zero biases, identity LayerNorms), as a
//!   fresh model of the target shape would be. Layers beyond the source's depth are fresh.
//!   Not function-preserving: the new units read and write the residual stream at random.
//! - [`stack`]: depth-only growth of a trained shallow model (Gong et al., ICML 2019): the layer
//!   sequence repeated with the paper's stacking rule, through [`crate::grow`] at equal width.

use crate::options::{Depth, GrowOptions, Target};
use crate::{ExpandError, grow};
use bert2bert_checkpoint::random::{Heads, Init};
use bert2bert_checkpoint::{Bert, LayerNorm, Linear, Model};
use ndarray::{Array1, Array2, s};

/// The `initializer_range` of a config (Hugging Face's default 0.02 when absent).
pub fn initializer_range(config: &bert2bert_checkpoint::BertConfig) -> f32 {
    config
        .raw
        .get("initializer_range")
        .and_then(|v| v.as_f64())
        .unwrap_or(0.02) as f32
}

fn corner2(dst: &mut Array2<f32>, src: &Array2<f32>) {
    let (r, c) = src.dim();
    dst.slice_mut(s![..r, ..c]).assign(src);
}

fn corner1(dst: &mut Array1<f32>, src: &Array1<f32>) {
    dst.slice_mut(s![..src.len()]).assign(src);
}

fn linear(dst: &mut Linear, src: &Linear) {
    corner2(&mut dst.weight, &src.weight);
    corner1(&mut dst.bias, &src.bias);
}

fn layer_norm(dst: &mut LayerNorm, src: &LayerNorm) {
    corner1(&mut dst.weight, &src.weight);
    corner1(&mut dst.bias, &src.bias);
}

/// DirectCopy: `source` grown to `target` by copying every tensor into the top-left corner of a
/// freshly initialised target (seeded by `seed`); the same heads (MLM, pooler, NSP) as the source.
pub fn direct_copy(source: &Bert, target: &Target, seed: u64) -> Result<Bert, ExpandError> {
    source.validate()?;
    target.check_growth_from(&Target::of(&source.config))?;
    let config = source.config.with_shape(
        target.layers,
        target.hidden,
        target.heads,
        target.intermediate,
    );
    let heads = Heads {
        mlm: source.mlm.is_some(),
        pooler: source.pooler.is_some(),
        nsp: source.nsp.is_some(),
    };
    let init = Init {
        std: initializer_range(&config),
        ..Init::FRESH
    };
    let mut out = Bert::random(&config, heads, init, seed);
    out.prefixed = source.prefixed;
    let (e, se) = (&mut out.embeddings, &source.embeddings);
    corner2(&mut e.word, &se.word);
    corner2(&mut e.position, &se.position);
    corner2(&mut e.token_type, &se.token_type);
    layer_norm(&mut e.layer_norm, &se.layer_norm);
    for (d, s) in out.layers.iter_mut().zip(&source.layers) {
        linear(&mut d.query, &s.query);
        linear(&mut d.key, &s.key);
        linear(&mut d.value, &s.value);
        linear(&mut d.attention_output, &s.attention_output);
        layer_norm(&mut d.attention_layer_norm, &s.attention_layer_norm);
        linear(&mut d.intermediate, &s.intermediate);
        linear(&mut d.output, &s.output);
        layer_norm(&mut d.output_layer_norm, &s.output_layer_norm);
    }
    if let (Some(d), Some(s)) = (out.pooler.as_mut(), source.pooler.as_ref()) {
        linear(d, s);
    }
    if let (Some(d), Some(s)) = (out.nsp.as_mut(), source.nsp.as_ref()) {
        corner2(&mut d.weight, &s.weight);
        d.bias.assign(&s.bias);
    }
    if let (Some(d), Some(s)) = (out.mlm.as_mut(), source.mlm.as_ref()) {
        linear(&mut d.transform, &s.transform);
        layer_norm(&mut d.layer_norm, &s.layer_norm);
        d.bias.assign(&s.bias);
        // An untied decoder (hidden x vocab in the typed orientation) keeps its corner; a tied
        // one follows the word embeddings.
        d.decoder = s.decoder.as_ref().map(|sd| {
            let mut m = Array2::zeros((target.hidden, sd.ncols()));
            let mut rng = bert2bert_checkpoint::random::SplitMix64::new(seed ^ 0x00DE_C0DE);
            m.mapv_inplace(|_: f32| init.std * rng.normal());
            corner2(&mut m, sd);
            m
        });
    }
    out.validate()?;
    Ok(out)
}

/// StackBERT's stacking step: `source` deepened to `layers` layers at its own width (the
/// paper's stacking rule: the layer sequence repeated, then its top layers).
pub fn stack(source: &Bert, layers: usize) -> Result<Bert, ExpandError> {
    let c = &source.config;
    let target = Target {
        layers,
        ..Target::of(c)
    };
    let opts = GrowOptions {
        depth: Depth::Stack,
        ..GrowOptions::default()
    };
    let (model, _) = grow(&Model::Bert(source.clone()), &target, &opts)?;
    match model {
        Model::Bert(b) => Ok(b),
        other => unreachable!("BERT growth returned a {} model", other.family().name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bert2bert_checkpoint::BertConfig;

    fn source() -> Bert {
        let cfg = BertConfig::new(50, 8, 2, 2, 16, 12);
        Bert::random(&cfg, Heads::ALL, Init::TEST, 7)
    }

    fn target() -> Target {
        Target {
            layers: 3,
            hidden: 12,
            heads: 3,
            intermediate: 24,
        }
    }

    #[test]
    fn direct_copy_keeps_the_source_in_the_corner_and_draws_the_rest() {
        let s = source();
        let t = direct_copy(&s, &target(), 3).unwrap();
        assert_eq!(t.config.hidden_size, 12);
        assert_eq!(t.config.num_hidden_layers, 3);
        assert_eq!(t.config.num_attention_heads, 3);
        assert_eq!(t.layers.len(), 3);
        // The corner is the source, exactly.
        assert_eq!(
            t.embeddings.word.slice(s![.., ..8]),
            s.embeddings.word.view()
        );
        for l in 0..2 {
            let (a, b) = (&t.layers[l], &s.layers[l]);
            assert_eq!(a.query.weight.slice(s![..8, ..8]), b.query.weight.view());
            assert_eq!(
                a.intermediate.weight.slice(s![..8, ..16]),
                b.intermediate.weight.view()
            );
            assert_eq!(a.output.weight.slice(s![..16, ..8]), b.output.weight.view());
            assert_eq!(a.output.bias.slice(s![..8]), b.output.bias.view());
            assert_eq!(
                a.output_layer_norm.weight.slice(s![..8]),
                b.output_layer_norm.weight.view()
            );
            // New biases are zero, new LayerNorm entries the identity.
            assert!(a.output.bias.slice(s![8..]).iter().all(|&v| v == 0.0));
            assert!(
                a.output_layer_norm
                    .weight
                    .slice(s![8..])
                    .iter()
                    .all(|&v| v == 1.0)
            );
        }
        let (tm, sm) = (t.mlm.as_ref().unwrap(), s.mlm.as_ref().unwrap());
        assert_eq!(tm.bias, sm.bias);
        assert_eq!(
            t.nsp.as_ref().unwrap().weight.slice(s![..8, ..]),
            s.nsp.as_ref().unwrap().weight.view()
        );
        // The rest is fresh, with the config's initializer_range as its std.
        let fresh: Vec<f32> = t.layers[0]
            .query
            .weight
            .slice(s![8.., ..])
            .iter()
            .chain(t.layers[2].intermediate.weight.iter())
            .copied()
            .collect();
        let n = fresh.len() as f32;
        let mean = fresh.iter().sum::<f32>() / n;
        let std = (fresh.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt();
        assert!((std - 0.02).abs() < 0.004, "fresh std {std}");
        assert!(fresh.iter().all(|&v| v != 0.0));
    }

    #[test]
    fn direct_copy_is_seeded() {
        let s = source();
        let a = direct_copy(&s, &target(), 1).unwrap();
        let b = direct_copy(&s, &target(), 1).unwrap();
        let c = direct_copy(&s, &target(), 2).unwrap();
        assert_eq!(a.layers[2].key.weight, b.layers[2].key.weight);
        assert_ne!(a.layers[2].key.weight, c.layers[2].key.weight);
        // The copied corner does not depend on the seed.
        assert_eq!(
            a.layers[0].key.weight.slice(s![..8, ..8]),
            c.layers[0].key.weight.slice(s![..8, ..8])
        );
    }

    #[test]
    fn direct_copy_refuses_what_growth_refuses() {
        let s = source();
        let shrink = Target {
            hidden: 4,
            heads: 1,
            ..target()
        };
        assert!(matches!(
            direct_copy(&s, &shrink, 0),
            Err(ExpandError::Shrink { .. })
        ));
        let head_size = Target {
            heads: 2,
            ..target()
        };
        assert!(matches!(
            direct_copy(&s, &head_size, 0),
            Err(ExpandError::HeadSize { .. })
        ));
    }

    #[test]
    fn stack_repeats_the_layer_sequence() {
        let s = source();
        let t = stack(&s, 5).unwrap();
        assert_eq!(t.config.num_hidden_layers, 5);
        assert_eq!(t.config.hidden_size, 8);
        // 2 -> 5: 1, 2, 1, 2, then the top layer again.
        for (l, from) in [0, 1, 0, 1, 1].into_iter().enumerate() {
            assert_eq!(t.layers[l].query.weight, s.layers[from].query.weight);
            assert_eq!(t.layers[l].output.bias, s.layers[from].output.bias);
        }
        assert_eq!(t.embeddings.word, s.embeddings.word);
        assert_eq!(t.mlm.as_ref().unwrap().bias, s.mlm.as_ref().unwrap().bias);
        assert!(matches!(stack(&s, 1), Err(ExpandError::Shrink { .. })));
    }
}
