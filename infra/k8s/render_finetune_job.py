"""Fill ``infra/k8s/finetune-multinode.yaml`` from params: the multi-node fine-tuning Job.

    .venv/bin/python infra/k8s/render_finetune_job.py [--params params.yaml] [--set KEY=VALUE ...]
        [--name babelrs-finetune] [--namespace babelrs] [--image IMAGE] [--port 29400]
        | kubectl apply -f -

``distributed.nnodes`` pods (Job completions and parallelism), ``distributed.nproc_per_node`` GPUs
each, all running ``babelrs stage finetune`` with the ``--set`` overrides given here plus the
distributed settings of this rendering (node count, processes, the rendezvous endpoint
``<name>-0.<name>:<port>`` on pod 0, the rendezvous id), so the pods' params and the Job agree
whatever the image's params.yaml says. Every node pulls the stage's data inputs (the paths of
the ``finetune`` stage's deps) with DVC; rank 0 writes ``paths.finetune_out`` on a shared volume.
The params are validated here first (same ``--set`` syntax and checks as ``babelrs``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = Path(__file__).with_name("finetune-multinode.yaml")
#: the checkout in the image (infra/Dockerfile WORKDIR): relative params paths start there
IMAGE_ROOT = "/opt/babelrs"
DEFAULT_IMAGE = "registry.example.com/babelrs:cuda"  # infra/k8s/gpu-job-template.json's
STAGE = "finetune"
_VAR = re.compile(r"\{\{ *(\w+) *\}\}")


def rdzv_endpoint(name: str, port: int) -> str:
    """Pod 0 of Job ``name`` through the headless Service ``name``."""
    return f"{name}-0.{name}:{port}"


def load(params_file: Path, overrides: list[str], name: str, port: int) -> Any:
    """Validated params with ``overrides`` (``KEY=VALUE``) and the Job's rendezvous endpoint."""
    from babelrs_core.cli import _parse_overrides  # the CLI's own --set parsing
    from babelrs_core.config import load_params

    parsed = _parse_overrides(overrides)
    parsed["distributed.rdzv_endpoint"] = rdzv_endpoint(name, port)
    return load_params(params_file, parsed)


def values(
    params: Any,
    overrides: list[str],
    name: str = "babelrs-finetune",
    namespace: str = "babelrs",
    image: str = DEFAULT_IMAGE,
    port: int = 29400,
) -> dict[str, Any]:
    """The template's variables for validated ``params`` (with ``overrides`` applied, the
    ``--set KEY=VALUE`` strings the pods get too)."""
    from babelrs_core.pipeline.specs import stage

    d = params.distributed
    distributed = {
        "distributed.nnodes": d.nnodes,
        "distributed.nproc_per_node": d.nproc_per_node,
        "distributed.rdzv_endpoint": rdzv_endpoint(name, port),
        "distributed.rdzv_id": d.rdzv_id,
    }
    # the user's overrides, then the distributed settings (those given here are in params)
    kept = [o for o in overrides if o.partition("=")[0].strip() not in distributed]
    args = ["babelrs", "stage", STAGE]
    for item in [*kept, *(f"{k}={v}" for k, v in distributed.items())]:
        args += ["--set", item]
    out = Path(params.paths.finetune_out)
    return {
        "name": name,
        "namespace": namespace,
        "image": image,
        "nnodes": d.nnodes,
        "gpus": d.nproc_per_node,
        "rdzv_port": port,
        "args": args,
        "dvc_pull": " ".join(str(p) for p in stage(STAGE).inputs(params)),
        "out_mount": str(out if out.is_absolute() else Path(IMAGE_ROOT) / out),
    }


def fill(node: Any, variables: dict[str, Any]) -> Any:
    """``node`` with every ``{{ name }}``: a string that is only a placeholder takes the value
    itself (an integer, a list), one inside a longer string its text."""
    if isinstance(node, dict):
        return {k: fill(v, variables) for k, v in node.items()}
    if isinstance(node, list):
        return [fill(v, variables) for v in node]
    if isinstance(node, str):
        whole = _VAR.fullmatch(node)
        if whole:
            return variables[whole[1]]
        return _VAR.sub(lambda m: str(variables[m[1]]), node)
    return node


def render(params: Any, overrides: list[str], **options: Any) -> list[dict[str, Any]]:
    """The manifests (Service, PersistentVolumeClaim, Job) for ``params``."""
    docs = list(yaml.safe_load_all(TEMPLATE.read_text()))
    return [fill(doc, values(params, overrides, **options)) for doc in docs]


class _Dumper(yaml.SafeDumper):
    """YAML with multi-line strings (the node script) as literal blocks."""


_Dumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None
    ),
)


def dump(docs: list[dict[str, Any]]) -> str:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="params override (for the pods too)")  # fmt: skip
    parser.add_argument("--name", default="babelrs-finetune", help="Job, Service and pod names")
    parser.add_argument("--namespace", default="babelrs")
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--port", type=int, default=29400, help="rendezvous port on pod 0")
    ns = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from babelrs_core.errors import BabelrsError

    try:
        params = load(ns.params, ns.overrides, ns.name, ns.port)
    except BabelrsError as exc:
        sys.exit(f"render_finetune_job: {exc}")
    docs = render(params, ns.overrides, name=ns.name, namespace=ns.namespace, image=ns.image,
                  port=ns.port)  # fmt: skip
    sys.stdout.write(dump(docs))


if __name__ == "__main__":
    main()
