"""deploy/k8s, validated offline: the Kustomize base and the AKS overlay render (tests/k8s_render.py),
every built-in kind passes ``kubernetes-validate --strict`` for Kubernetes 1.33, the FlinkDeployment
passes the Flink Kubernetes Operator's CRD schema (deploy/k8s/schemas), the YAML passes yamllint,
and the config files the ConfigMaps are generated from pass the project's own check-config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from k8s_render import render
from yamllint import linter
from yamllint.config import YamlLintConfig

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.33"   # AKS's current default line (1.31-1.33 supported in 2026)
CRD = K8S / "schemas" / "flinkdeployments.flink.apache.org-v1.yml"


def _crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("folder", ["base", "overlays/aks"])
def test_manifests_are_valid(folder: str) -> None:
    docs = render(K8S / folder)
    kinds = sorted({d["kind"] for d in docs})
    assert {"StatefulSet", "FlinkDeployment", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap", "Service"} <= set(
        kinds)
    schema = _crd_schema()
    for d in docs:
        if d["kind"] == "FlinkDeployment":
            jsonschema.validate(d, schema)
        else:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        assert d["kind"] == "Namespace" or d["metadata"]["namespace"] == "mailpulse"
    # secrets only by reference: no Secret object, every secretName / secretKeyRef is a name
    assert "Secret" not in kinds
    sts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "StatefulSet"}
    coll = sts["collector"]["spec"]["template"]["spec"]["containers"][0]
    assert "$(POD_NAME)" in coll["args"] and sts["collector"]["spec"]["volumeClaimTemplates"]
    flink = next(d for d in docs if d["kind"] == "FlinkDeployment")
    claims = {v["persistentVolumeClaim"]["claimName"] for v in flink["spec"]["podTemplate"]["spec"]["volumes"]}
    shards = sts["collector"]["spec"]["replicas"]
    assert {f"archive-collector-{i}" for i in range(shards)} <= claims   # the job reads every shard


def test_invalid_manifests_are_caught() -> None:
    docs = render(K8S / "base")
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    sts["spec"]["replicaz"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, K8S_VERSION, strict=True)
    flink = next(d for d in docs if d["kind"] == "FlinkDeployment")
    flink["spec"]["job"]["upgradeMode"] = "sometimes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(flink, _crd_schema())


def test_yamllint() -> None:
    conf = YamlLintConfig("extends: default\nrules:\n  line-length: {max: 120}\n  document-start: disable\n")
    problems = []
    for p in sorted(K8S.rglob("*.yaml")):
        problems += [f"{p.relative_to(ROOT)}:{e.line}: {e.message}" for e in linter.run(p.read_text(), conf)]
    assert problems == []


def test_configmap_files_pass_check_config(tmp_path: Path) -> None:
    for f in (K8S / "base" / "config").glob("*.toml"):
        r = subprocess.run([sys.executable, "-m", "mailpulse", "collector", "check-config", "--elsewhere", str(f)],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert r.returncode == 0, r.stderr
        bad = f.read_text().replace("[archive]", "[archive]\nmax_bytes = 10")
        (tmp_path / f.name).write_text(bad)
        r = subprocess.run([sys.executable, "-m", "mailpulse", "collector", "check-config", "--elsewhere",
                            str(tmp_path / f.name)], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert r.returncode == 2 and "max_bytes" in r.stderr
