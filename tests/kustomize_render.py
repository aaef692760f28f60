"""A small kustomize for machines without kubectl: renders deploy/k8s's kustomizations so that
tests/test_deploy_kubernetes.py can validate them. Where kubectl exists the tests use `kubectl kustomize`
and check that this renderer gives the same objects.

It implements only what our kustomization.yaml files use, and refuses anything else:
- `resources`: YAML files, and directories holding a kustomization.yaml (built first, recursively);
- `namespace`: set on every object;
- `patches` with `path:` to a strategic-merge patch, matched to its object by kind and name. Mappings
  merge key by key. Lists merge element by element only where Kubernetes declares a merge key and
  this table knows it (`MERGE_KEYS`): the patch's elements first, in the patch's order (merged with the
  original element of the same key), then the original elements the patch did not name; this is the
  order kustomize produces. Every other list in a patch replaces the original list, as for
  Kubernetes' atomic lists. `$patch`/`$setElementOrder` directives and JSON 6902 patches are refused;
- `images`: newName / newTag / digest for containers and initContainers whose image name matches.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "namespace", "patches", "images"}
# Strategic-merge keys of the lists our patches touch (from the Kubernetes API's patchMergeKey).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name", "volumeMounts": "mountPath"}


class Unsupported(ValueError):
    """The kustomization uses a feature this renderer does not implement: use kubectl kustomize."""


def render(directory: Path) -> list[dict]:
    """The objects `kubectl kustomize directory` would print, in resource order."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED_FIELDS
    if unknown:
        raise Unsupported(f"{directory}/kustomization.yaml: {sorted(unknown)} not implemented")
    objects: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            objects += render(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    if "namespace" in kustomization:
        for obj in objects:
            obj.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
    for patch_entry in kustomization.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise Unsupported(f"patch {patch_entry}: only `path:` strategic-merge patches are implemented")
        for patch in yaml.safe_load_all((directory / patch_entry["path"]).read_text()):
            apply_patch(objects, patch, directory / patch_entry["path"])
    for image in kustomization.get("images", []):
        for obj in objects:
            set_image(obj, image)
    return objects


def apply_patch(objects: list[dict], patch: dict, source: Path) -> None:
    name, kind = patch["metadata"]["name"], patch["kind"]
    targets = [i for i, obj in enumerate(objects) if obj["kind"] == kind and obj["metadata"]["name"] == name]
    if len(targets) != 1:
        raise ValueError(f"{source}: patch for {kind}/{name} matches {len(targets)} objects")
    objects[targets[0]] = merge(objects[targets[0]], patch)


def merge(original, patch, field: str = ""):
    if isinstance(patch, dict):
        if any(key.startswith("$") for key in patch):
            raise Unsupported(f"patch directive in {field or 'the patch'}: {sorted(patch)}")
        if not isinstance(original, dict):
            return copy.deepcopy(patch)
        result = dict(original)
        for key, value in patch.items():
            result[key] = merge(original.get(key), value, key) if value is not None else None
        return {key: value for key, value in result.items() if value is not None}  # null deletes, as in SMP
    if isinstance(patch, list) and field in MERGE_KEYS and isinstance(original, list):
        key = MERGE_KEYS[field]
        by_key = {item[key]: item for item in original}
        named = [item[key] for item in patch]
        merged = [merge(by_key[item[key]], item, field) if item[key] in by_key else copy.deepcopy(item) for item in patch]
        return merged + [item for item in original if item[key] not in named]
    return copy.deepcopy(patch)


def split_image(reference: str) -> tuple[str, str | None, str | None]:
    """"registry:5000/repo/name:tag@sha256:…" → (name, tag, digest); a colon before the last slash is a port."""
    reference, _, digest = reference.partition("@")
    name, tag = reference, None
    if ":" in reference.rsplit("/", 1)[-1]:
        name, tag = reference.rsplit(":", 1)
    return name, tag, digest or None


def set_image(obj: dict, image: dict) -> None:
    for container in containers(obj):
        name, tag, digest = split_image(container["image"])
        if name != image["name"]:
            continue
        name = image.get("newName", name)
        if "digest" in image:
            tag, digest = None, image["digest"]
        elif "newTag" in image:
            tag, digest = image["newTag"], None
        container["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def containers(node) -> list[dict]:
    """Every container and init container anywhere in an object (Deployments, Jobs, CronJobs, …)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                found += value
            else:
                found += containers(value)
    elif isinstance(node, list):
        for item in node:
            found += containers(item)
    return found
