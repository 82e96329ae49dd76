"""The encoder in a second process: the same rows as in-process, the collection's model, clear failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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


def test_a_query_embeds_in_the_process_and_answers_as_in_process(tmp_path, tiny_models):
    folder = _folder(tmp_path / "pics", 6, broken=False)
    new = tmp_path / "new.png"
    photo(99).save(new)
    model = str(tiny_models["vit"])
    with VisualSearch(str(tmp_path / "q.db"), model=model) as vs:
        vs.index([folder])
        expected = vs.query(str(new), k=3)
    with VisualSearch(str(tmp_path / "q.db"), model=model, encoder_process=True) as vs:
        got = vs.query([str(new), str(folder / "p01.png")], k=3)
        assert [h.path for h in got[0]] == [h.path for h in expected]
        assert [round(h.score, 4) for h in got[0]] == [round(h.score, 4) for h in expected]
        assert got[1][0].path == str((folder / "p01.png").resolve())  # an indexed image: its stored vector
        assert vs._encoder is None
        bad = tmp_path / "bad.jpg"
        bad.write_bytes(b"not an image at all")
        with pytest.raises(VitsearchError, match="bad.jpg"):
            vs.query(str(bad))


def test_the_process_embeds_query_images_of_every_kind(tmp_path, tiny_models):
    from PIL import Image

    from vitsearch.embed import Encoder

    path = tmp_path / "a.png"
    photo(1).save(path)
    images = [str(path), path.read_bytes(), Image.open(path).convert("RGB"), np.asarray(photo(2))]
    with EncoderProcess(str(tiny_models["vit"]), device="cpu", num_workers=0) as proc:
        got = proc.encode(images)
    want = Encoder(str(tiny_models["vit"]), device="cpu", num_workers=0).encode(images)
    np.testing.assert_allclose(got, want, atol=1e-5)


def _child_of(pid: int, timeout: float = 120.0) -> int:
    """The pid of ``pid``'s encoder process, once it has started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"vitsearch.encoder_process" in cmdline:
                return int(entry)
        time.sleep(0.05)
    raise AssertionError(f"process {pid} started no encoder process")


def _gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":  # exited; its parent has not reaped it yet
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["ctrl-c", "kill-9"])
def test_no_encoder_process_outlives_an_interrupted_or_killed_index(tmp_path, tiny_models, how):
    folder = _folder(tmp_path / "pics", 1000, broken=False)
    env = {**os.environ, ENV: "1"}
    cmd = [sys.executable, "-m", "vitsearch", "index", str(folder), "--uri", str(tmp_path / "i.db"),
           "--model", str(tiny_models["vit"]), "--batch-size", "1"]  # a run of many seconds
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        child = _child_of(proc.pid)
        time.sleep(0.5)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        if how == "ctrl-c":  # a terminal sends SIGINT to the whole foreground group
            os.killpg(proc.pid, signal.SIGINT)
            _, err = proc.communicate(timeout=120)
            assert proc.returncode != 0 and b"Traceback" not in err
        else:
            proc.kill()
            proc.wait(timeout=60)
        assert _gone(child), f"the encoder process {child} outlived its parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_closed_process_says_so(tiny_models):
    proc = EncoderProcess(str(tiny_models["vit"]))
    proc.close()
    with pytest.raises(VitsearchError, match="closed"):
        list(proc.encode_files(["x.png"]))


def test_the_child_starts_from_any_folder_without_pythonpath(tmp_path, tiny_models, monkeypatch):
    """The child is told where this vitsearch lives (a script may have put a source tree on sys.path
    by hand); it runs from another folder, with no PYTHONPATH set."""
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.chdir(tmp_path)  # not the repository root, where `-m` would find the package anyway
    with EncoderProcess(str(tiny_models["vit"]), device="cpu", num_workers=0) as proc:
        assert proc.encode([np.asarray(photo(3))]).shape == (1, 32)
