"""DVC remotes: the committed configuration, and ``babelrs data remote bootstrap`` for S3.

``.dvc/config`` (committed) names two remotes:

* ``local`` (the default): ``~/.cache/babelrs/dvc-remote``, a plain folder that exists on any
  machine and in CI, so ``dvc push`` / ``dvc pull`` work with no setup;
* ``s3``: ``s3://babelrs-dvc/dvc``. Nothing secret or site-specific is committed:

  ============  =============================================================================
  endpoint      ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (read by boto3 and by DVC
                itself), or ``dvc remote modify --local s3 endpointurl URL``; none: AWS S3
  bucket        ``BABELRS_S3_BUCKET`` (``bootstrap --save`` writes ``s3://$BUCKET/<prefix>``
                into the git-ignored ``.dvc/config.local``), or ``--bucket``
  credentials   the standard AWS chain: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
                (``AWS_SESSION_TOKEN``), ``AWS_PROFILE``, ``~/.aws/credentials``, instance roles
  region        ``AWS_DEFAULT_REGION`` / ``AWS_REGION`` (default ``us-east-1``)
  ============  =============================================================================

:func:`bootstrap` checks all of that with boto3 before DVC needs it: credentials are found (only
their *source* is printed, never a key), the endpoint answers, the bucket exists (it is created
if missing), and an object can be written, read back and deleted under the remote's prefix.
Every failure raises :class:`RemoteError` with one plain sentence that names the endpoint and
the bucket.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from babelrs_core.errors import BabelrsError
from babelrs_core.settings_env import read

DEFAULT_S3_REMOTE = "s3"
BUCKET_ENV = "BABELRS_S3_BUCKET"
ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
PROBE_KEY = ".babelrs-access-check"


class RemoteError(BabelrsError, RuntimeError):
    """The remote cannot be used; the message says why in one sentence (no secrets)."""

    transient = True


@dataclass
class S3Target:
    """Where an S3 remote points, resolved from DVC config, environment and options."""

    remote: str
    url: str
    bucket: str
    prefix: str
    endpoint: str | None  # None: AWS S3
    region: str
    profile: str | None

    @property
    def where(self) -> str:
        return f"s3://{self.bucket} at {self.endpoint or 'AWS S3 (no custom endpoint)'}"


def find_repo_root(start: str | os.PathLike[str] = ".") -> Path:
    """The nearest folder at or above ``start`` that has a ``.dvc`` folder."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder
    raise RemoteError(f"{here}: not inside a DVC repository (no .dvc folder); run `dvc init`")


def dvc_remote_config(repo: str | os.PathLike[str], remote: str) -> dict[str, Any]:
    """The merged DVC configuration of ``remote`` (system, global, repo, local levels)."""
    from dvc.config import Config, ConfigError

    root = find_repo_root(repo)
    try:
        config = Config(dvc_dir=str(root / ".dvc"))
    except ConfigError as exc:
        raise RemoteError(f"{root / '.dvc'}: invalid DVC config ({exc})") from None
    remotes = config.get("remote", {})
    if remote not in remotes:
        known = ", ".join(remotes) or "none"
        raise RemoteError(f"no DVC remote named {remote!r} (configured: {known})")
    return dict(remotes[remote])


def resolve_s3(
    repo: str | os.PathLike[str] = ".",
    remote: str = DEFAULT_S3_REMOTE,
    bucket: str | None = None,
    endpoint: str | None = None,
) -> S3Target:
    """Resolve the S3 remote: options first, then the DVC config (local level included),
    then the environment (see the module docstring)."""
    conf = dvc_remote_config(repo, remote)
    url = str(conf.get("url", ""))
    parsed = urlparse(url)
    if parsed.scheme != "s3":
        raise RemoteError(f"DVC remote {remote!r} is {url!r}, not an s3:// remote")
    prefix = parsed.path.strip("/")
    bucket = bucket or read(BUCKET_ENV) or parsed.netloc
    if not bucket:
        raise RemoteError(f"no bucket: set {BUCKET_ENV} or pass --bucket")
    endpoint = (
        endpoint
        or conf.get("endpointurl")
        or next((read(e) for e in ENDPOINT_ENVS if read(e)), None)
    )
    region = conf.get("region") or read("AWS_REGION") or read("AWS_DEFAULT_REGION") or "us-east-1"
    profile = conf.get("profile") or None
    new_url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    return S3Target(remote, new_url, bucket, prefix, endpoint, region, profile)


def _client(target: S3Target, timeout_s: float) -> tuple[Any, str]:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ProfileNotFound

    try:
        session = boto3.Session(profile_name=target.profile, region_name=target.region)
    except ProfileNotFound:
        raise RemoteError(f"AWS profile {target.profile!r} not found") from None
    creds = session.get_credentials()
    if creds is None:
        raise RemoteError(
            f"no AWS credentials found for {target.where}: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE / ~/.aws/credentials"
        )
    config = Config(
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        retries={"max_attempts": 2, "mode": "standard"},
        s3={"addressing_style": "path"} if target.endpoint else None,
    )
    client = session.client("s3", endpoint_url=target.endpoint, config=config)
    return client, str(getattr(creds, "method", "unknown"))


def _explain(exc: Exception, target: S3Target, doing: str) -> RemoteError:
    """One plain sentence for a boto3 failure (never the credentials themselves)."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )
    from botocore.exceptions import ConnectTimeoutError as BotoConnectTimeout

    endpoint = target.endpoint or "AWS S3"
    if isinstance(exc, EndpointConnectionError | BotoConnectTimeout | ConnectionClosedError):
        return RemoteError(f"cannot reach the S3 endpoint {endpoint} while {doing}: {exc}")
    if isinstance(exc, ReadTimeoutError):
        return RemoteError(f"the S3 endpoint {endpoint} did not answer in time while {doing}")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return RemoteError(f"incomplete AWS credentials for {target.where} while {doing}: {exc}")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code, msg = err.get("Code", "?"), err.get("Message", "")
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return RemoteError(
                f"access denied to {target.where} while {doing} ({code}: {msg}); check the "
                "credentials and the bucket policy"
            )
        return RemoteError(f"S3 error from {target.where} while {doing}: {code} {msg}".strip())
    return RemoteError(f"{target.where}: {doing} failed: {type(exc).__name__}: {exc}")


@dataclass
class BootstrapReport:
    """What :func:`bootstrap` found and did (JSON-ready, secret-free)."""

    remote: str
    url: str
    bucket: str
    endpoint: str | None
    region: str
    credentials: str  # where boto3 found them ("env", "shared-credentials-file", ...)
    created_bucket: bool
    access: str  # "read/write/delete ok"
    saved_local_config: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap(
    repo: str | os.PathLike[str] = ".",
    remote: str = DEFAULT_S3_REMOTE,
    bucket: str | None = None,
    endpoint: str | None = None,
    save: bool = False,
    timeout_s: float = 5.0,
) -> BootstrapReport:
    """Create the remote's bucket if missing and check read/write/delete access under its
    prefix. With ``save``, write the resolved URL (and an explicitly given endpoint) into
    ``.dvc/config.local`` (git-ignored), so later ``dvc push -r s3`` uses them."""
    from botocore.exceptions import BotoCoreError, ClientError

    target = resolve_s3(repo, remote, bucket, endpoint)
    client, source = _client(target, timeout_s)
    created = False
    try:
        client.head_bucket(Bucket=target.bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise _explain(exc, target, "checking the bucket") from None
        kwargs: dict[str, Any] = {"Bucket": target.bucket}
        if target.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": target.region}
        try:
            client.create_bucket(**kwargs)
        except (ClientError, BotoCoreError) as exc2:
            raise _explain(exc2, target, "creating the bucket") from None
        created = True
    except BotoCoreError as exc:
        raise _explain(exc, target, "checking the bucket") from None
    key = f"{target.prefix}/{PROBE_KEY}" if target.prefix else PROBE_KEY
    try:
        client.put_object(Bucket=target.bucket, Key=key, Body=b"babelrs")
        body = client.get_object(Bucket=target.bucket, Key=key)["Body"].read()
        client.delete_object(Bucket=target.bucket, Key=key)
    except (ClientError, BotoCoreError) as exc:
        raise _explain(exc, target, f"writing, reading and deleting {key}") from None
    if body != b"babelrs":
        raise RemoteError(f"{target.where}: {key} read back different bytes")
    if save:
        save_local(repo, target, endpoint_given=endpoint)
    return BootstrapReport(
        remote=target.remote,
        url=target.url,
        bucket=target.bucket,
        endpoint=target.endpoint,
        region=target.region,
        credentials=source,
        created_bucket=created,
        access="read/write/delete ok",
        saved_local_config=save,
    )


def save_local(
    repo: str | os.PathLike[str], target: S3Target, endpoint_given: str | None = None
) -> Path:
    """Write the remote's URL (and ``endpointurl`` when given explicitly) to the git-ignored
    ``.dvc/config.local``; endpoints from the environment stay in the environment."""
    from dvc.config import Config

    root = find_repo_root(repo)
    config = Config(dvc_dir=str(root / ".dvc"))
    with config.edit("local") as conf:
        section = conf.setdefault("remote", {}).setdefault(target.remote, {})
        section["url"] = target.url
        if endpoint_given:
            section["endpointurl"] = endpoint_given
    return root / ".dvc" / "config.local"
