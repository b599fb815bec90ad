"""``babelrs env``: the shell ``export`` lines the consumers of the registered model need, so that
after ``make run`` one line sets up a shell::

    eval "$(.venv/bin/babelrs env)"
    .venv/bin/mlflow models serve -m models:/babelrs-detector@champion --env-manager local

What is printed:

* ``MLFLOW_TRACKING_URI``: the value already set in the environment (a server), else the local
  store of ``tracking.store`` in params.yaml as an absolute ``sqlite:///`` URI (valid from any
  folder). The store is not created: a missing one is reported on stderr.
* ``PATH`` with the virtualenv's ``bin`` first, when it is not on ``PATH`` yet: ``mlflow models
  serve --env-manager local`` starts ``uvicorn`` by name, which a shell that only calls
  ``.venv/bin/mlflow`` would not find.
* ``PREFECT_API_URL``: only when already set (the flows' server), so a saved ``babelrs env`` output
  names the same servers.

Secrets are never printed: a value holding a password (``https://user:pass@host``) or the value of
a secret environment variable (``babelrs_core.tracking.redact``) is not exported; a shell comment
shows it masked and says it was kept as set. Values are quoted for POSIX shells (``shlex.quote``).
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from babelrs_core.settings_env import read

#: variables passed through when already set (in this order, after MLFLOW_TRACKING_URI)
PASS_THROUGH = ("PREFECT_API_URL",)


@dataclass
class ShellEnv:
    """What ``babelrs env`` prints: ``lines`` on stdout (exports and comments), ``notes`` on
    stderr (nothing a shell should evaluate)."""

    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(f"{line}\n" for line in self.lines)


def local_store_uri(store: Path) -> str:
    """The ``sqlite:///`` URI of the local store under ``store`` (absolute, not created)."""
    return f"sqlite:///{(Path(store) / 'mlflow.db').resolve()}"


def mask_uri(value: str) -> str:
    """``value`` with a URL password (``user:pass@``) and every secret environment value
    replaced by ``***``."""
    from babelrs_core.tracking import redact

    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:  # not a URL (e.g. a bad port): only the secret values are masked
        password = None
    if password:
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        value = urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    return redact(value)


def export_line(name: str, value: str) -> str:
    """``export NAME=value`` quoted for a POSIX shell, or a comment when ``value`` holds a
    secret (the variable then keeps the value the shell already has)."""
    masked = mask_uri(value)
    if masked != value:
        return f"# {name} is set ({masked}); kept as set: it holds a secret, never printed"
    return f"export {name}={shlex.quote(value)}"


def venv_bin() -> Path | None:
    """The ``bin`` folder of the virtualenv running babelrs (None outside a virtualenv)."""
    if sys.prefix == sys.base_prefix:
        return None
    return Path(sys.prefix) / ("Scripts" if os.name == "nt" else "bin")


def path_line(bin_dir: Path | None) -> str | None:
    """``export PATH=<bin_dir>:"$PATH"`` when ``bin_dir`` is not on ``PATH`` yet."""
    if bin_dir is None:
        return None
    on_path = {Path(p).resolve() for p in (read("PATH") or "").split(os.pathsep) if p}
    if bin_dir.resolve() in on_path:
        return None
    return f'export PATH={shlex.quote(str(bin_dir))}{os.pathsep}"$PATH"'


def shell_env(store: Path, bin_dir: Path | None = None) -> ShellEnv:
    """The lines for the project whose local MLflow store is ``store`` (``tracking.store``);
    ``bin_dir``: the virtualenv's ``bin`` (default: the one running this)."""
    out = ShellEnv()
    uri = read("MLFLOW_TRACKING_URI")
    if uri:
        out.lines.append(export_line("MLFLOW_TRACKING_URI", uri))
    else:
        out.lines.append(export_line("MLFLOW_TRACKING_URI", local_store_uri(store)))
        db = Path(store) / "mlflow.db"
        if not db.is_file():
            out.notes.append(f"no MLflow store at {db} yet: run `make run` first")
    path = path_line(bin_dir or venv_bin())
    if path:
        out.lines.append(path)
    for name in PASS_THROUGH:
        value = read(name)
        if value:
            out.lines.append(export_line(name, value))
    return out
