"""Datasets for training and evaluation: class folders, a CSV manifest, or an unlabelled folder.

* A folder whose sub-folders hold images is labelled by the sub-folder names (the ImageFolder
  convention: ``DATA/<class>/**/*.jpg``); images loose in DATA itself are ignored then.
* A ``.csv`` file with a header naming ``path`` and ``label`` columns (paths relative to the file's
  folder, or absolute). Without a ``label`` column the images are unlabelled.
* Anything else (a flat folder, a single class) is an unlabelled set, for self-supervised training
  and near-duplicate evaluation.
"""

from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass, field

from .errors import UsageError, VitsearchError
from .images import Failure, discover, is_image_name
from .options import LABEL_MODES


@dataclass
class ImageSet:
    """Image paths with integer labels (``-1`` when unlabelled) and the class names they index.
    ``loose``: images beside the class folders, at the top level, which have no class (a near-duplicate
    test can still use them)."""

    source: str
    paths: list[str]
    labels: list[int]
    classes: list[str]
    failed: list[Failure] = field(default_factory=list)
    loose: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        return bool(self.classes)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices) -> ImageSet:
        indices = list(indices)
        return ImageSet(self.source, [self.paths[i] for i in indices], [self.labels[i] for i in indices], self.classes)

    def class_counts(self) -> dict[str, int]:
        counts = {name: 0 for name in self.classes}
        for label in self.labels:
            if label >= 0:
                counts[self.classes[label]] += 1
        return counts


def _class_folders(root: str) -> list[str]:
    try:
        with os.scandir(root) as it:
            return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    except OSError as exc:
        raise VitsearchError(f"cannot read folder {root}: {exc.strerror or exc}") from None


def _from_folders(root: str, labels: str) -> ImageSet:
    failed: list[Failure] = []
    folders = _class_folders(root) if labels != "none" else []
    per_class = []
    for name in folders:
        files = [e.path for e in discover([os.path.join(root, name)], failed)]
        if files:
            per_class.append((name, files))
    if labels == "folders" and len(per_class) < 2:
        raise VitsearchError(f"{root} needs at least two class folders with images (found {len(per_class)})")
    if len(per_class) >= 2:
        classes = [name for name, _ in per_class]
        paths = [p for _, files in per_class for p in files]
        target = [i for i, (_, files) in enumerate(per_class) for _ in files]
        loose = [e.path for e in discover([root], []) if os.path.dirname(e.path) == root]
        if loose:
            failed.append(Failure(root, f"{len(loose)} image(s) at the top level, outside every class folder, have "
                                        "no class: only a near-duplicate test uses them"))
        return ImageSet(root, paths, target, classes, failed, loose)
    paths = [e.path for e in discover([root], failed)]
    return ImageSet(root, paths, [-1] * len(paths), [], failed)


def _from_manifest(path: str, labels: str) -> ImageSet:
    base = os.path.dirname(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            if "path" not in fields:
                raise VitsearchError(f"{path}: the first line must name the columns, with a 'path' column (and 'label')")
            rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise VitsearchError(f"cannot read manifest {path}: {exc}") from None
    use_labels = "label" in fields and labels != "none"
    if labels == "folders" and not use_labels:
        raise VitsearchError(f"{path} has no 'label' column")
    failed: list[Failure] = []
    paths, names = [], []
    for line, row in enumerate(rows, start=2):
        if not row.get("path"):
            failed.append(Failure(f"{path}:{line}", "empty path"))
            continue
        full = os.path.abspath(os.path.join(base, os.path.expanduser(row["path"])))
        if not os.path.isfile(full):
            failed.append(Failure(full, "no such file (listed in the manifest)"))
            continue
        if use_labels and not row.get("label"):
            failed.append(Failure(full, "no label"))
            continue
        paths.append(full)
        names.append(row.get("label", ""))
    if not use_labels:
        return ImageSet(path, paths, [-1] * len(paths), [], failed)
    classes = sorted(set(names))
    index = {name: i for i, name in enumerate(classes)}
    return ImageSet(path, paths, [index[n] for n in names], classes, failed)


def read_images(source: str | os.PathLike, *, labels: str = "auto") -> ImageSet:
    """Read a dataset; ``labels``: ``auto`` (folders/CSV labels when present), ``folders`` (require them), ``none``."""
    if labels not in LABEL_MODES:
        raise UsageError(f"labels must be one of {', '.join(LABEL_MODES)}, not {labels!r}")
    source = os.path.abspath(os.path.expanduser(os.fspath(source)))
    if os.path.isdir(source):
        data = _from_folders(source, labels)
    elif os.path.isfile(source) and source.lower().endswith(".csv"):
        data = _from_manifest(source, labels)
    elif os.path.isfile(source) and is_image_name(source):
        raise VitsearchError(f"{source} is one image; give a folder of images or a CSV manifest")
    else:
        raise VitsearchError(f"{source} is neither a folder of images nor a .csv manifest")
    if not data.paths:
        raise VitsearchError(f"no images found in {source}")
    return data


def split(data: ImageSet, fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, validation) indices; stratified by class, and deterministic for a seed.

    When ``fraction > 0``, every class of four or more images gives at least two to validation, so
    that each validation query has a same-class item to find among the validation images.
    """
    if not 0.0 <= fraction < 1.0:
        raise UsageError(f"the validation fraction must be in [0, 1), not {fraction}")
    rng = random.Random(seed)
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(data.labels):
        groups.setdefault(label, []).append(i)
    train, val = [], []
    for label in sorted(groups):
        members = groups[label]
        rng.shuffle(members)
        take = round(len(members) * fraction)
        if fraction > 0 and label >= 0 and len(members) >= 4:
            take = max(take, 2)  # two, so that each validation item has a partner of its class
        take = min(take, len(members) - 1) if len(members) > 1 else 0
        val += members[:take]
        train += members[take:]
    return sorted(train), sorted(val)
