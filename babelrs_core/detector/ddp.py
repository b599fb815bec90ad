"""The detector under DDP: mmengine's ``MMDistributedDataParallel`` plus what our model's own
``train_step`` does (per-head loss totals, optional gradient cosines), with the logged losses
averaged over the ranks so that rank 0 logs the loss of the global batch.

Loss scaling needs no change: mmdet's GFL / ATSS / FCOS heads divide by the number of positives
averaged over the ranks (``reduce_mean``), so the rank-averaged gradient equals the gradient of the
global batch, and :class:`~babelrs_core.detector.data.MultiSourceRatioSampler` gives every rank
every head's images (each rank keeps the source ratio).
"""

from __future__ import annotations

from typing import Any

import torch
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class BabelRSDistributedDataParallel(MMDistributedDataParallel):
    """DDP for :class:`~babelrs_core.detector.model.MultiHeadDetector`."""

    def train_step(self, data: dict | tuple | list, optim_wrapper: Any) -> dict:
        module = self.module
        with optim_wrapper.optim_context(self):
            data = module.data_preprocessor(data, training=True)
            losses = self._run_forward(data, mode="loss")  # through DDP's forward
        parsed, log_vars = module.parse_losses(losses)
        log_vars = mean_over_ranks(log_vars)
        if module.measure_grad_cosine:  # this rank's share of the batch (local autograd.grad)
            module.measure_grad_cosine = False
            log_vars.update(module.gradient_cosines(losses))
        optim_wrapper.update_params(parsed)
        return log_vars


def mean_over_ranks(log_vars: dict[str, Any]) -> dict[str, Any]:
    """Tensor log values averaged over the ranks (one collective; gloo has no AVG op)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return log_vars
    keys = [k for k, v in log_vars.items() if isinstance(v, torch.Tensor)]
    if not keys:
        return log_vars
    stacked = torch.stack([log_vars[k].detach().float().reshape(()) for k in keys])
    torch.distributed.all_reduce(stacked)
    stacked /= torch.distributed.get_world_size()
    out = dict(log_vars)
    out.update({k: stacked[i] for i, k in enumerate(keys)})
    return out
