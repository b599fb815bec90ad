"""Optimisation pieces registered in mmengine: a guarded optimizer wrapper, param groups.

:class:`GuardedOptimWrapper` is mmengine's ``OptimWrapper`` plus three things the paper's stability
argument needs measured (docs/method.md §5.1):

* precision by config: ``fp32``; ``bf16`` autocast; ``fp16`` autocast with dynamic loss scaling
  (``torch.amp.GradScaler``; works on CPU and GPU, unlike mmengine's GPU-only ``AmpOptimWrapper``);
* the total gradient norm *before* clipping is always computed and logged (``train/grad_norm``),
  clipping only when ``max_norm`` is set;
* a step whose loss or gradient is not finite is skipped (no parameter update) and counted
  (``train/nonfinite_steps``; under fp16 the scaler also lowers its scale).

:class:`BabelRSOptimWrapperConstructor` builds AdamW parameter groups: no weight decay on 1-D
parameters and biases, an encoder learning-rate factor, and optional layer-wise lr decay
(``lr x decay^(L + 1 - layer)``, layer 0 = stem / patch embedding, ``k`` = block ``k``), as the
reference InternViT-Adapter constructor does for ViT encoders.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from typing import Any

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS
from torch import nn

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@OPTIM_WRAPPERS.register_module()
class GuardedOptimWrapper(OptimWrapper):
    """OptimWrapper with fp32 / bf16 / fp16, pre-clip norm logging, non-finite step skipping."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        precision: str = "fp32",
        device_type: str = "cpu",
        max_norm: float | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("clip_grad", None)  # clipping is ours (pre-clip norm always logged)
        super().__init__(optimizer, **kwargs)
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision {precision!r}: expected fp32 | bf16 | fp16")
        self.precision = precision
        self.device_type = device_type
        self.max_norm = max_norm
        self.scaler = torch.amp.GradScaler(device_type) if precision == "fp16" else None
        self.nonfinite_steps = 0
        self.last_grad_norm = float("nan")

    @contextmanager
    def optim_context(self, model: nn.Module):
        with super().optim_context(model):
            if self.precision == "fp32":
                yield
            else:
                with torch.autocast(self.device_type, dtype=_DTYPES[self.precision]):
                    yield

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        loss.backward(**kwargs)
        self._inner_count += 1

    def step(self, **kwargs: Any) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        max_norm = self.max_norm if self.max_norm is not None else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm)) if params else 0.0
        self.last_grad_norm = norm
        finite = math.isfinite(norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer, **kwargs)  # skips the update on inf / nan
            self.scaler.update()
        elif finite:
            self.optimizer.step(**kwargs)
        self.nonfinite_steps += int(not finite)
        self.message_hub.update_scalar("train/grad_norm", norm)
        self.message_hub.update_scalar("train/nonfinite_steps", self.nonfinite_steps)
        if self.scaler is not None:
            self.message_hub.update_scalar("train/loss_scale", float(self.scaler.get_scale()))

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["nonfinite_steps"] = self.nonfinite_steps
        if self.scaler is not None:
            state["loss_scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        self.nonfinite_steps = int(state_dict.pop("nonfinite_steps", 0))
        scaler_state = state_dict.pop("loss_scaler", None)
        if self.scaler is not None and scaler_state:
            self.scaler.load_state_dict(scaler_state)
        super().load_state_dict(state_dict)


_BLOCK = re.compile(r"(?:^|\.)(?:_blocks|layers|blocks)\.(\d+)\.")


def encoder_layer_id(name: str, num_layers: int) -> int:
    """Layer index of an encoder parameter: 0 stem / embeddings, k block k, ``L + 1`` the rest."""
    m = _BLOCK.search(name)
    if m:
        return int(m.group(1)) + 1
    if name.startswith(("embeddings.", "_conv_stem.", "_bn0.")):
        return 0
    return num_layers + 1


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    encoder_lr_scale: float = 1.0,
    layer_decay: float = 1.0,
) -> list[dict[str, Any]]:
    """AdamW groups of ``model`` (a detector with ``backbone.encoder``), merged by (lr, decay)."""
    encoder = getattr(getattr(model, "backbone", None), "encoder", None)
    enc_ids = {id(p) for p in encoder.parameters()} if encoder is not None else set()
    enc_names = {id(p): n for n, p in encoder.named_parameters()} if encoder is not None else {}
    num_layers = int(getattr(encoder, "num_layers", 0))
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = 0.0 if p.ndim <= 1 or name.endswith(".bias") else weight_decay
        scale = 1.0
        if id(p) in enc_ids:
            layer = encoder_layer_id(enc_names[id(p)], num_layers)
            scale = encoder_lr_scale * layer_decay ** (num_layers + 1 - layer)
        key = (round(scale, 12), decay)
        g = groups.setdefault(
            key,
            {"params": [], "lr": lr * scale, "weight_decay": decay, "lr_scale": scale},
        )
        g["params"].append(p)
    # the group with the base lr (scale 1) first, so that logs of "lr" mean the base lr
    return sorted(groups.values(), key=lambda g: (-g["lr_scale"], -g["weight_decay"]))


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class BabelRSOptimWrapperConstructor:
    """Builds :func:`param_groups` and the wrapper; ``paramwise_cfg`` holds ``encoder_lr_scale``
    and ``layer_decay``."""

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        self.wrapper_cfg = dict(optim_wrapper_cfg)
        self.optimizer_cfg = dict(self.wrapper_cfg.pop("optimizer"))
        self.paramwise_cfg = dict(paramwise_cfg or {})

    def __call__(self, model: nn.Module) -> OptimWrapper:
        model = getattr(model, "module", model)  # the model inside a DDP wrapper
        opt_cfg = dict(self.optimizer_cfg)
        groups = param_groups(
            model,
            lr=opt_cfg["lr"],
            weight_decay=opt_cfg.get("weight_decay", 0.0),
            encoder_lr_scale=self.paramwise_cfg.get("encoder_lr_scale", 1.0),
            layer_decay=self.paramwise_cfg.get("layer_decay", 1.0),
        )
        opt_cfg["params"] = groups
        optimizer = OPTIMIZERS.build(opt_cfg)
        cfg = dict(self.wrapper_cfg)
        cfg.setdefault("type", "GuardedOptimWrapper")
        cfg["optimizer"] = optimizer
        return OPTIM_WRAPPERS.build(cfg)
