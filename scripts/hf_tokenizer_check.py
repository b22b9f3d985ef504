#!/usr/bin/env python3
"""Check the shipped GPT-2 byte-level BPE tokenizer in Hugging Face transformers.

Not part of CI (CI has no transformers); run where transformers is installed:

    python3 scripts/hf_tokenizer_check.py assets/tokenizer-gpt2 assets/corpus/valid.txt.gz \
        [--ids IDS.json] [--json OUT.json]

Loads the folder with AutoTokenizer (from tokenizer.json), with GPT2Tokenizer, and with
GPT2TokenizerFast from a copy of the folder that holds only vocab.json, merges.txt and the two
config files (so the BPE files alone define it), encodes every line of the corpus file with
each, and requires: the same ids from all, `<|endoftext|>` as bos/eos with id 0, the same
vocabulary size, and decoding that gives every line back byte for byte. (In transformers 5,
GPT2Tokenizer and GPT2TokenizerFast are both backed by the `tokenizers` library.) With --ids
(a JSON object {"lines": [...], "ids": [[...], ...]} written by this project's Rust tokenizer),
the ids must also equal the Rust ones. Exit code 1 on any mismatch.
"""
import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile

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
    files_only = tempfile.mkdtemp()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(args.folder, name), files_only)
    from_files = transformers.GPT2TokenizerFast.from_pretrained(files_only)
    opener = gzip.open if args.corpus.endswith(".gz") else open
    with opener(args.corpus, "rt", encoding="utf-8") as f:
        lines = [l.rstrip("\n") for l in f if l.strip()][: args.max_lines]
    problems = []
    if fast.eos_token != "<|endoftext|>" or fast.eos_token_id != 0 or fast.bos_token_id != 0:
        problems.append(f"eos/bos: {fast.eos_token!r} id {fast.eos_token_id}, bos id {fast.bos_token_id}")
    mismatched = 0
    files_mismatched = 0
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
        c = from_files.encode(line)
        if a != c:
            files_mismatched += 1
            if files_mismatched <= 3:
                problems.append(f"tokenizer.json != vocab.json+merges.txt on {line[:60]!r}: {a[:10]} vs {c[:10]}")
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
        "files_only_class": type(from_files).__name__,
        "vocab_size_files_only": len(from_files),
        "files_only_vs_tokenizer_json_mismatched_lines": files_mismatched,
        "vocab_size_fast": len(fast),
        "vocab_size_slow": len(slow),
        "lines": len(lines),
        "tokens": tokens,
        "fast_vs_slow_mismatched_lines": mismatched,
        "round_trip_failures": not_round_trip,
        "rust_ids": rust,
        "problems": problems,
        "ok": not problems and len(fast) == len(slow) == len(from_files),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
