"""Nothing lost, nothing fatal: every kind of bad input, kill -9 mid-run, concurrent writers, and a
Milvus server that is unreachable or goes away in the middle of a run."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from click.testing import CliRunner
from corpus import write_corpus
from faults import Proxy, free_port
from helpers import photo, tiny_model

from vitsearch import VisualSearch
from vitsearch import indexer as indexer_module
from vitsearch.cli import _shown, main
from vitsearch.errors import StoreError
from vitsearch.indexer import sha256_file
from vitsearch.store import Store, is_transient, is_utf8


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(tiny_model(tmp_path_factory.mktemp("model") / "tiny"))


def _rows(uri: str, root: Path, model: str, collection: str = "images") -> list[dict]:
    with VisualSearch(uri, collection, model=model, device="cpu", precision="fp32", num_workers=0) as vs:
        ids = [r["id"] for r in vs.store.rows_under(str(root))]
        return vs.store.get(ids, ["*"])


# -- 1. every kind of input -----------------------------------------------------------------------
def test_every_kind_of_bad_odd_and_awkward_input_in_one_run(tmp_path, model):
    corpus = write_corpus(tmp_path / "corpus")
    uri = str(tmp_path / "c.db")
    args = ["index", str(corpus.root), "--uri", uri, "--model", model, "--precision", "fp32", "--workers", "0",
            "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)

    # --json names a path that is not UTF-8 as the text lines do, $'…' (strict JSON has no lone surrogates)
    shown = {_shown(str(corpus.root / rel)): rel for rel in corpus.bad if not is_utf8(rel)}
    failed = {shown.get(f["path"]) or os.path.relpath(f["path"], corpus.root): f["reason"] for f in summary["failed"]}
    assert set(failed) == set(corpus.bad), (failed, corpus.bad)
    for rel, reason in failed.items():
        assert re.search(corpus.bad[rel], reason), (rel, reason)
    assert summary["added"] == len(corpus.good)

    rows = {os.path.relpath(r["path"], corpus.root): r for r in _rows(uri, corpus.root, model)}
    assert set(rows) == set(corpus.good)
    with VisualSearch(model=model, device="cpu", precision="fp32", num_workers=0) as vs:
        names = sorted(corpus.expected)
        want = vs.encoder.encode([corpus.expected[n] for n in names])
    for name, vector in zip(names, want):
        row = rows[name]
        assert (row["width"], row["height"]) == corpus.good[name], name
        assert row["sha256"] == sha256_file(str(corpus.root / name))
        np.testing.assert_allclose(row["vector"], vector, atol=2e-4, err_msg=name)

    again = CliRunner().invoke(main, args)  # the bad ones fail again, the rest is untouched
    second = json.loads(again.stdout)
    assert (second["unchanged"], second["embedded"], len(second["failed"])) == (len(corpus.good), 0, len(corpus.bad))


def test_the_cli_reports_each_skipped_file_on_stderr_and_still_exits_0(tmp_path, model):
    corpus = write_corpus(tmp_path / "corpus")
    r = subprocess.run([sys.executable, "-m", "vitsearch", "index", str(corpus.root), "--uri", str(tmp_path / "c.db"),
                        "--model", model, "--workers", "1"], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    err = r.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err
    assert err.count("skipped ") == len(corpus.bad)
    assert f"added {len(corpus.good)}," in r.stdout.decode()


# -- 2. kill -9 at any moment ---------------------------------------------------------------------
def _index_cmd(folder: Path, uri: str, model: str) -> list[str]:
    return [sys.executable, "-m", "vitsearch", "index", str(folder), "--uri", uri, "--model", model,
            "--batch-size", "8", "--workers", "1", "--precision", "fp32", "--json"]


def _index(folder: Path, uri: str, model: str, *extra: str) -> dict:
    """`vitsearch index --json` in a subprocess; its summary."""
    r = subprocess.run(_index_cmd(folder, uri, model) + list(extra), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.slow
def test_kill_9_at_random_moments_then_a_rerun_gives_exactly_one_row_per_valid_image(tmp_path, model, monkeypatch):
    folder = tmp_path / "imgs"
    for i in range(700):  # enough for several flushes of 256 rows
        sub = folder / f"d{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        photo(i, (40, 32)).save(sub / f"{i}.png")
    (folder / "d0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    valid = sorted(str(p) for p in folder.rglob("*.png"))
    monkeypatch.setenv("VITSEARCH_ENCODER_PROCESS", "1")  # as users run it: the model in a second process

    reference = str(tmp_path / "ref.db")  # an uninterrupted run, timed, to aim the kills
    started = time.perf_counter()
    _index(folder, reference, model)
    full = time.perf_counter() - started

    uri = str(tmp_path / "killed.db")
    rng = random.Random(7)
    for fraction in (0.35, 0.55, 0.7, 0.8, 0.9, 0.97):  # each run resumes the one killed before it
        proc = subprocess.Popen(_index_cmd(folder, uri, model), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(full * fraction * rng.uniform(0.9, 1.1))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    summary = _index(folder, uri, model)
    assert [os.path.basename(f["path"]) for f in summary["failed"]] == ["broken.jpg"]
    assert summary["unchanged"] > 0  # the killed runs had written rows: the kills hit work under way

    rows = _rows(uri, folder, model)
    ref = {r["path"]: r for r in _rows(reference, folder, model)}
    assert len(rows) == len({r["id"] for r in rows}) == len(valid)  # no duplicates
    assert sorted(r["path"] for r in rows) == valid  # nothing missing, nothing extra
    for row in rows:  # no half-written row: every field as an uninterrupted run wrote it
        want = ref[row["path"]]
        assert {k: row[k] for k in ("size", "mtime", "sha256", "width", "height")} == {
            k: want[k] for k in ("size", "mtime", "sha256", "width", "height")}
        np.testing.assert_allclose(row["vector"], want["vector"], atol=1e-5)
    final = _index(folder, uri, model)
    assert (final["unchanged"], final["added"], final["embedded"]) == (len(valid), 0, 0)


# -- 3. concurrent writers ------------------------------------------------------------------------
HOLD = """
import sys, time
from vitsearch.store import Store
s = Store(sys.argv[1], "images"); s.exists(); print("holding", flush=True); time.sleep(120)
"""


def test_a_second_writer_on_a_held_lite_store_fails_fast_and_harms_nothing(tmp_path, model):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        photo(i).save(folder / f"{i}.png")
    uri = str(tmp_path / "s.db")
    _index(folder, uri, model)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, uri], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        photo(99).save(folder / "new.png")
        started = time.perf_counter()
        r = subprocess.run(_index_cmd(folder, uri, model)[:-1], capture_output=True, text=True, timeout=120)
        took = time.perf_counter() - started
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 1 and "in use by another process" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert took < 20  # seconds: python and torch start-up included, no waiting on the lock
    summary = _index(folder, uri, model)
    assert (summary["unchanged"], summary["added"]) == (5, 1)


def test_closing_a_lite_store_lets_another_process_open_it(tmp_path, model):
    uri = str(tmp_path / "s.db")
    first, second = Store(uri, "images"), Store(uri, "images")  # two in one process share the store
    first.create({"model": "m", "fingerprint": "f", "dim": 8})
    assert second.exists()
    other = [sys.executable, "-m", "vitsearch", "info", "--uri", uri]
    first.close()
    assert "in use by another process" in subprocess.run(other, capture_output=True, text=True).stderr
    second.close()  # the last one out lets go of the file lock
    r = subprocess.run(other, capture_output=True, text=True)
    assert r.returncode == 0 and "exists      True" in r.stdout, r.stderr


@pytest.mark.server
def test_two_writers_on_different_folders_of_one_server_collection_both_succeed(tmp_path, model, server_uri):
    collection = f"two_writers_{os.getpid()}"
    folders = []
    for f in range(2):
        folder = tmp_path / f"part{f}"
        folder.mkdir()
        for i in range(40):
            photo(100 * f + i).save(folder / f"{i}.png")
        folders.append(folder)
    procs = [subprocess.Popen(_index_cmd(folder, server_uri, model) + ["--collection", collection],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for folder in folders]
    outs = [p.communicate(timeout=300) for p in procs]
    try:
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, err.decode()
            assert json.loads(out)["added"] == 40
        store = Store(server_uri, collection)
        assert store.count() == 80
        for folder in folders:
            assert len(list(store.rows_under(str(folder)))) == 40
    finally:
        Store(server_uri, collection).drop()


def test_a_connection_the_server_closed_is_opened_again(lite_server_uri, monkeypatch):
    """CI once saw Milvus Lite's server mode answer a new client with GOAWAY "too many pings" on a
    channel pymilvus had cached: opening a store tries once more before it reports the server down."""
    import pymilvus

    # a fresh cached channel to the server first: one that earlier tests left idle may have been closed by
    # the server since (the very GOAWAY this test stands for), and the fake failure below would not replace it
    warm = Store(lite_server_uri, "reopened")
    warm.exists()
    warm.close()
    real, calls = pymilvus.MilvusClient, []

    def closed_once(*args, **kwargs):
        calls.append(kwargs.get("uri"))
        if len(calls) == 1:
            raise ConnectionError("Too many pings")
        return real(*args, **kwargs)

    monkeypatch.setattr(pymilvus, "MilvusClient", closed_once)
    store = Store(lite_server_uri, "reopened")
    try:
        assert not store.exists() and len(calls) == 2
    finally:
        store.close()


def test_milvus_lite_server_mode_lets_serve_and_index_share_one_local_store(tmp_path, model, lite_server_uri):
    import urllib.request

    uri = lite_server_uri
    served = None
    try:
        first, second = tmp_path / "first", tmp_path / "second"
        for folder, seed in ((first, 0), (second, 100)):
            folder.mkdir()
            for i in range(4):
                photo(seed + i).save(folder / f"{i}.png")
        assert _index(first, uri, model)["added"] == 4
        web = free_port()
        served = subprocess.Popen([sys.executable, "-m", "vitsearch", "serve", "--uri", uri, "--model", model,
                                   "--port", str(web), "--log-level", "warning", "--upload-dir", str(tmp_path / "up"),
                                   "--thumbnail-dir", str(tmp_path / "th")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web}/stats", timeout=2) as r:
                    assert json.load(r)["count"] == 4
                    break
            except OSError:
                assert time.time() < deadline and served.poll() is None, "serve did not start"
                time.sleep(0.3)
        # while serve holds the store open, another process indexes into it: no "in use" here
        assert _index(second, uri, model)["added"] == 4
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/stats", timeout=10) as r:
            assert json.load(r)["count"] == 8
    finally:
        if served is not None:
            served.terminate()
            served.wait(timeout=30)


# -- 4. Milvus server faults ----------------------------------------------------------------------
def test_an_unreachable_server_is_a_one_line_error(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    photo(1).save(tmp_path / "a.png")
    for cmd in (["index", str(tmp_path)], ["query", str(tmp_path / "a.png")], ["info"]):
        started = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "vitsearch", *cmd, "--uri", uri], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 1, r.stderr
        assert r.stderr.startswith(f"Error: cannot reach the Milvus server at {uri}") and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert time.perf_counter() - started < 30


def test_transient_errors_are_told_apart_from_bad_requests():
    class Unavailable(Exception):
        def code(self):
            return type("Code", (), {"name": "UNAVAILABLE"})()

    wrapped = RuntimeError("upsert failed")
    wrapped.__cause__ = Unavailable()
    assert is_transient(wrapped) and is_transient(ConnectionResetError())
    assert not is_transient(ValueError("cannot parse expression: size >"))
    # a filter quoted back by the server is the user's words, not the server's state
    quoted = RuntimeError("unexpected token 'UNAVAILABLE' at column 8 SERVER UNAVAILABLE ^^^")
    assert is_transient(quoted) and not is_transient(quoted, echo="SERVER UNAVAILABLE")
    assert not is_transient(RuntimeError('bad value "connection refused"'), echo='label == "connection refused"')
    # a Milvus 2.3 server that is stopping: its proxy answers, its coordinators are gone (pymilvus's words)
    from pymilvus.exceptions import MilvusException

    stopping = MilvusException(code=65535, message="empty grpc client: find no available rootcoord, check rootcoord state")
    assert is_transient(stopping)


def test_retry_seconds_must_be_a_number(monkeypatch):
    monkeypatch.setenv("VITSEARCH_RETRY_SECONDS", "soon")
    with pytest.raises(StoreError, match="VITSEARCH_RETRY_SECONDS"):
        Store("http://127.0.0.1:1", "x")


@pytest.fixture
def proxied(server_uri):
    target = urlparse(server_uri)
    with Proxy((target.hostname, target.port or 19530)) as proxy:
        yield proxy


@pytest.mark.server
def test_server_gone_mid_run_retries_then_fails_clearly_and_the_rerun_resumes(tmp_path, model, proxied, monkeypatch):
    monkeypatch.setattr(indexer_module, "FLUSH_ROWS", 8)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(40):
        photo(i).save(folder / f"{i:02d}.png")
    collection = f"gone_{os.getpid()}"
    vs = VisualSearch(proxied.uri, collection, model=model, device="cpu", precision="fp32", num_workers=0,
                      batch_size=4)
    vs.store.retry_for = 2.0
    encode_files = vs.encoder.encode_files

    def cut_midway(paths, batch_size=None):
        for n, res in enumerate(encode_files(paths, batch_size=batch_size)):
            if n == 20:
                proxied.down()  # the server goes away with 16 rows written and more to come
            yield res

    vs.encoder.encode_files = cut_midway
    try:
        with pytest.raises(StoreError, match="stopped answering .*re-run when the server is back"):
            vs.index(folder)
        assert vs.store.retries >= 2  # it backed off and tried again before giving up
        proxied.up()
        vs.encoder.encode_files = encode_files
        summary = vs.index(folder)
        assert summary.unchanged >= 16 and summary.unchanged + summary.added == 40 and not summary.failed
        rows = vs.store.get([r["id"] for r in vs.store.rows_under(str(folder))], ["path"])
        assert sorted(os.path.basename(r["path"]) for r in rows) == [f"{i:02d}.png" for i in range(40)]
    finally:
        if not proxied.is_up:
            proxied.up()
        vs.store.drop()
        vs.close()


@pytest.mark.server
def test_a_short_outage_is_ridden_out_by_the_retries(tmp_path, model, proxied):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        photo(i).save(folder / f"{i}.png")
    collection = f"blip_{os.getpid()}"
    with VisualSearch(proxied.uri, collection, model=model, device="cpu", precision="fp32", num_workers=0) as vs:
        vs.store.retry_for = 30.0
        try:
            vs.index(folder)
            photo(50).save(folder / "new.png")
            proxied.down()
            threading.Timer(1.5, proxied.up).start()
            summary = vs.index(folder)  # starts while the server is away, finishes when it is back
            assert (summary.added, summary.unchanged) == (1, 6)
            assert vs.store.retries >= 1
            assert [h.path for h in vs.query(folder / "new.png", k=1)] == [str(folder / "new.png")]
        finally:
            vs.store.drop()
