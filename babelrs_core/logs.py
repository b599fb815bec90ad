"""One logging configuration: babelrs modules log to ``babelrs_core.*`` loggers; the CLI shows
them on stderr through rich (stdout stays the command's JSON), the Prefect flow sends them to the
task log (``flows/retrain.py``), and nothing is configured on import."""

from __future__ import annotations

import logging

ROOT_LOGGER = "babelrs_core"


def get_logger(name: str) -> logging.Logger:
    """The logger of module ``name`` (``__name__`` inside babelrs_core)."""
    return logging.getLogger(name if name.startswith(ROOT_LOGGER) else f"{ROOT_LOGGER}.{name}")


def configure_cli(debug: bool = False) -> None:
    """Show ``babelrs_core`` records (INFO, or DEBUG with ``--debug``) on stderr, once: through
    rich on a terminal, as plain unwrapped lines otherwise (logs, CI, pipes)."""
    import sys

    root = logging.getLogger(ROOT_LOGGER)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    if any(getattr(h, "_babelrs_cli", False) for h in root.handlers):
        return
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_path=debug, markup=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    setattr(handler, "_babelrs_cli", True)  # noqa: B010 - a marker attribute of our handler
    root.addHandler(handler)
