"""Only response tokens carry loss; greedy decoding with the KV cache matches a full recompute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from babelrs_core.config import Params
from babelrs_core.models.pivot import TinyBertSpec, load_pivot
from babelrs_core.pretrain.dataset import IGNORE, Encoded
from babelrs_core.pretrain.instructions import Instruction
from babelrs_core.pretrain.train import build_model
from babelrs_core.settings_env import offline_by_default

offline_by_default()
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    pivot = load_pivot("tiny", TinyBertSpec(32, 2, 2, 64))
    params = Params.model_validate(
        {
            "pretrain": {
                "pretrained": True,
                "image_size": 64,
                "lvsa": {"grid": 2},
                "pixel_shuffle": 1,
            }
        }
    )
    model, _ = build_model(params, pivot)
    return model.eval(), pivot


def _item(pivot, q: str, a: str) -> Encoded:
    tok = pivot.tokenizer
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    ins = Instruction("i", "sardet", "sar", "region", q, a)
    return Encoded(0, "sar", "region", enc(q), [*enc(" " + a), pivot.eos_id], ins)


def _batch(pivot, items):
    from babelrs_core.pretrain.dataset import PretrainData

    data = PretrainData(
        64,
        ["i"],
        ["sar"],
        torch.zeros(1, 3, 64, 64, dtype=torch.uint8),
        [],
        [],
        {},
        {"sar": {"mean": [0.0] * 3, "std": [1.0] * 3}},
        pivot.sep_ids,
        pivot.pad_id,
    )
    return data, data.collate(items)


def test_only_response_tokens_carry_loss(tiny) -> None:
    model, pivot = tiny
    items = [_item(pivot, "What is the object?", "A ship."), _item(pivot, "How many cars?", "Two.")]
    data, batch = _batch(pivot, items)
    # labels: exactly the answer tokens (+ end token); prompt, separator and padding ignored
    for row, e in zip(batch.labels, items, strict=True):
        kept = row[row != IGNORE].tolist()
        assert kept == list(e.answer)
        assert (row[: len(e.question) + len(data.sep_ids)] == IGNORE).all()
    losses, rows = model.token_losses(batch, step=0)
    assert len(losses) == sum(len(e.answer) for e in items)
    assert rows.tolist() == [0] * len(items[0].answer) + [1] * len(items[1].answer)
    # the same numbers from full-sequence logits, shifted by one, at the answer positions only
    pre = model.prefix(model.fused(batch.images, 0))
    embeds = torch.cat([pre, pivot.embed(batch.text_ids)], 1)
    mask = torch.cat([torch.ones(2, pre.shape[1], dtype=torch.long), batch.text_mask], 1)
    logits = pivot.logits(pivot.hidden(embeds, mask)[0])
    full = torch.cat([torch.full((2, pre.shape[1]), IGNORE), batch.labels], 1)
    ref = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]),
        full[:, 1:].reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    torch.testing.assert_close(losses.sum(), ref, rtol=1e-4, atol=1e-4)
    # changing a prompt token's label target would not matter: prompt tokens have no loss term
    batch.labels[0, 0] = IGNORE
    assert len(model.token_losses(batch, 0)[0]) == len(losses)


def test_kv_cache_greedy_decoding_matches_recompute(tiny) -> None:
    model, pivot = tiny
    items = [_item(pivot, "What is the object in the box?", "x"), _item(pivot, "Count.", "x")]
    data, _ = _batch(pivot, items)
    images = data.normalized([0, 0])
    prompts = [e.question + data.sep_ids for e in items]
    out = model.generate(images, prompts, max_new_tokens=5, step=0, eos_id=-1)
    for i, q in enumerate(prompts):  # one prompt at a time, no padding, no cache
        seq = list(q)
        for _ in range(5):
            pre = model.prefix(model.fused(images[i : i + 1], 0))
            emb = torch.cat([pre, pivot.embed(torch.tensor([seq]))], 1)
            h, _ = pivot.hidden(emb, torch.ones(1, emb.shape[1], dtype=torch.long))
            seq.append(int(pivot.logits(h[:, -1]).argmax()))
        assert out[i] == seq[len(q) :]


def test_visual_dropout_hides_the_image(tiny) -> None:
    model, pivot = tiny
    item = _item(pivot, "What is the object in <box>[1,2,3,4]</box>? ok", "A ship.")
    item.region_at = 9
    item.text = Instruction("i", "sardet", "sar", "region", "q", "A ship.", (0.1, 0.1, 0.5, 0.4))
    data, batch = _batch(pivot, [item])
    other = data.collate([item])
    other.images = torch.randn_like(batch.images)
    for b in (batch, other):
        b.drop_prefix = torch.tensor([True])
        b.drop_roi = torch.tensor([True])
    torch.testing.assert_close(model.token_losses(batch, 0)[0], model.token_losses(other, 0)[0])
    # the slot holds the box-size token when the RoI feature is hidden, the image's otherwise
    fmap = model.fused(other.images, 0)
    args = (other.text_ids, other.region_at, other.boxes, fmap)
    hidden = model.text_embeds(*args, torch.tensor([True]))[0, 9]
    seen = model.text_embeds(*args, torch.tensor([False]))[0, 9]
    assert (hidden - seen).abs().max() > 1e-3
    torch.testing.assert_close(
        hidden,
        model.text_embeds(*args[:3], model.fused(batch.images, 0), torch.tensor([True]))[0, 9],
    )
