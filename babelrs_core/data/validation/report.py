"""The validation report: each failing check with its offending files / rows in plain words, the
files it is written to, and the error that stops the pipeline on bad data.

``report.json``, ``report.md`` and the small ``summary.json`` (DVC metrics) go under
``validation.out_dir``; the report lists the first ``validation.max_examples`` offenders of each
failing check.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from babelrs_core.errors import BadInputError
from babelrs_core.io.atomic import write_json, write_text


class DataValidationError(BadInputError):
    """The data failed validation; ``report`` says what, ``str()`` is the human summary."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        super().__init__(report.markdown())


@dataclass
class Failure:
    """One failing check with its offending files / rows in plain words."""

    check: str
    table: str  # manifest | images | raw
    expectation: str  # GX expectation type (or the importer for format errors)
    description: str
    count: int  # offending rows, files or missing values
    examples: list[str] = field(default_factory=list)


@dataclass
class ValidationReport:
    """Outcome of one validation run."""

    source: str  # the manifest file, or the raw dataset folders
    passed: bool
    rows: int
    images: int
    objects: int
    checks: int  # checks evaluated (format check included when raw data was given)
    failures: list[Failure]
    seconds: dict[str, float] = field(default_factory=dict)
    data_docs: str | None = None
    max_examples: int = 20

    def add_check(self, failure: Failure | None) -> None:
        """Count one more check run outside the GX suites; ``failure`` when it failed."""
        self.checks += 1
        if failure is not None:
            self.failures.append(failure)
            self.passed = False

    def summary(self) -> dict[str, Any]:
        """Small, deterministic dict (DVC metrics): no timings, no paths."""
        return {
            "passed": self.passed,
            "rows": self.rows,
            "images": self.images,
            "objects": self.objects,
            "checks": self.checks,
            "failed_checks": len(self.failures),
            "failures": {f.check: f.count for f in self.failures},
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            **self.summary(),
            "failures": [asdict(f) for f in self.failures],
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "data_docs": self.data_docs,
        }

    def markdown(self) -> str:
        """Human summary: status, counts, then each failing check with its examples."""
        status = "PASSED" if self.passed else "FAILED"
        lines = [
            f"# Data validation {status}: {self.source}",
            "",
            f"{self.rows} rows, {self.images} images, {self.objects} objects; "
            f"{self.checks} checks, {len(self.failures)} failed.",
        ]
        for f in self.failures:
            lines += ["", f"## FAILED {f.check}: {f.description}", ""]
            what = "value(s) missing" if f.table == "aggregate" else "offending row(s)/file(s)"
            shown = len(f.examples)
            more = f", first {shown} listed" if shown < f.count else ""
            lines.append(f"{f.count} {what}{more} ({f.table}, {f.expectation}):")
            lines += [f"- {e}" for e in f.examples]
        if self.data_docs:
            lines += ["", f"Data Docs: {self.data_docs}"]
        return "\n".join(lines) + "\n"


def short(text: str) -> str:
    """Paths under the working directory are shown relative to it."""
    cwd = str(Path.cwd()) + os.sep
    return text.replace(cwd, "")


def write_report(report: ValidationReport, out_dir: Path) -> None:
    """``report.json``, ``report.md`` and ``summary.json`` (metrics) under ``out_dir``."""
    out_dir = Path(out_dir)
    write_json(out_dir / "report.json", report.to_dict())
    write_text(out_dir / "report.md", report.markdown())
    write_json(out_dir / "summary.json", report.summary())
