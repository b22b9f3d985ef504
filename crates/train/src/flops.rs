//! Analytic training FLOPs of a BERT MLM step (the paper's cost measure, spec section 9).
//!
//! Only matrix products are counted, 2 m n k for an (m, k) x (k, n) product; LayerNorm, softmax,
//! GELU, embedding lookups and the optimizer are left out (the usual convention: they are a few
//! percent at these widths). Attention's score and context products are included. The vocabulary
//! projection is counted only at the masked positions, which is all this crate computes.
//!
//! Backward costs twice the forward (gradient with respect to the input and to the weight) for
//! every product the backward pass runs through: the trained top of the sub-model and the head.
//! The frozen bottom of a stage-1 sub-model costs its forward only. See docs/training.md.

use crate::bert::Scope;
use bert2bert_checkpoint::BertConfig;

/// Forward FLOPs of one encoder layer over `batch` sequences of `seq` tokens.
pub fn layer_forward(batch: u64, seq: u64, hidden: u64, ffn: u64) -> u64 {
    let tokens = batch * seq;
    // Q, K, V and the output projection: four (tokens, D) x (D, D) products.
    let projections = 4 * 2 * tokens * hidden * hidden;
    // FFN: (tokens, D) x (D, F) and (tokens, F) x (F, D).
    let ffn = 2 * 2 * tokens * hidden * ffn;
    // Per sequence and head: scores (S, dh) x (dh, S) and context (S, S) x (S, dh); summed over
    // heads dh * heads = D.
    let attention = 2 * 2 * batch * seq * seq * hidden;
    projections + ffn + attention
}

/// Forward FLOPs of the MLM head at `masked` positions: transform (D x D) and decoder (D x V).
pub fn head_forward(masked: u64, hidden: u64, vocab: u64) -> u64 {
    2 * masked * hidden * hidden + 2 * masked * hidden * vocab
}

/// FLOPs of one training step (forward + backward) of sub-model `scope` on a `batch` x `seq`
/// batch with `masked` predicted positions.
pub fn train_step(cfg: &BertConfig, batch: usize, seq: usize, masked: usize, scope: Scope) -> u64 {
    let layer = layer_forward(
        batch as u64,
        seq as u64,
        cfg.hidden_size as u64,
        cfg.intermediate_size as u64,
    );
    let head = head_forward(masked as u64, cfg.hidden_size as u64, cfg.vocab_size as u64);
    let frozen = scope.frozen_below as u64;
    let trained = scope.trained_layers() as u64;
    frozen * layer + 3 * (trained * layer + head)
}

/// FLOPs of one forward pass of the whole model (evaluation; not counted as training compute).
pub fn forward(cfg: &BertConfig, batch: usize, seq: usize, masked: usize) -> u64 {
    let layer = layer_forward(
        batch as u64,
        seq as u64,
        cfg.hidden_size as u64,
        cfg.intermediate_size as u64,
    );
    cfg.num_hidden_layers as u64 * layer
        + head_forward(masked as u64, cfg.hidden_size as u64, cfg.vocab_size as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand count for B = 1, S = 2, D = 4 (2 heads of 2), F = 8, V = 10, 3 masked positions.
    #[test]
    fn tiny_configuration_matches_a_hand_count() {
        let cfg = BertConfig::new(10, 4, 2, 2, 8, 16);
        // One layer, forward:
        //   Q, K, V, O: 4 products (2 x 4)(4 x 4): 4 * 2*2*4*4        = 256
        //   W1 (2 x 4)(4 x 8) and W2 (2 x 8)(8 x 4): 2 * 2*2*4*8     = 256
        //   scores per head (2 x 2)(2 x 2) = 2*2*2*2 = 16, 2 heads   =  32
        //   context per head (2 x 2)(2 x 2) = 16, 2 heads            =  32
        //   total                                                    = 576
        assert_eq!(layer_forward(1, 2, 4, 8), 576);
        // Head at 3 positions: transform (3 x 4)(4 x 4) = 96, decoder (3 x 4)(4 x 10) = 240.
        assert_eq!(head_forward(3, 4, 10), 336);
        // Full model, 2 layers: 3 * (2 * 576 + 336) = 4464.
        assert_eq!(train_step(&cfg, 1, 2, 3, Scope::full(2)), 4464);
        // Stage 1, sub-model of 2 layers training its top 1: 576 + 3 * (576 + 336) = 3312.
        assert_eq!(train_step(&cfg, 1, 2, 3, Scope::stage1(2, 1)), 3312);
        // Stage 1, bottom sub-model of 1 layer (trains that layer and the head): 3 * 912.
        assert_eq!(train_step(&cfg, 1, 2, 3, Scope::stage1(1, 1)), 2736);
        // Evaluation forward: 2 * 576 + 336.
        assert_eq!(forward(&cfg, 1, 2, 3), 1488);
    }

    #[test]
    fn scales_linearly_in_batch_and_quadratically_in_sequence_for_attention() {
        let one = layer_forward(1, 128, 128, 512);
        assert_eq!(layer_forward(32, 128, 128, 512), 32 * one);
        let attn = |s: u64| layer_forward(1, s, 128, 512) - s * (8 * 128 * 128 + 4 * 128 * 512);
        assert_eq!(attn(256), 4 * attn(128));
    }
}
