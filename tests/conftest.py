"""Shared fixtures (helper functions are in helpers.py). Every default location points into tmp_path;
nothing touches the network."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SAMPLES, tiny_model, wait_until_up

try:  # the fuzz tests: the same inputs on every run, so that a test run is reproducible;
    # `pytest --hypothesis-profile=explore tests/test_fuzz.py` draws new ones (run it now and then)
    from hypothesis import settings

    settings.register_profile("default", derandomize=True, print_blob=True)
    settings.register_profile("explore", derandomize=False, print_blob=True)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
except ImportError:  # hypothesis is a test extra; only test_fuzz needs it
    pass


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    # The CLI's index embeds in a second process (vitsearch.encoder_process); under pytest, whose process
    # has torch loaded already, that only costs a start-up per run. Its own tests turn it on.
    monkeypatch.setenv("VITSEARCH_ENCODER_PROCESS", "0")
    for var in ("VITSEARCH_URI", "VITSEARCH_COLLECTION", "VITSEARCH_MODEL", "VITSEARCH_TOKEN",
                "VITSEARCH_DEVICE", "VITSEARCH_PRECISION", "VITSEARCH_API_KEYS", "VITSEARCH_KEYS_FOR_READS",
                "VITSEARCH_CORS_ORIGINS", "VITSEARCH_LOG_JSON"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("models")
    return {kind: tiny_model(base / kind, kind) for kind in ("vit", "deit", "dinov2", "clip")}


@pytest.fixture(scope="session")
def bundled_encoder():
    from vitsearch import Encoder

    return Encoder(device="cpu", batch_size=16, num_workers=0)


@pytest.fixture
def cli_encoder(monkeypatch, bundled_encoder):
    """The CLI's ``VisualSearch`` gets the session's loaded bundled encoder passed in (``encoder=``), unless
    the command names a ``--model``: every command of a test shares the model, loaded once."""
    import vitsearch.api

    class WithEncoder(vitsearch.api.VisualSearch):
        def __init__(self, *args, **kwargs):
            if kwargs.get("model") is None:
                kwargs["encoder"] = bundled_encoder
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(vitsearch.api, "VisualSearch", WithEncoder)
    return bundled_encoder


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder of six real sample photos and one planted near-duplicate, in two sub-folders."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name in ("chelsea", "coffee", "astronaut"):
        shutil.copy(SAMPLES / "photos" / f"{name}.jpg", folder / f"{name}.jpg")
    for name in ("rocket", "horse"):
        shutil.copy(SAMPLES / "photos" / f"{name}.jpg", folder / "sub" / f"{name}.JPG")
    shutil.copy(SAMPLES / "fashion" / "sneaker_1.png", folder / "sub" / "sneaker.png")
    shutil.copy(SAMPLES / "near_duplicates" / "chelsea_small_bright.png", folder / "sub" / "cat_copy.png")
    return folder


@pytest.fixture
def lite_uri(tmp_path) -> str:
    return str(tmp_path / "store.db")


@pytest.fixture
def restore_logging():
    """Put the server's loggers back as they were (`vitsearch serve` configures them for its process)."""
    names = ("vitsearch", "uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate)
             for n in names}
    yield
    for n, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(n)
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


@pytest.fixture
def serve_app(lite_uri, photos, bundled_encoder, tmp_path):
    """``serve_app(**create_app_options)``: a test client of `vitsearch serve`'s app over the indexed
    photos (one ``Service``, at ``serve_app.service``, for every app the test makes)."""
    from fastapi.testclient import TestClient

    from vitsearch import VisualSearch
    from vitsearch.server import Service, create_app

    vs = VisualSearch(lite_uri, encoder=bundled_encoder)
    vs.index(photos)
    service = Service(vs, upload_dir=str(tmp_path / "uploads"), thumbnail_dir=str(tmp_path / "thumbs"),
                      max_upload_bytes=1_000_000)
    clients = []

    def make(**options):
        client = TestClient(create_app(service, **options))
        clients.append(client.__enter__())
        return client

    make.service = service
    yield make
    for client in clients:
        client.__exit__(None, None, None)
    service.close()


@pytest.fixture(scope="session")
def lite_server_uri(tmp_path_factory):
    """Milvus Lite's server mode (`milvus-lite server`) on a free port, for the session."""
    from faults import free_port

    from vitsearch.errors import StoreError
    from vitsearch.store import Store

    exe = shutil.which("milvus-lite") or os.path.join(os.path.dirname(sys.executable), "milvus-lite")
    if not os.path.exists(exe):
        pytest.skip("milvus-lite's server command is not installed")
    port = free_port()
    data = tmp_path_factory.mktemp("lite-server") / "shared.db"
    proc = subprocess.Popen([exe, "server", "--data-dir", str(data), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    def answers() -> bool:
        Store(uri, "probe", retry_for=0).exists()  # raises StoreError until the server answers
        return True

    try:
        wait_until_up(proc, answers, seconds=60, errors=(StoreError,), failure=lambda: "milvus-lite server did not start")
        yield uri
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def server_uri():
    """A Milvus server URI: MILVUS_URI, else one started from PyPI `milvus` (skipped when absent)."""
    uri = os.environ.get("MILVUS_URI")
    if uri:
        return uri
    pytest.skip("no Milvus server: set MILVUS_URI (CI starts one from PyPI milvus==2.3.5)")


@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible server (moto's server mode) on 127.0.0.1, and the environment that points
    boto/s3fs at it; skipped when moto[server] or s3fs is not installed."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    from faults import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    def answers() -> bool:
        socket.create_connection(("127.0.0.1", port), 0.5).close()  # OSError until it listens
        return True

    try:
        wait_until_up(proc, answers, seconds=60, interval=0.2, failure=lambda: "moto server did not start")
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def s3(s3_server, monkeypatch):
    """An fsspec S3 filesystem on the local server, with this test's environment pointing at it."""
    for name, value in s3_server.items():
        monkeypatch.setenv(name, value)
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    return fs
