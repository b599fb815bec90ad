"""The model's input contract: arrays survive PNG encoding, bytes / base64 decode, bad input is
refused naming the row."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from babelrs_core.detector.inference import as_rgb_uint8
from babelrs_core.registry.payload import (
    PayloadError,
    decode_image,
    encode_image,
    input_frame,
    json_payload,
    signature,
)


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 1), (20, 30, 3)])
def test_arrays_round_trip_to_what_the_detector_sees(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    arr = rng.uniform(-20, 300, shape)  # out-of-range floats: clipped as the detector clips
    back = decode_image(encode_image(arr))
    assert np.array_equal(as_rgb_uint8(back), as_rgb_uint8(arr))


def test_16_bit_tiff_keeps_its_values_and_base64_text_decodes() -> None:
    arr = np.array([[0, 100], [255, 4000]], np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="TIFF")
    text = base64.b64encode(buf.getvalue()).decode()
    back = decode_image(text)
    assert back.dtype == np.float32 and back[1, 1] == 4000.0


@pytest.mark.parametrize(
    ("data", "match"),
    [(b"not an image", "cannot decode"), (b"", "empty"), ("%%%", "base64"), (3, "int")],
)
def test_bad_images_are_refused_naming_the_row(data: object, match: str) -> None:
    with pytest.raises(PayloadError, match=rf"row 7: .*{match}"):
        decode_image(data, "row 7")


def test_input_frame_and_rest_payload_follow_the_signature() -> None:
    frame = input_frame([np.zeros((8, 8), np.uint8), b"raw"], "sar", ["a", "b"])
    assert list(frame.columns) == ["image", "modality", "image_id"]
    body = json_payload(frame, {"score_thr": 0.2})
    assert body["dataframe_split"]["columns"] == ["image", "modality", "image_id"]
    assert base64.b64decode(body["dataframe_split"]["data"][1][0]) == b"raw"
    assert body["params"] == {"score_thr": 0.2}
    sig = signature()
    assert sig.inputs.input_names() == ["image", "modality", "image_id"]
    assert "polygon" not in sig.outputs.input_names()
    with pytest.raises(ValueError, match="2 images but 1"):
        input_frame([b"a", b"b"], ["sar"])


def test_oriented_detections_carry_their_polygon_horizontal_ones_nan() -> None:
    import math

    import pandas as pd

    from babelrs_core.registry.consumer import feature_collection
    from babelrs_core.registry.payload import OUTPUT_COLUMNS, POLYGON_COLUMNS, flat_polygon

    base = {"image_index": 0, "image_id": "a", "score": 0.9, "label": 0, "class_name": "car",
            "soi_name": "car", "dataset": "dota", "modality": "rgb"}  # fmt: skip
    poly = [10.0, 0.0, 20.0, 10.0, 10.0, 20.0, 0.0, 10.0]  # a diamond, clockwise from the head
    oriented = {**base, "x1": 0.0, "y1": 0.0, "x2": 20.0, "y2": 20.0, "polygon": poly,
                "rbox": [10.0, 10.0, 14.14, 14.14, math.pi / 4]}  # fmt: skip
    flat = {**base, "x1": 1.0, "y1": 2.0, "x2": 5.0, "y2": 6.0, "polygon": None, "rbox": None}
    assert [flat_polygon(oriented)[c] for c in POLYGON_COLUMNS] == poly
    assert flat_polygon(oriented)["angle"] == pytest.approx(math.pi / 4)
    assert all(math.isnan(v) for v in flat_polygon(flat).values())

    rows = [{**d, **flat_polygon(d)} for d in (oriented, flat)]
    frame = pd.DataFrame(rows)[list(OUTPUT_COLUMNS)]
    geo = feature_collection(frame)["features"]
    assert geo[0]["geometry"]["coordinates"][0] == [[10, 0], [20, 10], [10, 20], [0, 10], [10, 0]]
    assert geo[0]["properties"]["angle"] == pytest.approx(math.pi / 4)
    assert geo[1]["geometry"]["coordinates"][0] == [[1, 2], [5, 2], [5, 6], [1, 6], [1, 2]]
    assert "angle" not in geo[1]["properties"]
