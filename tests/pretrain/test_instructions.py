"""The CSIA instruction builder on hand-made boxes."""

from __future__ import annotations

from babelrs_core.pretrain.instructions import (
    Box,
    ImageLabels,
    box_text,
    build_instructions,
    count,
    listing,
    normalize_answer,
    presence,
    region,
)

SAR = ["ship", "aircraft", "car", "tank", "bridge", "harbor"]


def sar_image(**kw) -> ImageLabels:
    boxes = [
        Box("ship", 10, 20, 50, 60),
        Box("ship", 100, 100, 120, 140),
        Box("aircraft", 0, 0, 200, 100),
    ]
    return ImageLabels("sardet/train/000001", "sardet", "sar", 200, 400, boxes, **kw)


def test_region_classification_prompt_and_answer() -> None:
    img = sar_image()
    ins = region(img, img.boxes[0], SAR)
    assert ins.question == (
        "What is the object in <box>[50,50,250,150]</box>? "
        "The classes are: ship, airplane, car, storage tank, bridge, harbor."
    )
    assert ins.answer == "A ship."
    assert region(img, img.boxes[2], SAR).answer == "An airplane."
    assert ins.task == "region" and ins.modality == "sar"


def test_box_coordinates_are_normalised_to_0_1000_and_clamped() -> None:
    assert box_text(Box("car", -5, 0, 64, 32), 64, 32) == "<box>[0,0,1000,1000]</box>"


def test_concepts_are_shared_across_datasets() -> None:
    rgb = ImageLabels(
        "dota/train/P0000", "dota", "rgb", 100, 100, [Box("small-vehicle", 1, 1, 9, 9)]
    )
    ir = ImageLabels(
        "dronevehicle/train/00001", "dronevehicle", "ir", 100, 100, [Box("car", 1, 1, 9, 9)]
    )
    assert region(rgb, rgb.boxes[0], ["small-vehicle", "plane"]).answer == "A car."
    assert region(ir, ir.boxes[0], ["car", "bus"]).answer == "A car."
    assert "are: airplane, car." in region(rgb, rgb.boxes[0], ["plane", "small-vehicle"]).question


def test_count_presence_listing() -> None:
    img = sar_image()
    assert count(img, "ship").question == "How many ships are there in this image?"
    assert count(img, "ship").answer == "Two."
    assert count(img, "tank").answer == "Zero."
    assert presence(img, "aircraft").question == "Is there an airplane in this image?"
    assert presence(img, "aircraft").answer == "Yes." and presence(img, "car").answer == "No."
    assert listing(img).answer == "Two ships and an airplane."
    empty = ImageLabels("x", "dronevehicle", "ir", 10, 10, [])
    assert listing(empty).answer == "There are no objects."
    bus = ImageLabels("y", "dronevehicle", "ir", 10, 10, [Box("bus", 0, 0, 1, 1)] * 3)
    assert listing(bus).answer == "Three buses."


def test_build_instructions_covers_every_task_reproducibly() -> None:
    img = sar_image(caption="two ships and an airplane in the water next to a field")
    out = build_instructions(img, SAR, seed=0)
    tasks = [i.task for i in out]
    assert tasks.count("region") == 3
    assert tasks.count("count") == 3 and tasks.count("presence") == 3  # 2 present + 1 absent
    assert tasks.count("listing") == 1 and tasks.count("caption") == 1
    assert [i.answer for i in out if i.task == "presence"] == ["Yes.", "Yes.", "No."]
    assert out == build_instructions(img, SAR, seed=0)
    assert out[-1].answer == "Two ships and an airplane in the water next to a field."


def test_normalize_answer() -> None:
    assert normalize_answer("  A Ship. ") == "a ship"
    assert normalize_answer("two ships,  and a car!") == "two ships and a car"
