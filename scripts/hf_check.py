#!/usr/bin/env python3
"""Load grown checkpoints in Hugging Face transformers and compare them with their sources.

Not part of CI (CI has no PyTorch); run where torch and transformers are installed:

    python3 scripts/hf_check.py SOURCE_DIR GROWN_DIR [GROWN_DIR ...] [--json OUT.json]

For each grown folder: loads it with the class its config names (BertForPreTraining,
BertForMaskedLM, BertModel, GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM,
Qwen2ForCausalLM, Qwen3ForCausalLM) with output_loading_info=True, requires no missing,
unexpected or mismatched keys, runs source and grown on the same seeded inputs, and reports the
largest absolute and relative difference of the logits (relative: max|a-b| / max|a|).
Exit code 1 if any folder fails to load cleanly.
"""
import argparse
import json
import sys

import torch
import transformers


def load(path):
    cfg = transformers.AutoConfig.from_pretrained(path)
    arch = (cfg.architectures or ["BertModel"])[0]
    cls = getattr(transformers, arch)
    kwargs = {"attn_implementation": "eager"} if arch.endswith("ForCausalLM") else {}
    # float32 whatever the stored dtype: the comparison is of the construction, not of bf16.
    model, info = cls.from_pretrained(path, output_loading_info=True, dtype=torch.float32, **kwargs)
    model.eval()
    return model, info, arch


def causal(arch):
    return arch.startswith("GPT2") or arch.endswith("ForCausalLM")


def outputs(model, arch, ids, mask):
    with torch.no_grad():
        if causal(arch):
            out = model(input_ids=ids)
            return {"logits": out.logits}
        out = model(input_ids=ids, attention_mask=mask)
        res = {}
        for name in ("prediction_logits", "logits", "last_hidden_state"):
            if hasattr(out, name) and getattr(out, name) is not None:
                res["mlm_logits" if name in ("prediction_logits", "logits") else name] = getattr(out, name)
        return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("source")
    ap.add_argument("grown", nargs="+")
    ap.add_argument("--json")
    ap.add_argument("--seq-len", type=int, default=24)
    args = ap.parse_args()
    torch.manual_seed(0)
    src, src_info, src_arch = load(args.source)
    vocab = src.config.vocab_size
    ids = torch.randint(0, vocab, (3, args.seq_len))
    mask = torch.ones_like(ids)
    mask[1, args.seq_len // 2 :] = 0
    ref = outputs(src, src_arch, ids, mask)
    results = {"transformers": transformers.__version__, "torch": torch.__version__, "source": args.source, "grown": []}
    ok = True
    for g in args.grown:
        model, info, arch = load(g)
        clean = not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
        ok &= clean
        out = outputs(model, arch, ids, mask)
        diffs = {}
        for k, a in ref.items():
            if k in out and k != "last_hidden_state":
                b = out[k]
                if a.shape == b.shape:
                    m = (mask.unsqueeze(-1) > 0) if not causal(arch) else torch.ones_like(a, dtype=torch.bool)
                    d = ((a - b).abs() * m).max().item()
                    diffs[k] = {"max_abs": d, "max_rel": d / max((a.abs() * m).max().item(), 1e-30)}
        results["grown"].append({
            "path": g,
            "class": arch,
            "parameters": sum(p.numel() for p in model.parameters()),
            "missing_keys": list(info.get("missing_keys", [])),
            "unexpected_keys": list(info.get("unexpected_keys", [])),
            "mismatched_keys": [str(x) for x in info.get("mismatched_keys", [])],
            "loads_cleanly": clean,
            "diff_vs_source": diffs,
        })
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
