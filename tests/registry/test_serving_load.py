"""``bench/serving_load.py`` in short: the tests' tiny detector registered in a throw-away MLflow
store, served by a real ``mlflow models serve --env-manager local`` on a free loopback port, and 4
concurrent clients sending a few requests each through the bench's own code; every answer parses
and every prediction row matches the logged output signature."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest

from babelrs_core.registry.payload import OUTPUT_COLUMNS
from bench import serving_load as bench

CLIENTS, REQUESTS = 4, 12


def test_check_predictions_refuses_rows_off_the_schema() -> None:
    schema = [("image_index", "long"), ("score", "double"), ("class_name", "string")]
    good = {"image_index": 0, "score": math.nan, "class_name": "ship"}
    assert bench.check_predictions(json.dumps({"predictions": [good]}).encode(), schema) == [
        pytest.approx(good, nan_ok=True)
    ]
    bad_rows = [
        {"image_index": 0, "score": 0.5},  # a column missing
        {**good, "extra": 1},  # a column too many
        {**good, "image_index": 0.5},  # a double where a long belongs
        {**good, "score": "0.5"},  # a string where a double belongs
        {**good, "image_index": True},  # a bool is no long
    ]
    for row in bad_rows:
        with pytest.raises(ValueError, match="row 0"):
            bench.check_predictions(json.dumps({"predictions": [row]}).encode(), schema)
    for body in (b"<html>", b'{"error": 1}', b'{"predictions": {}}'):
        with pytest.raises(ValueError):
            bench.check_predictions(body, schema)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_served_tiny_detector_answers_concurrent_clients(tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(1)
    ckpt = bench.tiny_detector(tmp_path / "tiny")
    tracking, uri = bench.register_in_store(ckpt, tmp_path / "store")
    schema = bench.output_schema(uri, tracking)
    assert [name for name, _ in schema] == list(OUTPUT_COLUMNS)  # the logged signature
    images = bench.synthetic_images(ckpt)
    assert sorted(images) == ["ir", "rgb", "sar"]
    bodies = bench.request_bodies(images)
    ids = {f"{m}-0" for m in images}

    # the server is started, loaded and stopped inside load_test (deadlines on /ping and on
    # every request and client thread)
    (res,) = bench.load_test(uri, bodies, schema, tmp_path, workers=1, levels=[CLIENTS],
                             max_requests=REQUESTS, duration_s=60, threads=1,
                             tracking_uri=tracking, start_timeout_s=120, server_timeout_s=30,
                             warmup=1)  # fmt: skip

    assert res.errors == []
    assert res.clients == CLIENTS and res.requests == REQUESTS
    assert len(res.responses) == len(res.latencies) == REQUESTS
    assert res.peak_rss > 0 and res.throughput > 0
    types = dict(schema)
    modalities = set()
    for body in res.responses:
        rows = bench.check_predictions(body, schema)  # columns and types of the signature
        assert 1 <= len(rows) <= 5  # score_thr 0, max_per_img 5: every image has rows
        for row in rows:
            assert row["image_index"] == 0 and row["image_id"] in ids
            assert row["modality"] == row["image_id"].split("-")[0]
            for name, value in row.items():
                kind = types[name]
                if kind == "double":
                    assert isinstance(value, float | int), (name, value)
                elif kind == "long":
                    assert isinstance(value, int) and not isinstance(value, bool), (name, value)
                else:
                    assert isinstance(value, str), (name, value)
            oriented = row["modality"] in ("rgb", "ir")
            assert math.isnan(row["angle"]) != oriented  # NaN only for the horizontal SAR head
        modalities.add(rows[0]["modality"])
    assert modalities == {"sar", "rgb", "ir"}
    # the server is gone
    with socket.socket() as s, pytest.raises(OSError):
        s.settimeout(2)
        s.connect(("127.0.0.1", res.port))
