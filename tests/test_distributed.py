"""`torchrun -m vitsearch index`: two CPU processes (gloo) build the same collection as one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import photo, tiny_model

from vitsearch.api import STAGING
from vitsearch.store import ROW_FIELDS, Store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(tiny_model(tmp_path_factory.mktemp("model") / "tiny"))


@pytest.fixture
def folder(tmp_path) -> Path:
    folder = tmp_path / "imgs"
    for i in range(45):
        sub = folder / f"part{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        photo(i, (48 + i, 40)).save(sub / f"{i}.png")
    shutil.copy(folder / "part0" / "3.png", folder / "part1" / "copy_of_3.png")  # same content: embedded once
    (folder / "part2" / "broken.jpg").write_text("not an image")
    return folder


def _index(folder: Path, uri: str, collection: str, model: str, nproc: int = 1, *extra: str) -> dict:
    args = ["index", str(folder), "--uri", uri, "--collection", collection, "--model", model,
            "--precision", "fp32", "--batch-size", "8", "--json", *extra]
    if nproc == 1:
        cmd = [sys.executable, "-m", "vitsearch", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "vitsearch", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, r.stdout  # rank 0 alone reports
    return json.loads(lines[0])


def _snapshot(uri: str, collection: str) -> dict[str, dict]:
    store = Store(uri, collection)
    try:
        ids = [row["id"] for row in store.iter_rows()]
        return {row["path"]: row for row in store.get(ids, ROW_FIELDS + ["vector"])}
    finally:
        store.close()


def _same_collection(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert sorted(a) == sorted(b)
    for path, row in a.items():
        other = b[path]
        assert {k: row[k] for k in ROW_FIELDS} == {k: other[k] for k in ROW_FIELDS}, path
        np.testing.assert_allclose(row["vector"], other["vector"], atol=1e-5, err_msg=path)


def _check(folder: Path, single: tuple[str, str], multi: tuple[str, str], model: str) -> None:
    one = _index(folder, *single, model)
    two = _index(folder, *multi, model, nproc=2)
    for key in ("scanned", "added", "embedded", "reused", "removed"):
        assert one[key] == two[key], key
    assert (two["added"], two["embedded"]) == (46, 45)
    assert [os.path.basename(f["path"]) for f in two["failed"]] == ["broken.jpg"]
    _same_collection(_snapshot(*single), _snapshot(*multi))

    # incremental under torchrun too: one file changed, one gone, one new
    photo(500).save(folder / "part0" / "0.png")
    os.remove(folder / "part1" / "1.png")
    photo(501).save(folder / "part2" / "new.png")
    again = _index(folder, *multi, model, nproc=2)
    assert (again["updated"], again["removed"], again["added"], again["embedded"]) == (1, 1, 1, 2)
    _index(folder, *single, model)
    _same_collection(_snapshot(*single), _snapshot(*multi))

    # --reindex under torchrun: every rank writes into the new collection, which then replaces the old
    again = _index(folder, *multi, model, 2, "--reindex")
    assert (again["added"], again["embedded"], again["removed"]) == (46, 45, 0)
    _same_collection(_snapshot(*single), _snapshot(*multi))
    staging = Store(multi[0], multi[1] + STAGING)
    assert not staging.exists()
    staging.close()


def test_torchrun_on_a_lite_file_rank_0_writes_what_both_ranks_embed(folder, tmp_path, model):
    _check(folder, (str(tmp_path / "one.db"), "images"), (str(tmp_path / "two.db"), "images"), model)


@pytest.mark.server
def test_torchrun_on_a_milvus_server_each_rank_writes_its_shard(folder, model, server_uri):
    names = (f"dist_one_{os.getpid()}", f"dist_two_{os.getpid()}")
    try:
        _check(folder, (server_uri, names[0]), (server_uri, names[1]), model)
    finally:
        for name in names:
            Store(server_uri, name).drop()
