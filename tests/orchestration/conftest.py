"""Session fixtures of the orchestration tests: one moto S3 server, one MLflow server (artifacts
in S3) and one Prefect server, started together the first time a test asks for them and shared by
every test module of this folder."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.orchestration.servers_prefect_mlflow import (
    Server,
    start_mlflow_server,
    start_prefect_server,
)
from tests.servers import MotoServer, start_moto

ARTIFACT_BUCKET = "mlflow"


@dataclass
class Servers:
    s3: MotoServer
    mlflow: Server
    prefect: Server
    state: Path  # server state and logs
    bucket: str = ARTIFACT_BUCKET


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    state = tmp_path_factory.mktemp("orchestration-servers")
    s3 = start_moto(log=state / "moto.log")
    started: list[Server] = []
    try:
        # both servers boot at once (each takes 15-50 s on a loaded 2-core machine)
        mlflow = start_mlflow_server(state, s3, ARTIFACT_BUCKET, wait=False)
        started.append(mlflow)
        prefect = start_prefect_server(state, wait=False)
        started.append(prefect)
        mlflow.wait(240)
        prefect.wait(240)
        yield Servers(s3, mlflow, prefect, state)
    finally:
        for server in reversed(started):
            server.stop()
        s3.stop()
