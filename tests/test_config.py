"""params.yaml validation: the shipped file, valid and invalid fixtures, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from babelrs_core.config import ConfigError, flatten, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "params"
INVALID = yaml.safe_load((FIXTURES / "invalid_cases.yaml").read_text())


def test_shipped_params_yaml_is_valid_and_explicit() -> None:
    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    # every section the models know is written out in params.yaml (no hidden defaults)
    assert set(raw) == set(type(params).model_fields)
    assert params.model.encoder == "efficientnet_lite0"
    assert params.soi_mini.dronevehicle.image_size.width == 640  # the real IR frame


def test_valid_fixture_loads() -> None:
    params = load_params(FIXTURES / "valid_tiny.yaml")
    assert params.seed == 3
    assert params.soi_mini.sardet.splits == {"train": 2, "test": 1}
    assert params.soi_mini.dronevehicle.objects_per_image.lo == 0


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_values_fail_with_key_and_allowed_values(case: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_params(INVALID[case]["params"], "params.yaml")
    message = str(err.value)
    assert message.startswith("params.yaml:")
    for fragment in INVALID[case]["expect"]:
        assert fragment in message, f"{fragment!r} missing from:\n{message}"


def test_overrides_are_validated_like_the_file(tmp_path: Path) -> None:
    params = load_params(ROOT / "params.yaml", {"soi_mini.sardet.splits.train": 5, "seed": 9})
    assert params.soi_mini.sardet.splits["train"] == 5 and params.seed == 9
    with pytest.raises(ConfigError, match=r"model\.encoder"):
        load_params(ROOT / "params.yaml", {"model.encoder": "alexnet"})


def test_missing_and_malformed_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_params(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_params(listy)


def test_flatten_gives_dotted_keys() -> None:
    flat = flatten(load_params(ROOT / "params.yaml"))
    assert flat["soi_mini.sar.gsd_m"] == 1.0
    assert flat["model.encoder"] == "efficientnet_lite0"
