"""Plain-text training data: token streams and seeded, resumable batches.

Mirrors the Rust data pipeline (docs/data.md) in recipe, not bit for bit: documents are
concatenated into one token stream; BERT packs ``[CLS] chunk [SEP]`` sequences and masks a fixed
15% of each sequence's ordinary tokens 80/10/10; decoders cut windows of ``seq_len + 1`` tokens
with stride ``seq_len`` over documents each followed by the end-of-text token. Every batch is a
pure function of (seed, step), so resuming is setting the step, and every rank can build the same
global batch and take its own rows.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

IGNORE_INDEX = -100
Batch = dict[str, np.ndarray]


def read_documents(paths: Iterable[str | Path]) -> list[str]:
    """Documents of plain-text files (``.gz`` read as gzip): each file is split at lines that
    hold a lone form feed (the bundled corpus's separator); empty documents are dropped."""
    docs: list[str] = []
    for p in paths:
        p = Path(p)
        raw = p.read_bytes()
        if p.suffix == ".gz":
            raw = gzip.decompress(raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{p}: not UTF-8 text ({e})") from None
        parts = text.replace("\r\n", "\n").split("\n\f\n")
        docs.extend(d for d in parts if d.strip("\f\n "))
    if not docs:
        raise ValueError("no text in " + ", ".join(str(p) for p in paths))
    return docs


def token_stream(tokenizer, docs: Sequence[str], end_of_text: Optional[int]) -> np.ndarray:
    """Every document tokenized without special tokens and concatenated (each followed by
    ``end_of_text`` when given: the decoders' document separator)."""
    # Whole documents exceed model_max_length by design; packing cuts them afterwards.
    tokenizer.model_max_length = 1 << 62
    ids = tokenizer(list(docs), add_special_tokens=False)["input_ids"]
    parts = []
    for d in ids:
        parts.append(np.asarray(d, dtype=np.int64))
        if end_of_text is not None:
            parts.append(np.asarray([end_of_text], dtype=np.int64))
    return np.concatenate(parts)


class _Order:
    """Seeded per-epoch permutations of ``n`` items (slot ``k`` -> item)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._cache: dict[int, np.ndarray] = {}

    def items(self, slots: np.ndarray) -> np.ndarray:
        out = np.empty_like(slots)
        for i, k in enumerate(slots):
            epoch = int(k) // self.n
            perm = self._cache.get(epoch)
            if perm is None:
                perm = np.random.default_rng([self.seed, 1, epoch]).permutation(self.n)
                self._cache = {epoch: perm}
            out[i] = perm[int(k) % self.n]
        return out


@dataclass
class MlmSpecials:
    """Token ids the MLM recipe needs."""

    cls: int
    sep: int
    mask: int
    specials: tuple[int, ...]

    @staticmethod
    def of(tokenizer) -> "MlmSpecials":
        """The ids of ``tokenizer`` (a BERT tokenizer: [CLS], [SEP], [MASK])."""
        for k in ("cls_token_id", "sep_token_id", "mask_token_id"):
            if getattr(tokenizer, k, None) is None:
                raise ValueError(f"the tokenizer has no {k.replace('_id', '')}: not a masked-LM tokenizer")
        return MlmSpecials(
            tokenizer.cls_token_id,
            tokenizer.sep_token_id,
            tokenizer.mask_token_id,
            tuple(sorted(set(tokenizer.all_special_ids))),
        )


def _mask_row(ids: np.ndarray, labels: np.ndarray, rng: np.random.Generator, sp: MlmSpecials, ordinary: np.ndarray) -> None:
    maskable = np.nonzero(~np.isin(ids, sp.specials))[0]
    if maskable.size == 0:
        return
    k = max(1, math.floor(0.15 * maskable.size + 0.5))
    chosen = np.sort(rng.choice(maskable, size=k, replace=False))
    labels[chosen] = ids[chosen]
    r = rng.random(k)
    ids[chosen[r < 0.8]] = sp.mask
    rand = chosen[(r >= 0.8) & (r < 0.9)]
    ids[rand] = rng.choice(ordinary, size=rand.size)


def _ordinary(vocab: int, sp: MlmSpecials) -> np.ndarray:
    ids = np.arange(vocab, dtype=np.int64)
    return ids[~np.isin(ids, sp.specials)]


class MlmBatches:
    """Masked-LM batches over one stream: ``batch(step)`` is a pure function of (seed, step)."""

    def __init__(self, stream: np.ndarray, seq_len: int, batch_size: int, vocab: int, sp: MlmSpecials, seed: int):
        if seq_len < 3:
            raise ValueError("seq_len must be at least 3 ([CLS] token [SEP])")
        self.body = seq_len - 2
        self.n = len(stream) // self.body
        if self.n == 0:
            raise ValueError(f"a stream of {len(stream)} tokens holds no sequence of {seq_len}")
        self.stream, self.seq_len, self.batch_size = stream, seq_len, batch_size
        self.vocab, self.sp, self.seed = vocab, sp, seed
        self.order = _Order(self.n, seed)
        self.ordinary = _ordinary(vocab, sp)

    def _row(self, chunk: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        body = self.stream[chunk * self.body : (chunk + 1) * self.body]
        ids = np.concatenate([[self.sp.cls], body, [self.sp.sep]]).astype(np.int64)
        labels = np.full(self.seq_len, IGNORE_INDEX, dtype=np.int64)
        _mask_row(ids, labels, rng, self.sp, self.ordinary)
        return ids, labels

    def batch(self, step: int) -> Batch:
        """The global batch of step ``step``."""
        slots = step * self.batch_size + np.arange(self.batch_size)
        rows = [self._row(int(c), np.random.default_rng([self.seed, 2, int(k)])) for k, c in zip(slots, self.order.items(slots))]
        return _mlm_batch(rows, self.seq_len)

    def steps_per_epoch(self) -> float:
        return self.n / self.batch_size


def _mlm_batch(rows: list[tuple[np.ndarray, np.ndarray]], seq_len: int) -> Batch:
    ids = np.stack([r[0] for r in rows])
    return {
        "input_ids": ids,
        "token_type_ids": np.zeros_like(ids),
        "attention_mask": np.ones_like(ids),
        "labels": np.stack([r[1] for r in rows]),
    }


def mlm_eval_batches(stream: np.ndarray, seq_len: int, vocab: int, sp: MlmSpecials, n: int, batch_size: int = 32) -> list[Batch]:
    """A fixed held-out set: ``n`` sequences spread evenly over ``stream``, fixed masks."""
    body = seq_len - 2
    avail = len(stream) // body
    if n <= 0 or n > avail:
        raise ValueError(f"{n} held-out sequences asked, the stream holds {avail} of {seq_len}")
    b = MlmBatches(stream, seq_len, 1, vocab, sp, 0)
    rows = [b._row(i * avail // n, np.random.default_rng([0, 3, i])) for i in range(n)]
    return [_mlm_batch(rows[i : i + batch_size], seq_len) for i in range(0, n, batch_size)]


class CausalBatches:
    """Next-token batches: windows of ``seq_len + 1`` tokens with stride ``seq_len``."""

    def __init__(self, stream: np.ndarray, seq_len: int, batch_size: int, seed: int):
        self.n = (len(stream) - 1) // seq_len
        if self.n <= 0:
            raise ValueError(f"a stream of {len(stream)} tokens holds no window of {seq_len + 1}")
        self.stream, self.seq_len, self.batch_size, self.seed = stream, seq_len, batch_size, seed
        self.order = _Order(self.n, seed)

    def windows(self, idx: Iterable[int]) -> Batch:
        w = np.stack([self.stream[i * self.seq_len : i * self.seq_len + self.seq_len + 1] for i in idx])
        return {"input_ids": w[:, :-1].copy(), "labels": w[:, 1:].copy()}

    def batch(self, step: int) -> Batch:
        """The global batch of step ``step``."""
        slots = step * self.batch_size + np.arange(self.batch_size)
        return self.windows(int(i) for i in self.order.items(slots))

    def steps_per_epoch(self) -> float:
        return self.n / self.batch_size


def causal_eval_batches(stream: np.ndarray, seq_len: int, n: int, batch_size: int = 32) -> list[Batch]:
    """A fixed held-out set: ``n`` windows spread evenly over ``stream``."""
    c = CausalBatches(stream, seq_len, 1, 0)
    if n <= 0 or n > c.n:
        raise ValueError(f"{n} held-out windows asked, the stream holds {c.n} of {seq_len + 1}")
    idx = [i * c.n // n for i in range(n)]
    return [c.windows(idx[i : i + batch_size]) for i in range(0, n, batch_size)]


def rows_of(batch: Batch, rank: int, world: int) -> Batch:
    """This rank's rows of a global batch (the batch size must be divisible by ``world``)."""
    b = next(iter(batch.values())).shape[0]
    if b % world:
        raise ValueError(f"global batch of {b} does not split over {world} processes")
    per = b // world
    return {k: v[rank * per : (rank + 1) * per] for k, v in batch.items()}


def predicted(batch: Batch) -> int:
    """Positions whose token is predicted."""
    return int((batch["labels"] != IGNORE_INDEX).sum())
