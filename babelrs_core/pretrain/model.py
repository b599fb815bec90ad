"""The alignment model: shared vision encoder -> LVSA tap fusion -> shared projector -> language
pivot, with the visual tokens as a prefix: ``[bos] <visual tokens> question [sep] answer [eos]``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from babelrs_core.models.encoders import VisionEncoder
from babelrs_core.models.lvsa import TapFusion
from babelrs_core.models.pivot import Pivot
from babelrs_core.models.projector import Projector
from babelrs_core.pretrain.dataset import IGNORE, Batch


class AlignModel(nn.Module):
    """CSIA + LVSA model; ``token_losses`` is the causal-LM loss on response tokens only.

    Region prompts may carry a *region token* (Ferret-style hybrid region representation): the
    LVSA-fused map is RoI-aligned on the box and passed through the same shared projector, plus an
    embedding of the box geometry; the token replaces the slot that follows ``</box>``.
    """

    bos: torch.Tensor  # buffer: the pivot's bos token ids

    def __init__(
        self,
        encoder: VisionEncoder,
        layers: Sequence[int],
        fusion: TapFusion,
        projector: Projector,
        pivot: Pivot,
        tau: int,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.layers = list(layers)
        self.fusion = fusion
        self.projector = projector
        self.pivot = pivot
        self.tau = tau
        self.register_buffer("bos", torch.tensor(pivot.bos_ids, dtype=torch.long), persistent=False)

    def fused(self, images: torch.Tensor, step: int) -> torch.Tensor:
        """The LVSA-fused feature map (B, C, G, G)."""
        return self.fusion(self.encoder.forward_taps(images, self.layers), step, self.tau)

    def prefix(self, fmap: torch.Tensor) -> torch.Tensor:
        """Embeddings of ``[bos] <visual tokens>``, (B, P, D)."""
        vis = self.projector(fmap)
        bos = self.pivot.embed(self.bos.expand(vis.shape[0], -1))
        return torch.cat([bos.to(vis.dtype), vis], dim=1)

    def text_embeds(
        self,
        ids: torch.Tensor,
        region_at: torch.Tensor,
        boxes: torch.Tensor,
        fmap: torch.Tensor,
        drop_roi: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with the region tokens (RoI feature, box size) written into their slots
        (``drop_roi`` rows get the "no image" feature token)."""
        emb = self.pivot.embed(ids).to(fmap.dtype)
        rows = torch.nonzero(region_at >= 0, as_tuple=True)[0]
        if len(rows):
            roi_map = fmap if drop_roi is None else _hide(fmap, drop_roi)
            tokens = self.projector.region(roi_map[rows], boxes[rows]).to(emb.dtype)
            emb = emb.clone()
            for k in range(tokens.shape[1]):
                emb[rows, region_at[rows] + k] = tokens[:, k]
        return emb

    def token_losses(self, batch: Batch, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of every response token and the batch row it belongs to."""
        return self.losses_from_map(batch, self.fused(batch.images, step))

    def losses_from_map(
        self, batch: Batch, fmap: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`token_losses` from an already fused feature map."""
        pre = self.prefix(fmap if batch.drop_prefix is None else _hide(fmap, batch.drop_prefix))
        text = self.text_embeds(
            batch.text_ids, batch.region_at, batch.boxes, fmap, batch.drop_roi
        ).to(pre.dtype)
        embeds = torch.cat([pre, text], dim=1)
        p = pre.shape[1]
        mask = torch.cat(
            [
                torch.ones(pre.shape[:2], dtype=batch.text_mask.dtype, device=pre.device),
                batch.text_mask,
            ],
            dim=1,
        )
        hidden, _ = self.pivot.hidden(embeds, mask)
        rows, cols = torch.nonzero(batch.labels != IGNORE, as_tuple=True)
        # the token at text position j is predicted from the hidden state just before it
        logits = self.pivot.logits(hidden[rows, p + cols - 1])
        losses = F.cross_entropy(logits.float(), batch.labels[rows, cols], reduction="none")
        return losses, rows

    @torch.no_grad()
    def generate(
        self,
        images: torch.Tensor,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        step: int,
        eos_id: int,
        region_at: Sequence[int] | None = None,
        boxes: torch.Tensor | None = None,
    ) -> list[list[int]]:
        """Greedy decoding with a KV cache; prompts are left-padded (explicit position ids)."""
        fmap = self.fused(images, step)
        pre = self.prefix(fmap)
        b, p, d = pre.shape
        n = max(len(q) for q in prompts)
        dev = pre.device
        ids = torch.full((b, n), self.pivot.pad_id, dtype=torch.long, device=dev)
        at = torch.tensor(list(region_at) if region_at is not None else [-1] * b, device=dev)
        for i, q in enumerate(prompts):
            if q:
                ids[i, n - len(q) :] = torch.tensor(list(q), device=dev)
            if at[i] >= 0:
                at[i] += n - len(q)
        if boxes is None:
            boxes = torch.zeros(b, 4, device=dev)
        text = self.text_embeds(ids, at, boxes.to(dev), fmap).to(pre.dtype)
        embeds = torch.zeros(b, p + n, d, dtype=pre.dtype, device=dev)
        mask = torch.zeros(b, p + n, dtype=torch.long, device=dev)
        for i, q in enumerate(prompts):
            off = n - len(q)
            embeds[i, off : off + p] = pre[i]
            embeds[i, off + p :] = text[i, off:]
            mask[i, off:] = 1
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        hidden, cache = self.pivot.hidden(embeds, mask, pos, use_cache=True)
        out: list[list[int]] = [[] for _ in range(b)]
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        last = hidden[:, -1]
        next_pos = pos[:, -1] + 1
        for _ in range(max_new_tokens):
            tok = self.pivot.logits(last).argmax(-1)
            for i in range(b):
                if not done[i]:
                    out[i].append(int(tok[i]))
            done |= tok == eos_id
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones(b, 1, dtype=mask.dtype, device=dev)], 1)
            emb = self.pivot.embed(tok[:, None]).to(pre.dtype)
            hidden, cache = self.pivot.hidden(emb, mask, next_pos[:, None], cache, use_cache=True)
            last = hidden[:, -1]
            next_pos = next_pos + 1
        return [[t for t in seq if t != eos_id] for seq in out]


def _hide(fmap: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``fmap`` with the maps of ``rows`` (bool, (B,)) zeroed: the projector then emits its
    constant "no image" token there (visual dropout against memorising small data)."""
    if not bool(rows.any()):
        return fmap
    return fmap * (~rows.to(fmap.device)).to(fmap.dtype)[:, None, None, None]
