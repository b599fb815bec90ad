"""DVC against a real S3-compatible server (moto_server on 127.0.0.1), in throw-away git + DVC
repositories under tmp_path: the project's own .dvc cache is never touched.

* SOI-mini (tiny settings) goes through ``dvc repro`` (generate, import, validate, shard), is
  pushed to S3, the local cache and the workspace data are deleted, ``dvc pull`` brings it back and
  every file's checksum matches.
* Changing one image re-pushes exactly one shard (plus the small index and DVC's folder listing).
* An S3 outage in the middle of a push (the server unreachable, its data kept): ``dvc push``
  exits non-zero naming the endpoint, the local cache is intact, every object the server got is
  whole; once it is back a rerun pushes exactly the missing objects, and a fresh repository pulls
  identical bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from babelrs_core.config import parse_params
from babelrs_core.data.importing import import_datasets
from babelrs_core.data.shards import ShardReader, verify_shards, write_shards
from babelrs_core.pipeline import PIPELINE
from babelrs_core.pipeline.dvc import dvc_stage
from tests.data import fake_data
from tests.servers import MotoServer, ThrottledProxy, aws_env, s3_client, start_moto

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def s3():
    server = start_moto()
    yield server
    server.stop()


class Repo:
    """A temporary git + DVC repository with the project's DVC configuration."""

    def __init__(self, path: Path, endpoint: str, env_extra: dict[str, str] | None = None) -> None:
        self.path = path
        self.bucket = f"babelrs-e2e-{uuid.uuid4().hex[:8]}"
        env = aws_env(endpoint)
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            BABELRS_S3_BUCKET=self.bucket,
            DVC_GLOBAL_CONFIG_DIR=str(path.parent / "dvc-global"),
            DVC_SYSTEM_CONFIG_DIR=str(path.parent / "dvc-system"),
            DVC_SITE_CACHE_DIR=str(path.parent / "dvc-site-cache"),
            DVC_NO_ANALYTICS="1",
            **(env_extra or {}),
        )
        self.env = env
        path.mkdir(parents=True)
        self.run("git", "init", "-q")
        (path / ".dvc").mkdir()
        for name in (".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore"):
            shutil.copy(ROOT / name, path / name)
        # the default local remote must not be the user's ~/.cache during tests
        self.dvc("remote", "modify", "--local", "local", "url", str(path.parent / "local-remote"))

    def run(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            args, cwd=self.path, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "dvc"), *args, check=check)

    def babelrs(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "babelrs"), *args)

    def remote_keys(self, s3_url: str) -> set[str]:
        client = s3_client(s3_url)
        keys: set[str] = set()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            keys |= {o["Key"] for o in page.get("Contents", [])}
        return keys


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file (``.gitignore`` files are git's business, not DVC data)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".gitignore"
    }


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def pushed(result: subprocess.CompletedProcess) -> int:
    found = re.search(r"(\d+) files? pushed", result.stdout + result.stderr)
    return int(found.group(1)) if found else 0


def tiny_params() -> dict:
    """params.yaml with SOI-mini cut down to 30 small images (the rest as committed)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name in ("sardet", "dota", "dronevehicle"):
        spec = params["soi_mini"][name]
        spec["splits"] = {"train": 8, "val": 2}
        spec["image_size"] = {"width": 96, "height": 96}
        spec["objects_per_image"] = {"lo": 3, "hi": 6}
        spec["classes"] = spec["classes"][:3]
    params["shards"]["target_mb"] = 0.05  # several shards per split
    params["validation"]["data_docs"] = False  # (their own test is in tests/data)
    return params


DATA_STAGES = ("generate", "import", "validate", "shard")


def data_pipeline_yaml(params: dict) -> str:
    """dvc.yaml of the data stages, generated from the project's stage specs."""
    parsed = parse_params(params)
    specs = {s.name: s for s in PIPELINE if s.name in DATA_STAGES}
    stages_ = {name: dvc_stage(spec, parsed) for name, spec in specs.items()}
    assert list(stages_) == list(DATA_STAGES), list(stages_)
    return yaml.safe_dump({"stages": stages_}, sort_keys=False)


def test_soi_mini_round_trip_through_s3(s3: MotoServer, tmp_path: Path) -> None:
    repo = Repo(tmp_path / "repo", s3.url)
    params = tiny_params()
    (repo.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo.path / "dvc.yaml").write_text(data_pipeline_yaml(params))
    shutil.copytree(  # the stages' code dependencies (the installed package runs them)
        ROOT / "babelrs_core",
        repo.path / "babelrs_core",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    repo.dvc("repro", "shard")
    data = repo.path / "data"
    assert (data / "shards/soi_mini/index.parquet").is_file()
    assert len(list((data / "shards/soi_mini").glob("*.tar"))) >= 6
    before = checksums(data)
    assert sum(k.startswith("raw/") for k in before) >= 50  # images, labels, scene graphs

    repo.babelrs("data", "remote", "bootstrap", "--save")
    first = repo.dvc("push", "-r", "s3")
    assert pushed(first) > 0

    shutil.rmtree(repo.path / ".dvc" / "cache")
    shutil.rmtree(data)
    repo.dvc("pull", "-r", "s3")
    assert checksums(data) == before  # every file, byte for byte
    assert verify_shards(data / "shards/soi_mini") == []
    with ShardReader(data / "shards/soi_mini") as reader:
        some = reader.ids()[0]
        assert reader.read(some)  # random access works on what was pulled
    status = repo.dvc("status", "shard")
    assert "up to date" in status.stdout


def test_changing_one_image_repushes_exactly_one_shard(s3: MotoServer, tmp_path: Path) -> None:
    repo = Repo(tmp_path / "repo", s3.url)
    roots = fake_data.make_raw(repo.path / "data" / "raw")
    manifest = repo.path / "data" / "manifest" / "fake.parquet"
    import_datasets(roots, manifest, fake_data.params(), progress=False)
    shards = repo.path / "data" / "shards" / "fake"
    write_shards(manifest, shards, target_mb=0.02)
    repo.dvc("add", "data/shards/fake")
    repo.babelrs("data", "remote", "bootstrap", "--save")
    first = repo.dvc("push", "-r", "s3")
    n_shards = len(list(shards.glob("*.tar")))
    assert n_shards >= 4 and pushed(first) == n_shards + 2  # shards + index + .dir listing
    keys_before = repo.remote_keys(s3.url)
    tars_before = {p.name for p in shards.glob("*.tar")}

    fake_data.noise_image(
        roots["dota"] / "train/images/Pt001.png", fake_data.SIZES["dota"], "RGB", seed=4242
    )
    write_shards(manifest, shards, target_mb=0.02)
    new_tars = {p.name for p in shards.glob("*.tar")} - tars_before
    assert len(new_tars) == 1
    repo.dvc("add", "data/shards/fake")
    second = repo.dvc("push", "-r", "s3")
    assert pushed(second) == 3, second.stdout
    new_keys = repo.remote_keys(s3.url) - keys_before
    (new_tar,) = new_tars
    digests = {k.removeprefix("dvc/files/md5/").replace("/", "") for k in new_keys}
    assert md5(shards / new_tar) in digests  # the one re-pushed shard
    assert md5(shards / "index.parquet") in digests
    assert any(k.endswith(".dir") for k in new_keys)
    other_tars = {md5(p) for p in shards.glob("*.tar") if p.name != new_tar}
    assert not other_tars & digests  # no other shard went up again


def _objects(s3_url: str, bucket: str) -> dict[str, tuple[str, object]]:
    """key -> (ETag, LastModified) of every object in ``bucket``."""
    client = s3_client(s3_url)
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out |= {o["Key"]: (o["ETag"], o["LastModified"]) for o in page.get("Contents", [])}
    return out


def test_push_interrupted_by_stopping_the_server(tmp_path: Path) -> None:
    server = start_moto()
    # Clients reach the server only through a local proxy with a bandwidth cap. Closing the proxy
    # is the outage: every connection drops and new ones are refused, while the server behind
    # keeps what it received (moto keeps data in memory, so stopping the moto process itself would
    # empty the bucket). The proxy holds every upload after 2 MB of the 4.8 MB, so the push is
    # still under way when the watcher below cuts it, on a fast machine as on a loaded one.
    proxy = ThrottledProxy(server.port, bytes_per_s=2_000_000)
    proxy.hold_after(2_000_000)
    try:
        repo = Repo(tmp_path / "repo", proxy.url, {"AWS_MAX_ATTEMPTS": "1"})
        blobs = repo.path / "data" / "blobs"
        blobs.mkdir(parents=True)
        rng = __import__("numpy").random.default_rng(0)
        for i in range(24):  # incompressible, like image shards
            (blobs / f"part-{i:02d}.bin").write_bytes(rng.bytes(200_000))
        repo.dvc("add", "data/blobs")
        repo.babelrs("data", "remote", "bootstrap", "--save")
        cache = repo.path / ".dvc" / "cache"
        cache_before = checksums(cache)
        n_objects = len(cache_before)  # 24 parts + the folder listing (.dir)
        assert n_objects == 25, sorted(cache_before)

        push = subprocess.Popen(
            [str(BIN / "dvc"), "push", "-r", "s3", "-j", "2"],
            cwd=repo.path,
            env=repo.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        arrived = 0
        deadline = time.monotonic() + 120
        while push.poll() is None and time.monotonic() < deadline:
            arrived = len(repo.remote_keys(server.url))
            if arrived >= 5:
                break
            time.sleep(0.2)
        assert arrived >= 5, f"only {arrived} objects arrived before the push stalled"
        assert push.poll() is None, "the push finished although the proxy held its uploads"
        proxy.close()  # the outage, in the middle: some objects are up, the rest in flight
        output = push.communicate(timeout=300)[0]
        assert push.returncode == 1, output[-3000:]
        # every failed object is named with the endpoint, and the summary counts them
        failed = [
            line for line in output.splitlines() if line.startswith("ERROR: failed to transfer")
        ]
        assert failed and all(f"{proxy.url}/" in line for line in failed), output[-3000:]
        summary = re.search(
            r"ERROR: failed to push data to the cloud - (\d+) files? failed", output
        )
        assert summary, output[-3000:]
        assert checksums(cache) == cache_before  # the local cache is intact

        kept = _objects(server.url, repo.bucket)  # what the server received before the outage
        assert 5 <= len(kept) < n_objects, sorted(kept)
        # an object is on the server whole or not at all: each one kept matches its cache file
        cached = {f"dvc/{name}": cache / name for name in cache_before}  # S3 key -> cache file
        assert set(kept) <= set(cached)
        for key, (etag, _) in kept.items():
            assert etag.strip('"') == md5(cached[key]), key
        missing = n_objects - len(kept)
        assert int(summary.group(1)) <= missing, output[-3000:]

        # the server comes back on the same address, with its data
        proxy = ThrottledProxy(server.port, bytes_per_s=1e9, port=proxy.port)
        rerun = repo.dvc("push", "-r", "s3")
        assert pushed(rerun) == missing, rerun.stdout + rerun.stderr  # only what was missing
        after = _objects(server.url, repo.bucket)
        assert set(after) == set(cached)  # one object per cache file
        assert {k: after[k] for k in kept} == kept  # the objects already up were not re-sent
        assert "in sync" in repo.dvc("status", "-c", "-r", "s3").stdout

        # a fresh repository (new workspace, new cache) pulls identical bytes
        clone = Repo(tmp_path / "clone", proxy.url)
        clone.dvc("remote", "modify", "--local", "s3", "url", f"s3://{repo.bucket}/dvc")
        (clone.path / "data").mkdir()
        shutil.copy(repo.path / "data" / "blobs.dvc", clone.path / "data" / "blobs.dvc")
        clone.dvc("pull", "-r", "s3")
        assert checksums(clone.path / "data" / "blobs") == checksums(blobs)
        assert checksums(clone.path / ".dvc" / "cache") == cache_before
    finally:
        proxy.close()
        server.stop()
