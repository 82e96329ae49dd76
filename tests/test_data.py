"""Reading training / evaluation data: class folders, CSV manifests, unlabelled folders; splits."""

from __future__ import annotations

import pytest
from helpers import labelled_folder, photo

from vitsearch.data import read_images, split
from vitsearch.errors import VitsearchError


def test_class_folders(tmp_path):
    root = labelled_folder(tmp_path / "d", per_class=3)
    (root / "checks" / "deeper").mkdir()
    photo(1).save(root / "checks" / "deeper" / "x.jpg")
    photo(2).save(root / "loose.jpg")  # images beside class folders are not part of any class
    data = read_images(root)
    assert data.classes == ["checks", "hstripes", "vstripes"]
    assert data.class_counts() == {"checks": 4, "hstripes": 3, "vstripes": 3}
    assert all(p.startswith(str(root)) for p in data.paths) and str(root / "loose.jpg") not in data.paths


def test_a_flat_folder_or_a_single_class_is_unlabelled(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        photo(i).save(flat / f"{i}.jpg")
    data = read_images(flat)
    assert not data.labelled and data.labels == [-1, -1, -1]
    one = labelled_folder(tmp_path / "one", per_class=2, classes=("only",))
    assert not read_images(one).labelled
    with pytest.raises(VitsearchError, match="at least two class folders"):
        read_images(one, labels="folders")
    assert not read_images(labelled_folder(tmp_path / "two", per_class=2), labels="none").labelled


def test_csv_manifest(tmp_path):
    root = labelled_folder(tmp_path / "d", per_class=2)
    manifest = tmp_path / "d" / "list.csv"
    manifest.write_text(
        "path,label\n"
        "hstripes/hstripes_0.png,stripes\n"
        f"{root / 'vstripes' / 'vstripes_1.png'},stripes\n"
        "checks/checks_0.png,checks\n"
        "checks/missing.png,checks\n"
        "checks/checks_1.png,\n"
    )
    data = read_images(manifest)
    assert data.classes == ["checks", "stripes"]
    assert [p.rsplit("/", 1)[1] for p in data.paths] == ["hstripes_0.png", "vstripes_1.png", "checks_0.png"]
    assert data.labels == [1, 1, 0]
    reasons = {f.path.rsplit("/", 1)[1]: f.reason for f in data.failed}
    assert "no such file" in reasons["missing.png"] and reasons["checks_1.png"] == "no label"
    unlabelled = tmp_path / "d" / "paths.csv"
    unlabelled.write_text("path\nchecks/checks_0.png\n")
    assert not read_images(unlabelled).labelled


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("file,label\na.jpg,x\n"), "'path' column"),
        (lambda p: p.write_bytes(b"\xff\xfe\x00bad"), "cannot read manifest"),
        (lambda p: p.write_text("path,label\n"), "no images"),
    ],
)
def test_bad_manifests(tmp_path, make, message):
    manifest = tmp_path / "m.csv"
    make(manifest)
    with pytest.raises(VitsearchError, match=message):
        read_images(manifest)


def test_other_inputs_are_refused(tmp_path):
    photo(0).save(tmp_path / "one.jpg")
    with pytest.raises(VitsearchError, match="one image"):
        read_images(tmp_path / "one.jpg")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(VitsearchError, match="neither"):
        read_images(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VitsearchError, match="no images"):
        read_images(tmp_path / "empty")
    with pytest.raises(ValueError, match="labels must be"):
        read_images(tmp_path, labels="maybe")


def test_split_is_stratified_disjoint_and_seeded(tmp_path):
    data = read_images(labelled_folder(tmp_path / "d", per_class=10))
    train, val = split(data, 0.2, seed=5)
    assert sorted(train + val) == list(range(30)) and not set(train) & set(val)
    assert sorted(data.subset(val).class_counts().values()) == [2, 2, 2]
    assert split(data, 0.2, seed=5) == (train, val)
    assert split(data, 0.2, seed=6) != (train, val)
    assert split(data, 0.0) == (list(range(30)), [])
    with pytest.raises(ValueError):
        split(data, 1.0)
