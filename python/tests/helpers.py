"""Tiny models and schedules for the tests.

``build_schedule`` writes a schedule by the same rule as the Rust side
(``crates/train/src/schedule.rs``) for models the tests make in Python; ``test_cross.py``
checks that it equals the file Rust writes for the same model and settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from bert2bert_torch.families import adapter_for
from bert2bert_torch.schedule import SAMPLER, SCHEDULE_FILE, SCHEDULE_FORMAT, SCHEDULE_VERSION, Schedule, parse

REPO = Path(__file__).resolve().parents[2]


def _no_decay(family: str, name: str) -> bool:
    if family == "bert":
        return name.endswith(".bias") or "LayerNorm" in name or name == "cls.predictions.bias"
    if family == "gpt2":
        return name.endswith(".bias") or ".ln_" in name
    return name.endswith(".bias") or "norm" in name


def _depths(layers: int, lb: int) -> list[int]:
    d = [k * lb for k in range(1, layers // lb + 1)]
    if d[-1] != layers:
        d.append(layers)
    return d


def build_schedule(
    model: torch.nn.Module,
    lb: Optional[int],
    stage1_steps: int,
    total: int,
    peak: float = 1e-3,
    warmup: int = 1,
    seed: int = 0,
    weight_decay: float = 0.01,
    clip: Optional[float] = 1.0,
    decay: str = "linear",
) -> dict:
    """A schedule as the Rust side would write it for ``model``."""
    a = adapter_for(model)
    family = model.config.model_type
    names = sorted(n for n, _ in model.named_parameters())
    layers = len(a.layers())
    subs = []
    if lb is not None:
        for depth in _depths(layers, lb):
            fb = max(depth - lb, 0)
            train = []
            for n in names:
                r = a.role(n)
                if r == "head" or (r.startswith("layer:") and fb <= int(r.split(":")[1]) < depth):
                    train.append(n)
            subs.append({"depth": depth, "frozen_below": fb, "trainable": train})
    return {
        "format": SCHEDULE_FORMAT,
        "version": SCHEDULE_VERSION,
        "family": family,
        "layers": layers,
        "lb": lb,
        "stage1_steps": stage1_steps if lb is not None else 0,
        "total_steps": total,
        "lr": {"peak": peak, "warmup": warmup, "total": total, "decay": decay},
        "adamw": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-6, "weight_decay": weight_decay},
        "max_grad_norm": clip,
        "seed": seed,
        "sampler": SAMPLER,
        "parameters": names,
        "no_weight_decay": [n for n in names if _no_decay(family, n)],
        "submodels": subs,
    }


def schedule_of(model: torch.nn.Module, **kw) -> Schedule:
    """:func:`build_schedule`, parsed."""
    return parse(build_schedule(model, **kw), Path("<test>"))


def tiny(family: str, layers: int = 3, vocab: int = 96, seed: int = 0, tied: bool = True, dropout: float = 0.0):
    """A seeded random model of ``family`` (hidden 32, 2 heads)."""
    import transformers as T

    torch.manual_seed(seed)
    if family == "bert":
        cfg = T.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=dropout,
                           attention_probs_dropout_prob=dropout, tie_word_embeddings=tied)
        m = T.BertForMaskedLM(cfg)
    elif family == "gpt2":
        cfg = T.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=layers, n_head=2, n_positions=64,
                           embd_pdrop=dropout, attn_pdrop=dropout, resid_pdrop=dropout, tie_word_embeddings=tied,
                           bos_token_id=0, eos_token_id=0)
        m = T.GPT2LMHeadModel(cfg)
    elif family == "llama":
        cfg = T.LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                            num_key_value_heads=1, intermediate_size=64, max_position_embeddings=64,
                            tie_word_embeddings=tied, attention_dropout=dropout)
        m = T.LlamaForCausalLM(cfg)
    else:
        raise ValueError(family)
    # Perturb LayerNorm/RMSNorm weights and biases away from 1 and 0, so every parameter matters.
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n.lower() or ".ln_" in n:
                p.add_(0.1 * torch.randn_like(p))
    return m.float()


def random_batch(family: str, vocab: int, b: int, s: int, seed: int) -> dict:
    """A seeded synthetic batch of the family's objective (numpy arrays)."""
    import numpy as np

    g = np.random.default_rng(seed)
    ids = g.integers(5, vocab, size=(b, s))
    if family == "bert":
        labels = np.full((b, s), -100)
        for r in range(b):
            pos = g.choice(s, size=max(1, s // 6), replace=False)
            labels[r, pos] = ids[r, pos]
            ids[r, pos] = 4
        return {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": np.ones_like(ids), "labels": labels}
    return {"input_ids": ids, "labels": g.integers(0, vocab, size=(b, s))}


def save_with_schedule(model: torch.nn.Module, tokenizer_dir: Optional[Path], dst: Path, **kw) -> Path:
    """Saves ``model`` (and the tokenizer files of ``tokenizer_dir``) with its schedule."""
    model.save_pretrained(dst, safe_serialization=True)
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(dst)
    (dst / SCHEDULE_FILE).write_text(json.dumps(build_schedule(model, **kw), indent=2) + "\n")
    return dst
