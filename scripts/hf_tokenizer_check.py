#!/usr/bin/env python3
"""Check the shipped GPT-2 byte-level BPE tokenizer in Hugging Face transformers.

Not part of CI (CI has no transformers); run where transformers is installed:

    python3 scripts/hf_tokenizer_check.py assets/tokenizer-gpt2 assets/corpus/valid.txt.gz \
        [--ids IDS.json] [--json OUT.json]

Loads the folder with AutoTokenizer (the fast tokenizer, from tokenizer.json) and with the slow
GPT2Tokenizer (from vocab.json + merges.txt alone), encodes every line of the corpus file with
both, and requires: the same ids from both, `<|endoftext|>` as bos/eos with id 0, a vocabulary
of the size the config says, and decoding that gives every line back byte for byte. With --ids
(a JSON object {"lines": [...], "ids": [[...], ...]} written by this project's Rust tokenizer),
the ids must also equal the Rust ones. Exit code 1 on any mismatch.
"""
import argparse
import gzip
import json
import sys

import transformers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("corpus")
    ap.add_argument("--ids")
    ap.add_argument("--json")
    ap.add_argument("--max-lines", type=int, default=2000)
    args = ap.parse_args()
    fast = transformers.AutoTokenizer.from_pretrained(args.folder)
    slow = transformers.GPT2Tokenizer.from_pretrained(args.folder)
    opener = gzip.open if args.corpus.endswith(".gz") else open
    with opener(args.corpus, "rt", encoding="utf-8") as f:
        lines = [l.rstrip("\n") for l in f if l.strip()][: args.max_lines]
    problems = []
    if fast.eos_token != "<|endoftext|>" or fast.eos_token_id != 0 or fast.bos_token_id != 0:
        problems.append(f"eos/bos: {fast.eos_token!r} id {fast.eos_token_id}, bos id {fast.bos_token_id}")
    mismatched = 0
    not_round_trip = 0
    tokens = 0
    for line in lines:
        a = fast.encode(line)
        b = slow.encode(line)
        tokens += len(a)
        if a != b:
            mismatched += 1
            if mismatched <= 3:
                problems.append(f"fast != slow on {line[:60]!r}: {a[:10]} vs {b[:10]}")
        if fast.decode(a) != line:
            not_round_trip += 1
            if not_round_trip <= 3:
                problems.append(f"decode(encode(x)) != x for {line[:60]!r}")
    rust = None
    if args.ids:
        with open(args.ids) as f:
            ref = json.load(f)
        bad = [i for i, (l, ids) in enumerate(zip(ref["lines"], ref["ids"])) if fast.encode(l) != ids]
        rust = {"lines": len(ref["lines"]), "mismatched": len(bad)}
        if bad:
            problems.append(f"{len(bad)} of {len(ref['lines'])} lines differ from the Rust ids (first: line {bad[0]})")
    result = {
        "transformers": transformers.__version__,
        "fast_class": type(fast).__name__,
        "slow_class": type(slow).__name__,
        "vocab_size_fast": len(fast),
        "vocab_size_slow": len(slow),
        "lines": len(lines),
        "tokens": tokens,
        "fast_vs_slow_mismatched_lines": mismatched,
        "round_trip_failures": not_round_trip,
        "rust_ids": rust,
        "problems": problems,
        "ok": not problems and len(fast) == len(slow),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
