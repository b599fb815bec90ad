"""The validation report (babelrs_core/data/validation/report.py): examples capped at
``validation.max_examples`` but every offender counted, in report.md and summary.json."""

from __future__ import annotations

import json

from tests.data import fake_data
from tests.data.validation.support import Data, failure


def test_examples_are_capped_but_counted(data: Data) -> None:
    data.edit(lambda f: f.assign(modality="optical"))
    params = fake_data.params(validation={"max_examples": 2})
    f = failure(data.fails(params), "modality_known")
    assert f.count == 12 and len(f.examples) == 2
    md = (data.out / "report.md").read_text()
    assert "FAILED modality_known" in md and "12 offending row(s)/file(s), first 2 listed" in md
    assert json.loads((data.out / "summary.json").read_text())["passed"] is False
