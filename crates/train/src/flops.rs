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

use crate::layers::Scope;
use bert2bert_checkpoint::{BertConfig, Gpt2Config};

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

/// Forward FLOPs of GPT-2's LM head over `tokens` positions: one (D x V) product per position
/// (every position predicts its next token; there is no transform layer).
pub fn gpt2_head_forward(tokens: u64, hidden: u64, vocab: u64) -> u64 {
    2 * tokens * hidden * vocab
}

/// FLOPs of one GPT-2 training step (forward + backward) of sub-model `scope` on a `batch` x
/// `seq` batch.
///
/// A block costs what a BERT layer does (the fused `c_attn` is the three Q, K, V products;
/// the causal mask does not shrink the computed score matrices). The head runs its backward
/// even when the tied `wte` is frozen (stage 1): the trained blocks need the gradient with
/// respect to the hidden states, and candle's matmul backward computes both operands'.
pub fn gpt2_train_step(cfg: &Gpt2Config, batch: usize, seq: usize, scope: Scope) -> u64 {
    let (b, s, d) = (batch as u64, seq as u64, cfg.n_embd as u64);
    let layer = layer_forward(b, s, d, cfg.inner_dim() as u64);
    let head = gpt2_head_forward(b * s, d, cfg.vocab_size as u64);
    let frozen = scope.frozen_below as u64;
    let trained = scope.trained_layers() as u64;
    frozen * layer + 3 * (trained * layer + head)
}

/// FLOPs of one forward pass of the whole GPT-2 model (evaluation).
pub fn gpt2_forward(cfg: &Gpt2Config, batch: usize, seq: usize) -> u64 {
    let (b, s, d) = (batch as u64, seq as u64, cfg.n_embd as u64);
    cfg.n_layer as u64 * layer_forward(b, s, d, cfg.inner_dim() as u64)
        + gpt2_head_forward(b * s, d, cfg.vocab_size as u64)
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

    /// Hand count for GPT-2 with B = 1, S = 2, D = 4 (2 heads), F = 16 (n_inner), V = 10,
    /// 2 blocks.
    #[test]
    fn gpt2_tiny_configuration_matches_a_hand_count() {
        let raw = serde_json::json!({
            "model_type": "gpt2", "vocab_size": 10, "n_positions": 8, "n_embd": 4,
            "n_layer": 2, "n_head": 2, "n_inner": 16,
        });
        let serde_json::Value::Object(raw) = raw else {
            unreachable!()
        };
        let cfg = Gpt2Config::from_raw(std::path::Path::new("config.json"), raw).unwrap();
        // One block, forward:
        //   c_attn (2 x 4)(4 x 12) = 2*2*4*12 = 192, c_proj (2 x 4)(4 x 4) = 64    = 256
        //   c_fc (2 x 4)(4 x 16) = 256, mlp c_proj (2 x 16)(16 x 4) = 256          = 512
        //   scores and context, per head (2 x 2)(2 x 2) = 16 each, 2 heads        =  64
        //   total                                                                 = 832
        assert_eq!(layer_forward(1, 2, 4, 16), 832);
        // Tied head at both positions: (2 x 4)(4 x 10) = 160.
        assert_eq!(gpt2_head_forward(2, 4, 10), 160);
        // Full model: 3 * (2 * 832 + 160) = 5472; forward only: 2 * 832 + 160 = 1824.
        assert_eq!(gpt2_train_step(&cfg, 1, 2, Scope::full(2)), 5472);
        assert_eq!(gpt2_forward(&cfg, 1, 2), 1824);
        // Stage 1 on the full depth training the top block: 832 + 3 * (832 + 160) = 3808.
        assert_eq!(gpt2_train_step(&cfg, 1, 2, Scope::stage1(2, 1)), 3808);
    }
}
