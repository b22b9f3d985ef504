"""Sub-model forward passes over Hugging Face models, one adapter per family.

Each adapter runs the embeddings, layers ``0..depth`` and the head of a ``transformers`` model
(``BertForMaskedLM``, ``GPT2LMHeadModel``, Llama-family ``*ForCausalLM``) with the same
modules and weights as the model's own ``forward``, so that stage 1 can run the frozen bottom
without gradient (no activations kept, no backward through it) and the tied output matrix
detached, as the candle trainer does (docs/training.md, "Two-stage pre-training").
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


def _tensor(out: object) -> torch.Tensor:
    # transformers 4.x layers return tuples, 5.x a tensor.
    return out[0] if isinstance(out, tuple) else out  # type: ignore[index,return-value]


def additive_mask(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where ``keep`` is true, the dtype's minimum elsewhere (transformers' convention)."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(
        ~keep, torch.finfo(dtype).min
    )


class Adapter:
    """How to run one family's model piece by piece."""

    family: str = ""
    causal: bool = True

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def layers(self) -> nn.ModuleList:
        """The transformer layers, bottom first."""
        raise NotImplementedError

    def embedding_weight(self) -> torch.Tensor:
        """The word-embedding matrix (tied to the output matrix when the head is tied)."""
        raise NotImplementedError

    def output_weight(self) -> torch.Tensor:
        """The output projection (V, D)."""
        raise NotImplementedError

    def role(self, name: str) -> str:
        """``embedding``, ``layer:<i>`` or ``head`` for a parameter name."""
        raise NotImplementedError

    def tied(self) -> bool:
        """Whether the output matrix is the word-embedding matrix."""
        return self.output_weight() is self.embedding_weight()

    def context(self, batch: dict[str, torch.Tensor]) -> dict[str, object]:
        """What every layer needs besides the hidden states (masks, rotary embeddings)."""
        raise NotImplementedError

    def embed(self, batch: dict[str, torch.Tensor], ctx: dict[str, object]) -> torch.Tensor:
        """Hidden states (B, S, D) entering layer 0."""
        raise NotImplementedError

    def layer(self, i: int, h: torch.Tensor, ctx: dict[str, object]) -> torch.Tensor:
        """Layer ``i`` applied to ``h``."""
        raise NotImplementedError

    def head_loss(
        self, h: torch.Tensor, batch: dict[str, torch.Tensor], detach_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum of cross-entropies over the predicted positions, and their count."""
        raise NotImplementedError

    def _output(self, detach: bool) -> torch.Tensor:
        w = self.output_weight()
        return w.detach() if detach else w


class BertAdapter(Adapter):
    """``BertForMaskedLM``: post-LN encoder; the decoder runs only at the masked positions."""

    family = "bert"
    causal = False

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        pred = model.cls.predictions
        if pred.decoder.bias is not pred.bias:
            # transformers 5 keeps an untied decoder's bias as a second parameter; BERT (and the
            # Rust side, and transformers 4) have one output bias, `cls.predictions.bias`.
            pred.decoder.bias = pred.bias

    def layers(self) -> nn.ModuleList:
        return self.model.bert.encoder.layer

    def embedding_weight(self) -> torch.Tensor:
        return self.model.bert.embeddings.word_embeddings.weight

    def output_weight(self) -> torch.Tensor:
        return self.model.cls.predictions.decoder.weight

    def role(self, name: str) -> str:
        if name.startswith("bert.embeddings."):
            return "embedding"
        if name.startswith("cls.predictions."):
            return "head"
        if name.startswith("bert.encoder.layer."):
            return "layer:" + name.split(".")[3]
        return "other"

    def context(self, batch: dict[str, torch.Tensor]) -> dict[str, object]:
        am = batch.get("attention_mask")
        if am is None or bool(am.all()):
            return {"mask": None}
        dtype = self.model.bert.embeddings.word_embeddings.weight.dtype
        return {"mask": additive_mask(am[:, None, None, :].bool(), dtype)}

    def embed(self, batch: dict[str, torch.Tensor], ctx: dict[str, object]) -> torch.Tensor:
        return self.model.bert.embeddings(
            input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids")
        )

    def layer(self, i: int, h: torch.Tensor, ctx: dict[str, object]) -> torch.Tensor:
        return _tensor(self.layers()[i](h, attention_mask=ctx["mask"]))

    def head_loss(
        self, h: torch.Tensor, batch: dict[str, torch.Tensor], detach_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch["labels"].reshape(-1)
        where = (labels != IGNORE_INDEX).nonzero().squeeze(1)
        x = h.reshape(-1, h.shape[-1]).index_select(0, where)
        pred = self.model.cls.predictions
        t = pred.transform(x)
        logits = F.linear(t, self._output(detach_output and self.tied()), pred.bias)
        target = labels.index_select(0, where)
        return F.cross_entropy(logits.float(), target, reduction="sum"), torch.tensor(
            where.numel(), device=h.device
        )


class Gpt2Adapter(Adapter):
    """``GPT2LMHeadModel``: pre-LN decoder, ``ln_f``, LM head at every position."""

    family = "gpt2"

    def layers(self) -> nn.ModuleList:
        return self.model.transformer.h

    def embedding_weight(self) -> torch.Tensor:
        return self.model.transformer.wte.weight

    def output_weight(self) -> torch.Tensor:
        return self.model.lm_head.weight

    def role(self, name: str) -> str:
        if name.startswith(("transformer.wte.", "transformer.wpe.")):
            return "embedding"
        if name.startswith("transformer.ln_f.") or name == "lm_head.weight":
            return "head"
        if name.startswith("transformer.h."):
            return "layer:" + name.split(".")[2]
        return "other"

    def context(self, batch: dict[str, torch.Tensor]) -> dict[str, object]:
        return {"mask": _causal_mask(self.model, batch)}

    def embed(self, batch: dict[str, torch.Tensor], ctx: dict[str, object]) -> torch.Tensor:
        t = self.model.transformer
        ids = batch["input_ids"]
        pos = torch.arange(ids.shape[1], device=ids.device)[None, :]
        return t.drop(t.wte(ids) + t.wpe(pos))

    def layer(self, i: int, h: torch.Tensor, ctx: dict[str, object]) -> torch.Tensor:
        return _tensor(self.layers()[i](h, attention_mask=ctx["mask"]))

    def head_loss(
        self, h: torch.Tensor, batch: dict[str, torch.Tensor], detach_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.model.transformer.ln_f(h)
        return _lm_loss(h, self._output(detach_output and self.tied()), batch)


class LlamaAdapter(Adapter):
    """Llama-family ``*ForCausalLM`` (Llama, Qwen2, Qwen3, Mistral): RMSNorm pre-norm decoder,
    rotary positions, ``model.norm`` and ``lm_head``."""

    family = "llama"

    def layers(self) -> nn.ModuleList:
        return self.model.model.layers

    def embedding_weight(self) -> torch.Tensor:
        return self.model.model.embed_tokens.weight

    def output_weight(self) -> torch.Tensor:
        return self.model.lm_head.weight

    def role(self, name: str) -> str:
        if name.startswith("model.embed_tokens."):
            return "embedding"
        if name.startswith("model.norm.") or name == "lm_head.weight":
            return "head"
        if name.startswith("model.layers."):
            return "layer:" + name.split(".")[2]
        return "other"

    def context(self, batch: dict[str, torch.Tensor]) -> dict[str, object]:
        ids = batch["input_ids"]
        pos = torch.arange(ids.shape[1], device=ids.device)[None, :].expand(ids.shape[0], -1)
        return {"mask": _causal_mask(self.model, batch), "position_ids": pos}

    def embed(self, batch: dict[str, torch.Tensor], ctx: dict[str, object]) -> torch.Tensor:
        h = self.model.model.embed_tokens(batch["input_ids"])
        # Rotary tables have no parameters: computed once per step, outside any gradient.
        with torch.no_grad():
            ctx["position_embeddings"] = self.model.model.rotary_emb(h, ctx["position_ids"])
        return h

    def layer(self, i: int, h: torch.Tensor, ctx: dict[str, object]) -> torch.Tensor:
        return _tensor(
            self.layers()[i](
                h,
                attention_mask=ctx["mask"],
                position_ids=ctx["position_ids"],
                position_embeddings=ctx["position_embeddings"],
            )
        )

    def head_loss(
        self, h: torch.Tensor, batch: dict[str, torch.Tensor], detach_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.model.model.norm(h)
        return _lm_loss(h, self._output(detach_output and self.tied()), batch)


def _causal_mask(model: nn.Module, batch: dict[str, torch.Tensor]) -> Optional[torch.Tensor]:
    ids = batch["input_ids"]
    am = batch.get("attention_mask")
    impl = getattr(model.config, "_attn_implementation", "eager")
    if (am is None or bool(am.all())) and impl == "sdpa":
        # SDPA applies causality itself when given no mask (and may pick a fused kernel).
        return None
    s = ids.shape[1]
    keep = torch.ones(s, s, dtype=torch.bool, device=ids.device).tril()[None, None]
    if am is not None:
        keep = keep & am[:, None, None, :].bool()
    return additive_mask(keep, next(model.parameters()).dtype)


def _lm_loss(
    h: torch.Tensor, weight: torch.Tensor, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    labels = batch["labels"].reshape(-1)
    logits = F.linear(h.reshape(-1, h.shape[-1]), weight)
    n = (labels != IGNORE_INDEX).sum()
    return F.cross_entropy(logits.float(), labels, reduction="sum", ignore_index=IGNORE_INDEX), n


LLAMA_TYPES = ("llama", "qwen2", "qwen3", "mistral")


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter of ``model``'s family (``config.model_type``)."""
    t = model.config.model_type
    if t == "bert":
        return BertAdapter(model)
    if t == "gpt2":
        return Gpt2Adapter(model)
    if t in LLAMA_TYPES:
        return LlamaAdapter(model)
    raise ValueError(f"unsupported model_type {t!r} (supported: bert, gpt2, {', '.join(LLAMA_TYPES)})")


class SubModelLM(nn.Module):
    """A Hugging Face LM whose forward runs one sub-model and returns the summed loss.

    ``forward(batch, depth, frozen_below, train_embeddings)`` runs the embeddings and layers
    ``0..depth`` and the head; the embeddings (unless ``train_embeddings``) and layers
    ``0..frozen_below`` run without gradient, and a tied output matrix is used detached when the
    embeddings are frozen. This is the module a distributed engine wraps.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.adapter = adapter_for(model)

    def forward(
        self,
        batch: dict[str, torch.Tensor],
        depth: int,
        frozen_below: int,
        train_embeddings: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.adapter
        grad = torch.is_grad_enabled()
        ctx = a.context(batch)
        with torch.set_grad_enabled(grad and train_embeddings):
            h = a.embed(batch, ctx)
        for i in range(depth):
            with torch.set_grad_enabled(grad and i >= frozen_below):
                h = a.layer(i, h, ctx)
        return a.head_loss(h, batch, detach_output=not train_embeddings)
