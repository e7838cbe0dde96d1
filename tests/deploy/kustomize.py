"""A small kustomize, enough for ``k8s/``: builds a kustomization without kubectl.

It follows ``resources`` (files and directories), merges ``patches`` given by
``path`` (strategic-merge style: maps merge, lists of named items merge by
name, other lists are replaced), rewrites ``images`` and sets ``namespace``,
in kustomize's order. Any other kustomization field raises, so a manifest
change that this loader cannot follow fails the tests instead of being
silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]

SUPPORTED = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
}


class KustomizeError(ValueError):
    """The kustomization uses something this loader does not implement, or is wrong."""


def load_yaml_documents(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def build(directory: Path) -> list[Doc]:
    """The documents ``kubectl kustomize directory`` would print (in file order)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    docs: list[Doc] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            docs.extend(build(path))
        elif path.is_file():
            docs.extend(load_yaml_documents(path))
        else:
            raise KustomizeError(f"{directory}: resource {entry} not found")
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{directory}: only `path:` patches are supported, got {patch}")
        for change in load_yaml_documents(directory / patch["path"]):
            _apply_patch(docs, change)
    for image in kustomization.get("images", []):
        _set_image(docs, image)
    namespace = kustomization.get("namespace")
    if namespace:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = namespace
    return docs


def _apply_patch(docs: list[Doc], change: Doc) -> None:
    name = change["metadata"]["name"]
    targets = [d for d in docs if d["kind"] == change["kind"] and d["metadata"]["name"] == name]
    if len(targets) != 1:
        raise KustomizeError(f"patch target {change['kind']}/{name}: {len(targets)} matches")
    merged = merge(targets[0], change)
    targets[0].clear()
    targets[0].update(merged)


def merge(base: Any, change: Any) -> Any:
    """Strategic-merge-like: maps by key, lists of named maps by name, else replace."""
    if isinstance(base, dict) and isinstance(change, dict):
        out = dict(base)
        for key, value in change.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value)
            else:
                out[key] = value
        return out
    if isinstance(base, list) and isinstance(change, list) and _named(base) and _named(change):
        changes = {item["name"]: item for item in change}
        kept = [
            merge(item, changes.pop(item["name"])) if item["name"] in changes else item
            for item in base
        ]
        return kept + list(changes.values())
    return change


def _named(items: list[Any]) -> bool:
    return all(isinstance(item, dict) and "name" in item for item in items)


def pod_specs(doc: Doc) -> list[Doc]:
    spec = doc.get("spec", {})
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
    return [template["spec"]] if template else []


def _set_image(docs: list[Doc], image: Doc) -> None:
    for doc in docs:
        for pod in pod_specs(doc):
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                name, tag = split_image(container["image"])
                if name != image["name"]:
                    continue
                new_name = image.get("newName", name)
                new_tag = image.get("newTag", tag)
                container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name


def split_image(reference: str) -> tuple[str, str]:
    """``registry/name:tag`` as (``registry/name``, ``tag``); a port is not a tag."""
    head, sep, tail = reference.rpartition(":")
    if sep and "/" not in tail:
        return head, tail
    return reference, ""
