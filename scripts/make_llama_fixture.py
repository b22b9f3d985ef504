#!/usr/bin/env python3
"""Writes testdata/hf-llama3-tiny: a tiny LlamaForCausalLM that exercises what the three shared
Llama-family fixtures do not: llama3 RoPE scaling, multi-query attention (1 KV head), q/k/v/o
and MLP biases, tied embeddings, and a transformers 4.x-style config (`rope_theta` and
`rope_scaling` at the top level instead of 5.x's `rope_parameters`).

    python3 scripts/make_llama_fixture.py testdata/hf-llama3-tiny

expected.json holds the inputs and what transformers computed (f32, eager attention).
"""
import json
import sys

import torch
import transformers


def main(out: str) -> None:
    torch.manual_seed(7)
    cfg = transformers.LlamaConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        attention_bias=True,
        mlp_bias=True,
        tie_word_embeddings=True,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    )
    cfg._attn_implementation = "eager"
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model.save_pretrained(out)
    # Rewrite the config as transformers 4.x wrote it; 5.x reads both.
    path = f"{out}/config.json"
    c = json.load(open(path))
    rp = c.pop("rope_parameters")
    c["rope_theta"] = rp.pop("rope_theta")
    c["rope_scaling"] = rp
    json.dump(c, open(path, "w"), indent=2, sort_keys=True)
    reloaded = transformers.LlamaForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    ids = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        o = reloaded(input_ids=ids, output_hidden_states=True)
        o2 = model(input_ids=ids)
    assert torch.equal(o.logits, o2.logits), "the 4.x-style config must give the same model"
    exp = {
        "made_by": f"transformers {transformers.__version__}, torch {torch.__version__}",
        "input_ids": ids.tolist(),
        "last_hidden_state": o.hidden_states[-1].tolist(),
        "logits": o.logits.tolist(),
    }
    json.dump(exp, open(f"{out}/expected.json", "w"))


if __name__ == "__main__":
    main(sys.argv[1])
