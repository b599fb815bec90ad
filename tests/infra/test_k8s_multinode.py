"""The multi-node fine-tuning Job: ``infra/k8s/finetune-multinode.yaml`` filled from params by
``infra/k8s/render_finetune_job.py``. The rendered manifests parse, and their wiring agrees with
the params the pods will run with (those of the pods' own command line, re-read here): as many
Indexed-Job pods as ``distributed.nnodes``, ``nproc_per_node`` GPUs each, the rendezvous endpoint
on pod 0 through the headless Service, rank 0 on pod 0 (``PET_LOCAL_ADDR``, ``is_host``), the
stage's inputs pulled on every node, ``paths.finetune_out`` on the shared volume; the GPU
scheduling, image and environment are those of the one GPU recipe (``gpu-job-template.json``).

``wiring_problems`` lists disagreements; the ``*_is_caught`` test proves it sees each one. The
launch itself (2 nodes, c10d on 127.0.0.1, these ``PET_*`` settings) runs in
``tests/detector/test_distributed.py``."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from babelrs_core.cli import _parse_overrides
from babelrs_core.config import load_params
from babelrs_core.pipeline.specs import stage

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
GPU = "nvidia.com/gpu"


def renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "render_finetune_job", K8S / "render_finetune_job.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rendered(overrides: list[str], **options: Any) -> list[dict[str, Any]]:
    r = renderer()
    name, port = options.get("name", "babelrs-finetune"), options.get("port", 29400)
    params = r.load(ROOT / "params.yaml", overrides, name, port)
    # through the text kubectl gets: the rendered YAML parses back to the same manifests
    docs = r.render(params, overrides, **options)
    assert list(yaml.safe_load_all(r.dump(docs))) == docs
    return docs


def _kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def pod_params(args: list[str]) -> Any:
    """The params of the pods: the image's params.yaml (this checkout's) with their --set."""
    assert args[:3] == ["babelrs", "stage", "finetune"], args
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    assert len(args) == 3 + 2 * len(sets), args  # nothing but --set KEY=VALUE after the stage
    return load_params(ROOT / "params.yaml", _parse_overrides(sets))


def wiring_problems(docs: list[dict[str, Any]]) -> list[str]:
    problems = []
    svc, pvc, job = (_kind(docs, k) for k in ("Service", "PersistentVolumeClaim", "Job"))
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    params = pod_params(container["args"])
    d = params.distributed
    # one pod per node, all at once, none restarted
    if spec.get("completionMode") != "Indexed":
        problems.append(f"Job: completionMode {spec.get('completionMode')} is not Indexed")
    if not spec.get("completions") == spec.get("parallelism") == d.nnodes:
        problems.append(f"Job: completions {spec.get('completions')} / parallelism "
                        f"{spec.get('parallelism')} != distributed.nnodes {d.nnodes}")  # fmt: skip
    if spec.get("backoffLimit") != 0 or pod.get("restartPolicy") != "Never":
        problems.append("Job: a failed node is retried (backoffLimit 0, restartPolicy Never)")
    # the rendezvous: pod 0's stable name through the headless Service, on a port it serves
    name = svc["metadata"]["name"]
    if svc["spec"].get("clusterIP") != "None" or not svc["spec"].get("publishNotReadyAddresses"):
        problems.append("Service: not headless with publishNotReadyAddresses")
    labels = job["spec"]["template"]["metadata"].get("labels", {})
    if not svc["spec"]["selector"].items() <= labels.items():
        problems.append(f"Service: selector {svc['spec']['selector']} misses the pods {labels}")
    if pod.get("subdomain") != name:
        problems.append(f"pods: subdomain {pod.get('subdomain')} is not the Service {name}")
    host, _, port = str(d.rdzv_endpoint).rpartition(":")
    if host != f"{job['metadata']['name']}-0.{name}":
        problems.append(f"rendezvous: {d.rdzv_endpoint} is not pod 0 of the Job via {name}")
    svc_ports = {p["port"] for p in svc["spec"]["ports"]}
    pod_ports = {p["containerPort"] for p in container.get("ports", [])}
    if int(port) not in svc_ports or int(port) not in pod_ports:
        problems.append(
            f"rendezvous: port {port} not served (Service {svc_ports}, pod {pod_ports})"
        )
    # rank 0 on pod 0: its address sorts first, it hosts the store; the others only connect
    script = container["command"][-2]
    if f'export PET_LOCAL_ADDR="$(hostname).{name}"' not in script:
        problems.append("node script: PET_LOCAL_ADDR is not <pod>.<Service>")
    if not re.search(r'JOB_COMPLETION_INDEX" = 0 \]; then host=true; else host=false', script) or (
        "is_host=$host" not in script
    ):
        problems.append("node script: is_host is not set for pod 0 only")
    # one GPU per process, requested and limited
    for part in ("requests", "limits"):
        if container["resources"][part].get(GPU) != d.nproc_per_node:
            problems.append(f"pods: {GPU} {part} {container['resources'][part].get(GPU)} != "
                            f"distributed.nproc_per_node {d.nproc_per_node}")  # fmt: skip
    # every node pulls the stage's inputs; the outputs go to the shared volume
    pulled = re.search(r"^dvc pull -r s3 (.+)$", script, re.M)
    inputs = [str(p) for p in stage("finetune").inputs(params)]
    if not pulled or pulled[1].split() != inputs:
        problems.append(
            f"node script: dvc pull {pulled and pulled[1]} != the stage inputs {inputs}"
        )
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    out = str(Path("/opt/babelrs") / params.paths.finetune_out)  # the image's checkout
    claim = pvc["metadata"]["name"]
    shared = [n for n, v in volumes.items()
              if v.get("persistentVolumeClaim", {}).get("claimName") == claim]  # fmt: skip
    if [mounts.get(n) for n in shared] != [out]:
        problems.append(f"outputs: {out} is not the shared volume's mount ({shared}, {mounts})")
    if pvc["spec"].get("accessModes") != ["ReadWriteMany"]:
        problems.append(f"outputs: volume {pvc['spec'].get('accessModes')} is not ReadWriteMany")
    # the one GPU recipe's scheduling, image and environment
    template = json.loads((K8S / "gpu-job-template.json").read_text())
    gpu_pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    (gpu_container,) = gpu_pod["containers"]
    for key in ("nodeSelector", "tolerations"):
        if pod.get(key) != gpu_pod[key]:
            problems.append(f"pods: {key} {pod.get(key)} is not the GPU template's")
    if container.get("envFrom") != gpu_container["envFrom"]:
        problems.append("pods: envFrom is not the GPU template's ConfigMap / Secret")
    image = template["variables"]["properties"]["image"]["default"]
    if container["image"] != image:
        problems.append(f"pods: image {container['image']} is not the GPU template's {image}")
    namespaces = {doc["metadata"].get("namespace") for doc in docs}
    if namespaces != {template["variables"]["properties"]["namespace"]["default"]}:
        problems.append(f"namespaces {namespaces} are not the GPU template's")
    return problems


#: 2 nodes x 1 process (the fine-tuning batch: a multiple of processes x the source ratio sum 4)
TWO = ["distributed.nnodes=2", "finetune.batch_size=8"]


@pytest.mark.parametrize(
    ("overrides", "nnodes", "nproc"),
    [
        (TWO, 2, 1),
        (
            [
                "distributed.nnodes=4",
                "distributed.nproc_per_node=2",
                "finetune.batch_size=32",
                "paths.finetune_out=outputs/finetune-4x2",
            ],
            4,
            2,
        ),
    ],
)
def test_the_multinode_job_agrees_with_params(
    overrides: list[str], nnodes: int, nproc: int
) -> None:
    docs = rendered(overrides)
    assert wiring_problems(docs) == []
    job = _kind(docs, "Job")
    params = pod_params(job["spec"]["template"]["spec"]["containers"][0]["args"])
    assert (params.distributed.nnodes, params.distributed.nproc_per_node) == (nnodes, nproc)
    assert job["spec"]["completions"] == nnodes  # what wiring_problems compared, by value
    assert params.distributed.rdzv_endpoint == "babelrs-finetune-0.babelrs-finetune:29400"
    expected = renderer().load(ROOT / "params.yaml", overrides, "babelrs-finetune", 29400)
    assert params.model_dump() == expected.model_dump()  # the pods run with the rendered params


def test_the_command_line_renders_the_same_manifests(capsys: pytest.CaptureFixture[str]) -> None:
    r = renderer()
    r.main([*(a for o in TWO for a in ("--set", o)), "--name", "ft", "--port", "29500"])
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert docs == rendered(TWO, name="ft", port=29500)
    assert wiring_problems(docs) == []
    with pytest.raises(SystemExit, match="nnodes x nproc_per_node"):
        r.main(["--set", "distributed.nnodes=3"])  # params checks first (batch of 8 over 3)


def test_the_template_uses_only_the_renderers_variables() -> None:
    text = (K8S / "finetune-multinode.yaml").read_text()
    list(yaml.safe_load_all(text))  # parses as it is (placeholders are quoted)
    r = renderer()
    params = r.load(ROOT / "params.yaml", TWO, "x", 1)
    assert set(re.findall(r"\{\{ *(\w+) *\}\}", text)) == set(r.values(params, []))


def test_docs_tell_how_to_launch_it() -> None:
    text = (ROOT / "docs" / "deploy.md").read_text()
    for name in ("infra/k8s/finetune-multinode.yaml", "infra/k8s/render_finetune_job.py",
                 "PET_LOCAL_ADDR", "dvc pull", "ReadWriteMany"):  # fmt: skip
        assert name in text, name


def _job_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _kind(docs, "Job")["spec"]["template"]["spec"]


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _job_pod(docs)["containers"][0]


def _set_arg(docs: list[dict[str, Any]], key: str, value: str) -> None:
    args = _container(docs)["args"]
    i = next(i for i, a in enumerate(args) if a.startswith(f"{key}="))
    args[i] = f"{key}={value}"


def _script(docs: list[dict[str, Any]], old: str, new: str) -> None:
    command = _container(docs)["command"]
    command[-2] = command[-2].replace(old, new)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: _kind(d, "Job")["spec"].update(completions=3), "Job: completions"),
        (
            lambda d: (
                _set_arg(d, "distributed.nnodes", "4") or _set_arg(d, "finetune.batch_size", "16")
            ),
            "Job: completions",
        ),
        (lambda d: _kind(d, "Job")["spec"].pop("completionMode"), "Job: completionMode"),
        (lambda d: _kind(d, "Job")["spec"].update(backoffLimit=3), "Job: a failed node"),
        (lambda d: _kind(d, "Service")["spec"].pop("clusterIP"), "Service: not headless"),
        (lambda d: _kind(d, "Service")["spec"].update(selector={"app": "x"}), "Service: selector"),
        (lambda d: _job_pod(d).update(subdomain="other"), "pods: subdomain"),
        (
            lambda d: _set_arg(
                d, "distributed.rdzv_endpoint", "babelrs-finetune-1.babelrs-finetune:29400"
            ),
            "rendezvous: babelrs-finetune-1",
        ),
        (
            lambda d: _set_arg(
                d, "distributed.rdzv_endpoint", "babelrs-finetune-0.babelrs-finetune:1"
            ),
            "rendezvous: port 1",
        ),
        (lambda d: _script(d, "export PET_LOCAL_ADDR", "export OTHER"), "node script: PET_LOCAL"),
        (
            lambda d: _script(
                d, "then host=true; else host=false", "then host=true; else host=true"
            ),
            "node script: is_host",
        ),
        (lambda d: _container(d)["resources"]["limits"].update({GPU: 2}), f"pods: {GPU} limits"),
        (
            lambda d: (
                _set_arg(d, "distributed.nproc_per_node", "2")
                or _set_arg(d, "finetune.batch_size", "16")
            ),
            f"pods: {GPU} requests",
        ),
        (lambda d: _script(d, " outputs/pretrain", ""), "node script: dvc pull"),
        (
            lambda d: _container(d)["args"].extend(["--set", "paths.finetune_out=elsewhere"]),
            "outputs: /opt/babelrs/elsewhere",
        ),
        (
            lambda d: _kind(d, "PersistentVolumeClaim")["spec"].update(
                accessModes=["ReadWriteOnce"]
            ),
            "outputs: volume",
        ),
        (lambda d: _job_pod(d).update(tolerations=[]), "pods: tolerations"),
        (lambda d: _container(d).update(image="babelrs:latest"), "pods: image"),
        (lambda d: _kind(d, "Service")["metadata"].update(namespace="ml"), "namespaces"),
    ],
)
def test_a_wiring_mistake_is_caught(change, expected: str) -> None:
    docs = copy.deepcopy(rendered(TWO))
    change(docs)
    problems = wiring_problems(docs)
    assert any(p.startswith(expected) for p in problems), problems
