"""One Kubernetes GPU recipe: the pool's base job template
(``infra/k8s/gpu-job-template.json``), the worker's Helm values
(``infra/k8s/prefect-worker-values.yaml``), the ConfigMap / Secret (``infra/k8s/babelrs-env.yaml``),
the commented ``weekly-retrain-gpu`` deployment of ``prefect.yaml`` and the docs agree on the pool,
image, namespace, GPU request, node selector / toleration and environment names. The deployment
sets only variables the template declares, so nothing is defined twice.

``recipe_problems`` lists disagreements; the ``*_is_caught`` test proves it sees each one."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
GPU = "nvidia.com/gpu"


def variant_from_prefect_yaml(text: str) -> dict[str, Any]:
    """The commented ``weekly-retrain-gpu`` deployment of prefect.yaml, parsed."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() == "# - name: weekly-retrain-gpu")
    block = []
    for ln in lines[start:]:
        if not ln.startswith("  #"):
            break
        block.append(ln[4:])  # "  # " off
    (deployment,) = yaml.safe_load("\n".join(block))
    return deployment


def recipe() -> dict[str, Any]:
    env_docs = list(yaml.safe_load_all((K8S / "babelrs-env.yaml").read_text()))
    return {
        "template": json.loads((K8S / "gpu-job-template.json").read_text()),
        "values": yaml.safe_load((K8S / "prefect-worker-values.yaml").read_text()),
        "configmap": next(d for d in env_docs if d["kind"] == "ConfigMap"),
        "secret": next(d for d in env_docs if d["kind"] == "Secret"),
        "variant": variant_from_prefect_yaml((ROOT / "prefect.yaml").read_text()),
        "compose": yaml.safe_load((ROOT / "infra" / "docker-compose.yml").read_text()),
    }


def _svc_namespace(url: str) -> str | None:
    match = re.match(r"https?://[^./:]+\.([^./:]+)\.svc\b", url)
    return match[1] if match else None


def recipe_problems(r: dict[str, Any]) -> list[str]:
    problems = []
    template, values, variant = r["template"], r["values"], r["variant"]
    props = template["variables"]["properties"]
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # pool: the worker's and the deployment's
    pool = values["worker"]["config"]["workPool"]
    if variant["work_pool"]["name"] != pool:
        problems.append(f"pool: prefect.yaml {variant['work_pool']['name']} != Helm values {pool}")
    # the deployment sets only the template's variables, with the template's values
    job_vars = variant["work_pool"].get("job_variables") or {}
    for key in sorted(set(job_vars) - set(props)):
        problems.append(f"prefect.yaml job variable {key!r} is not a template variable")
    for key in ("image", "namespace", "service_account_name"):
        if key in job_vars and job_vars[key] != props[key].get("default"):
            problems.append(f"{key}: prefect.yaml {job_vars[key]} != template "
                            f"{props[key].get('default')}")  # fmt: skip
    # GPU request: the variable gpus, requested and limited, an integer >= 1 everywhere
    resources = container.get("resources", {})
    for part in ("requests", "limits"):
        if resources.get(part, {}).get(GPU) != "{{ gpus }}":
            problems.append(f"template: container {part} {GPU} is not the variable gpus")
    gpus = props.get("gpus", {})
    if gpus.get("type") != "integer" or int(gpus.get("default", 0)) < 1:
        problems.append(f"template: gpus variable {gpus}")
    if not isinstance(job_vars.get("gpus"), int) or job_vars["gpus"] < 1:
        problems.append(f"prefect.yaml: gpus {job_vars.get('gpus')!r} is not an integer >= 1")
    # GPU nodes: selector and toleration of the GPU taint, in the template
    if pod.get("nodeSelector") != {f"{GPU}.present": "true"}:
        problems.append(f"template: nodeSelector {pod.get('nodeSelector')}")
    if not any(t.get("key") == GPU and t.get("effect") == "NoSchedule"
               for t in pod.get("tolerations", [])):  # fmt: skip
        problems.append("template: no toleration of the nvidia.com/gpu taint")
    # environment: one ConfigMap and one Secret, the same names for pods and worker
    refs = {k: v["name"] for ref in container.get("envFrom", []) for k, v in ref.items()}
    cm, secret = r["configmap"]["metadata"]["name"], r["secret"]["metadata"]["name"]
    if refs != {"configMapRef": cm, "secretRef": secret}:
        problems.append(f"template envFrom {refs} != ConfigMap {cm} / Secret {secret}")
    if (values["worker"].get("extraEnvVarsCM"), values["worker"].get("extraEnvVarsSecret")) != (
        cm,
        secret,
    ):
        problems.append("Helm values: extraEnvVarsCM / extraEnvVarsSecret are not the pods'")
    for name in sorted(set(job_vars.get("env") or {}) - set(r["configmap"]["data"])):
        problems.append(f"prefect.yaml env {name} is not in the ConfigMap (one place)")
    # namespace
    namespaces = {
        "template": props["namespace"].get("default"),
        "ConfigMap": r["configmap"]["metadata"].get("namespace"),
        "Secret": r["secret"]["metadata"].get("namespace"),
        "Helm apiUrl": _svc_namespace(values["worker"]["selfHostedServerApiConfig"]["apiUrl"]),
        "ConfigMap PREFECT_API_URL": _svc_namespace(r["configmap"]["data"]["PREFECT_API_URL"]),
    }
    if len(set(namespaces.values())) != 1:
        problems.append(f"namespaces differ: {namespaces}")
    # image: the one infra/Dockerfile builds (compose tags it babelrs:cuda), from a registry
    image = str(props["image"].get("default", ""))
    compose_image = r["compose"]["x-babelrs-image"]["image"]
    if image.rsplit("/", 1)[-1] != compose_image:
        problems.append(f"image: template {image} is not a registry copy of {compose_image}")
    return problems


def test_the_kubernetes_gpu_recipe_agrees_with_itself() -> None:
    r = recipe()
    assert recipe_problems(r) == []
    assert r["variant"]["work_pool"]["job_variables"] == {"gpus": 1}  # nothing defined twice


def test_docs_name_the_one_recipe() -> None:
    for doc in ("docs/deploy.md", "docs/orchestration.md"):
        text = (ROOT / doc).read_text()
        assert "infra/k8s/gpu-job-template.json" in text and "babelrs-k8s-gpu" in text, doc
        assert "get-default-base-job-template" not in text, doc  # no second, hand-edited template


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r["variant"]["work_pool"].update(name="gpu-pool"), "pool:"),
        (
            lambda r: r["variant"]["work_pool"]["job_variables"].update(
                resources={"limits": {GPU: 1}}
            ),
            "prefect.yaml job variable 'resources'",
        ),
        (
            lambda r: r["variant"]["work_pool"]["job_variables"].update(
                image="registry.example.com/babelrs:latest-cuda"
            ),
            "image: prefect.yaml",
        ),
        (
            lambda r: r["variant"]["work_pool"]["job_variables"].update(gpus="1"),
            "prefect.yaml: gpus",
        ),
        (
            lambda r: r["template"]["job_configuration"]["job_manifest"]["spec"]["template"][
                "spec"
            ].update(tolerations=[]),
            "template: no toleration",
        ),
        (lambda r: r["values"]["worker"].update(extraEnvVarsSecret="other"), "Helm values:"),
        (lambda r: r["configmap"]["metadata"].update(namespace="ml"), "namespaces differ"),
        (
            lambda r: r["template"]["variables"]["properties"]["image"].update(
                default="registry.example.com/babelrs:latest"
            ),
            "image: template",
        ),
    ],
)
def test_a_disagreement_is_caught(change, expected: str) -> None:
    r = copy.deepcopy(recipe())
    change(r)
    problems = recipe_problems(r)
    assert any(p.startswith(expected) for p in problems), problems
