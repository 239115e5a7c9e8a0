"""A small Kustomize for the subset deploy/k8s uses (no kubectl or kustomize binary here).

Supported: ``resources`` (files and kustomization folders), ``namespace``, ``labels`` (metadata
only), ``configMapGenerator`` (``files``, no name hash), ``images`` (container images and a
FlinkDeployment's ``spec.image``) and ``patches`` with ``path`` (strategic merge: maps merge, lists
of named items merge by name, other lists are replaced).  Anything else in a kustomization is an
error, so the manifests cannot quietly use what this does not render.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KNOWN = {"apiVersion", "kind", "namespace", "labels", "resources", "configMapGenerator", "generatorOptions",
         "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _name(item: Any) -> Any:
    if isinstance(item, dict):
        return item.get("name") or (item.get("metadata") or {}).get("name")
    return None


def merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(_name(x) for x in base + patch):
        items = list(base)
        for p in patch:
            i = next((j for j, b in enumerate(items) if _name(b) == _name(p)), None)
            if i is None:
                items.append(copy.deepcopy(p))
            else:
                items[i] = merge(items[i], p)
        return items
    return copy.deepcopy(patch)


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec") or {}
    pod = ((spec.get("template") or {}).get("spec")) or {}
    return list(pod.get("containers") or []) + list(pod.get("initContainers") or [])


def render(folder: str | Path) -> list[dict[str, Any]]:
    """The manifests a kustomization folder renders to."""
    folder = Path(folder)
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(k) - KNOWN
    if unknown:
        raise ValueError(f"{folder}/kustomization.yaml uses {sorted(unknown)}, which k8s_render does not render")
    docs: list[dict[str, Any]] = []
    for r in k.get("resources", []):
        p = folder / r
        docs += render(p) if p.is_dir() else _docs(p)
    for g in k.get("configMapGenerator", []):
        data = {Path(f).name: (folder / f).read_text() for f in g.get("files", [])}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": g["name"]}, "data": data})
    for p in k.get("patches", []):
        patch = _docs(folder / p["path"])[0]
        hits = [i for i, d in enumerate(docs) if d["kind"] == patch["kind"]
                and d["metadata"]["name"] == patch["metadata"]["name"]]
        if len(hits) != 1:
            raise ValueError(f"patch {p['path']} matches {len(hits)} resources")
        docs[hits[0]] = merge(docs[hits[0]], patch)
    for img in k.get("images", []):
        for d in docs:
            targets = _containers(d)
            for c in targets:
                if c.get("image", "").split(":")[0] == img["name"]:
                    c["image"] = f"{img.get('newName', img['name'])}:{img['newTag']}"
            if d["kind"] == "FlinkDeployment" and d["spec"]["image"].split(":")[0] == img["name"]:
                d["spec"]["image"] = f"{img.get('newName', img['name'])}:{img['newTag']}"
    for d in docs:
        md = d.setdefault("metadata", {})
        if k.get("namespace") and d["kind"] not in CLUSTER_SCOPED:
            md["namespace"] = k["namespace"]
        for lab in k.get("labels", []):
            md.setdefault("labels", {}).update(lab["pairs"])
    return docs
