"""Helpers that tests import (``from helpers import photo``): pictures, tiny models, a `vitsearch serve`
process, a headless browser. Fixtures live in conftest.py; pytest finds this module through the
``pythonpath`` setting in pyproject.toml."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_images"


def load_module(name: str, path: Path):
    """A Python file that is not in a package (scripts/, benchmarks/) as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def photo(seed: int, size=(96, 72)) -> Image.Image:
    """A smooth random colour picture; different seeds give clearly different pictures."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.BICUBIC)


def tiny_model(path: Path, kind: str = "vit", image: int = 32) -> Path:
    """Create and save_pretrained a tiny random model of ``kind`` with its image-processor config."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=image)
    if kind == "vit":
        model = tf.ViTModel(tf.ViTConfig(patch_size=8, **common), add_pooling_layer=False)
        proc = {"image_processor_type": "ViTImageProcessor", "size": {"height": image, "width": image},
                "resample": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    elif kind == "deit":
        model = tf.DeiTModel(tf.DeiTConfig(patch_size=8, **common), add_pooling_layer=False)
        proc = {"image_processor_type": "DeiTImageProcessor", "size": {"height": image + 8, "width": image + 8},
                "do_center_crop": True, "crop_size": {"height": image, "width": image}, "resample": 3}
    elif kind == "dinov2":
        model = tf.Dinov2Model(tf.Dinov2Config(patch_size=8, **common))
        proc = {"image_processor_type": "BitImageProcessor", "size": {"shortest_edge": image + 8}, "resample": 3,
                "do_center_crop": True, "crop_size": {"height": image, "width": image}}
    elif kind in ("dinov2_registers", "dinov2_swiglu"):  # DINOv2 with register tokens; DINOv2-g's SwiGLU MLP
        model = (tf.Dinov2WithRegistersModel(tf.Dinov2WithRegistersConfig(patch_size=8, num_register_tokens=2, **common))
                 if kind == "dinov2_registers" else tf.Dinov2Model(tf.Dinov2Config(patch_size=8, use_swiglu_ffn=True, **common)))
        proc = {"image_processor_type": "BitImageProcessor", "size": {"shortest_edge": image + 8}, "resample": 3,
                "do_center_crop": True, "crop_size": {"height": image, "width": image}}
    elif kind == "clip":
        model = tf.CLIPVisionModel(tf.CLIPVisionConfig(patch_size=8, **common))
        proc = {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": image}, "resample": 3,
                "do_center_crop": True, "crop_size": {"height": image, "width": image},
                "image_mean": [0.4815, 0.4578, 0.4082], "image_std": [0.2686, 0.2613, 0.2758]}
    else:  # pragma: no cover
        raise ValueError(kind)
    model.save_pretrained(path)
    with open(path / "preprocessor_config.json", "w") as fh:
        json.dump({"do_resize": True, "do_rescale": True, "do_normalize": True, "do_convert_rgb": True, **proc}, fh)
    return path



def wait_until_up(proc: subprocess.Popen, ready, *, seconds: float, failure, errors=(OSError,),
                  interval: float = 0.3) -> None:
    """Poll ``ready()`` until it returns true (one of ``errors`` raised counts as "not yet"). When ``proc``
    ends or ``seconds`` pass first, the process is killed and the test fails with ``failure()``."""
    deadline = time.time() + seconds
    while True:
        try:
            if ready():
                return
        except errors:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(failure())
        time.sleep(interval)


def healthy(url: str) -> bool:
    """True when ``url`` (a /healthz) answers 200; an ``OSError`` while the server is not up yet."""
    with urllib.request.urlopen(url, timeout=2) as reply:
        return reply.status == 200


@contextlib.contextmanager
def serve_process(tmp_path: Path, lite_uri: str, *extra: str):
    """`vitsearch serve` on a fresh store and a free port: (process, port, path of its stderr log)."""
    from faults import free_port

    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vitsearch", "serve", "--uri", lite_uri, "--port", str(port),
             "--upload-dir", str(tmp_path / "up"), "--thumbnail-dir", str(tmp_path / "th"), *extra],
            stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_until_up(proc, lambda: healthy(f"http://127.0.0.1:{port}/healthz"), seconds=180,
                      failure=lambda: f"serve did not start: {log.read_text()}")
        yield proc, port, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def write_bad_files(folder: Path) -> dict[str, str]:
    """Files that must be skipped with a reason; returns name -> expected words in the reason."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("this is not an image\n")
    (folder / "page.jpg").write_text("<html><body>404</body></html>")
    buf = folder / "truncated.jpg"
    photo(1, (400, 300)).save(buf, "JPEG")
    buf.write_bytes(buf.read_bytes()[:300])
    bomb = Image.new("1", (40000, 40000))
    bomb.save(folder / "bomb.png")
    return {"empty.jpg": "empty", "text.png": "not a recognised", "page.jpg": "not a recognised",
            "truncated.jpg": "(?i)truncated|decode", "bomb.png": "pixels"}



def pattern(kind: int, seed: int, size: int = 40) -> Image.Image:
    """A picture of one of three kinds (horizontal stripes, vertical stripes, checks) in random colours."""
    rng = np.random.default_rng(seed)
    period = int(rng.integers(4, 9))
    yy, xx = np.mgrid[0:size, 0:size]
    phase = int(rng.integers(0, period))
    band = [(yy + phase) // period, (xx + phase) // period, (yy // period + xx // period)][kind % 3] % 2
    fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    arr = np.where(band[..., None] == 1, fg, bg).astype(np.uint8)
    return Image.fromarray(arr)


def labelled_folder(root: Path, per_class: int = 8, classes=("hstripes", "vstripes", "checks")) -> Path:
    """One folder per class of generated pattern pictures (the ImageFolder layout)."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pattern(c, 1000 * c + i).save(root / name / f"{name}_{i}.png")
    return root



# -- a real browser (Debian chromium + chromium-driver; CI installs them) ----------------------------
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
needs_browser = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                                   reason="needs Debian chromium and chromium-driver (CI installs them)")


def headless_chrome():
    """A headless Chromium under Selenium, 1280 × 1000; the caller quits it."""
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
