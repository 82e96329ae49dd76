"""Fetch the offline material (scikit-image photos, Noto emoji, Fashion-MNIST, Openclipart, SVG emoji and icon sets) into a cache folder.

Only the package managers this project may reach are used: pip, npm and apt. Shared by
``make_sample_images.py`` and ``make_datasets.py``.
"""

from __future__ import annotations

import glob
import gzip
import os
import subprocess
import sys

import numpy as np

DEFAULT_CACHE = os.path.join("/tmp", "vitsearch-material")
# npm packages of SVG emoji (Iconify JSON): the same emoji drawn by other designers (make_datasets.py)
# (package → licence of its images; docs/models.md says where each is used)
EMOJI_STYLE_PACKAGES = {"fluent-emoji-flat": "MIT", "noto-v1": "Apache-2.0", "emojione": "CC-BY-4.0",
                        "streamline-emojis": "CC-BY-4.0", "fxemoji": "Apache-2.0"}
# npm package of SVG icons whose categories name things (make_datasets.write_icons): name, version,
# licence. Pinned, as the bundled model's last stage was trained on this version's icons.
ICON_PACKAGE = ("mdi", "1.2.3", "Apache-2.0")
FASHION_CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


def fetch(cache: str) -> dict[str, str]:
    os.makedirs(cache, exist_ok=True)
    run = lambda *cmd: subprocess.run(cmd, cwd=cache, check=True, stdout=subprocess.DEVNULL)
    if not glob.glob(os.path.join(cache, "scikit_image-*.whl")):
        run(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "scikit-image", "-d", ".")
    if not glob.glob(os.path.join(cache, "emoji-datasource-google-*.tgz")):
        run("npm", "pack", "emoji-datasource-google")
    for style in EMOJI_STYLE_PACKAGES:
        if not glob.glob(os.path.join(cache, f"iconify-json-{style}-[0-9]*.tgz")):
            run("npm", "pack", f"@iconify-json/{style}")
    icon_name, icon_version, _ = ICON_PACKAGE
    icons_tgz = os.path.join(cache, f"iconify-json-{icon_name}-{icon_version}.tgz")
    if not os.path.isfile(icons_tgz):
        run("npm", "pack", f"@iconify-json/{icon_name}@{icon_version}")
    if not glob.glob(os.path.join(cache, "dataset-fashion-mnist_*.deb")):
        run("apt-get", "download", "dataset-fashion-mnist")
    if not glob.glob(os.path.join(cache, "openclipart-png_*.deb")):
        run("apt-get", "download", "openclipart-png")
    clipart_dir = os.path.join(cache, "openclipart")
    if not os.path.isdir(clipart_dir):
        run("dpkg", "-x", glob.glob(os.path.join(cache, "openclipart-png_*.deb"))[0], clipart_dir)
    deb = glob.glob(os.path.join(cache, "dataset-fashion-mnist_*.deb"))[0]
    fm_dir = os.path.join(cache, "fm")
    if not os.path.isdir(fm_dir):
        run("dpkg", "-x", deb, fm_dir)
    return {
        "skimage": glob.glob(os.path.join(cache, "scikit_image-*.whl"))[0],
        "emoji": glob.glob(os.path.join(cache, "emoji-datasource-google-*.tgz"))[0],
        "fashion": os.path.join(fm_dir, "usr", "share", "datasets", "fashion-mnist"),
        "openclipart": os.path.join(clipart_dir, "usr", "share", "openclipart", "png"),
        "emoji_styles": {style: glob.glob(os.path.join(cache, f"iconify-json-{style}-[0-9]*.tgz"))[0]
                         for style in EMOJI_STYLE_PACKAGES},
        "icons": icons_tgz,
    }


def fashion_split(fashion_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images N×28×28 uint8, labels N) of Fashion-MNIST's ``train`` or ``test`` split."""
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(os.path.join(fashion_dir, f"{prefix}-images-idx3-ubyte.gz")) as fh:
        images = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(fashion_dir, f"{prefix}-labels-idx1-ubyte.gz")) as fh:
        labels = np.frombuffer(fh.read(), np.uint8, offset=8)
    return images, labels
