"""The encoder in a second process: the same rows as in-process, the collection's model, clear failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import photo

from vitsearch.api import VisualSearch
from vitsearch.encoder_process import ENV, EncoderProcess, enabled
from vitsearch.errors import ModelError, VitsearchError
from vitsearch.store import path_id


def _folder(root: Path, n: int = 12, broken: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        photo(i).save(root / f"p{i:02d}.png")
    if broken:
        (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def _vectors(vs: VisualSearch, folder: Path) -> dict[str, np.ndarray]:
    paths = sorted(str(p.resolve()) for p in folder.iterdir() if p.suffix == ".png")
    rows = vs.store.get([path_id(p) for p in paths], ["path", "vector"])
    return {row["path"]: np.asarray(row["vector"], dtype=np.float32) for row in rows}


def test_the_process_gives_the_rows_the_encoder_gives_in_process(tmp_path, tiny_models):
    folder = _folder(tmp_path / "pics")
    model = str(tiny_models["vit"])
    with VisualSearch(str(tmp_path / "a.db"), model=model, encoder_process=True, batch_size=5) as a, \
         VisualSearch(str(tmp_path / "b.db"), model=model, batch_size=5) as b:
        sa, sb = a.index([folder]), b.index([folder])
        assert (sa.added, sa.embedded, [Path(f.path).name for f in sa.failed]) == (12, 12, ["broken.jpg"])
        assert (sb.added, sb.embedded, [f.reason for f in sb.failed]) == (12, 12, [f.reason for f in sa.failed])
        va, vb = _vectors(a, folder), _vectors(b, folder)
        assert va.keys() == vb.keys() and len(va) == 12
        for path in va:
            np.testing.assert_allclose(va[path], vb[path], atol=1e-5)
        assert a._encoder is None  # the process was closed with the run; nothing stays loaded here
        assert a.index([folder]).unchanged == 12  # a re-run: nothing to embed, the process is not waited for


def test_a_collection_built_with_another_model_keeps_its_model(tmp_path, tiny_models):
    """The process starts with a guess (the bundled model) before the store says which model the
    collection has; a collection of another model is indexed with that model."""
    db = str(tmp_path / "c.db")
    first, second = _folder(tmp_path / "one", 4, broken=False), _folder(tmp_path / "two", 3, broken=False)
    with VisualSearch(db, model=str(tiny_models["dinov2"])) as vs:
        vs.index([first])
    with VisualSearch(db, encoder_process=True) as vs:  # no model given: the collection's
        summary = vs.index([first, second])
        assert (summary.added, summary.unchanged) == (3, 4)
        assert vs.spec.name == str(tiny_models["dinov2"])


def test_a_model_that_cannot_load_is_a_model_error(tmp_path):
    with EncoderProcess(str(tmp_path / "no-such-model")) as proc, pytest.raises(ModelError):
        proc.fingerprint  # noqa: B018


def test_a_child_that_dies_is_reported_not_waited_for(tmp_path, tiny_models):
    folder = _folder(tmp_path / "pics", 3, broken=False)
    proc = EncoderProcess(str(tiny_models["vit"]), device="cpu", num_workers=0)
    try:
        assert proc.ready()["device"] == "cpu"
        assert [r.error for r in proc.encode_files([str(p) for p in sorted(folder.iterdir())])] == [None] * 3
        proc._proc.kill()
        with pytest.raises(VitsearchError, match="embedding process stopped"):
            list(proc.encode_files([str(folder / "p00.png")]))
    finally:
        proc.close()


def test_closing_a_process_that_is_still_loading_ends_it_at_once(tiny_models):
    proc = EncoderProcess(str(tiny_models["vit"]))
    proc.close()
    assert proc._proc.returncode is not None
    proc.close()  # twice is fine


@pytest.mark.parametrize("value, on", [(None, True), ("1", True), ("0", False), ("off", False), ("no", False)])
def test_the_environment_turns_it_off(monkeypatch, value, on):
    if value is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, value)
    assert enabled() is on


def test_the_cli_index_never_imports_torch_in_its_own_process(tmp_path, tiny_models):
    folder = _folder(tmp_path / "pics", 5)
    script = (
        "import json, sys\n"
        "from vitsearch.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:], standalone_mode=False)\n"
        "finally:\n"
        "    print(json.dumps({'torch': 'torch' in sys.modules}))\n"
    )
    env = {**os.environ, ENV: "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, "index", str(folder), "--uri", str(tmp_path / "x.db"),
         "--model", str(tiny_models["deit"]), "--json"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    summary, imported = (json.loads(line) for line in done.stdout.strip().splitlines()[-2:])
    assert (summary["added"], len(summary["failed"])) == (5, 1)
    assert imported == {"torch": False}


def test_weights_that_cannot_load_fail_the_run_as_in_process(tmp_path, tiny_models):
    import shutil

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_models["vit"], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    folder = _folder(tmp_path / "pics", 3, broken=False)
    for how in (False, True):
        with VisualSearch(str(tmp_path / f"{how}.db"), model=str(broken), encoder_process=how) as vs, \
             pytest.raises(ModelError):
            vs.index([folder])
