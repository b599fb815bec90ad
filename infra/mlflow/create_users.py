"""Create (or re-password) the MLflow users of the team deployment, signed in as the admin.

Run by the ``mlflow-users`` service of ``infra/docker-compose.yml`` after the server is up
(docs/deploy.md). Each user's password is read from a file (a docker secret), never from the
command line: ``python create_users.py babelrs-worker=/run/secrets/mlflow_worker_password``.
The admin signs in with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (set by the image's
entrypoint from MLFLOW_TRACKING_PASSWORD_FILE).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def wait_for_server(uri: str, timeout_s: float = 300.0) -> None:
    """Poll ``<uri>/health`` until it answers (the server may still be migrating)."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"create_users: {uri} did not answer within {timeout_s:.0f} s"
                ) from None
            time.sleep(2)


def ensure_user(client: object, name: str, password: str) -> str:
    """Create ``name`` with ``password``, or set its password if it exists (rotation)."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_user(name, password)  # type: ignore[attr-defined]
        return "created"
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    client.update_user_password(name, password)  # type: ignore[attr-defined]
    return "password set"


def main(argv: list[str]) -> None:
    from mlflow.server import get_app_client
    from mlflow.tracking import get_tracking_uri

    uri = get_tracking_uri()
    wait_for_server(uri)
    client = get_app_client("basic-auth", tracking_uri=uri)
    for spec in argv:
        name, _, path = spec.partition("=")
        password = Path(path).read_text().strip()
        print(f"create_users: {name}: {ensure_user(client, name, password)}")


if __name__ == "__main__":
    main(sys.argv[1:])
