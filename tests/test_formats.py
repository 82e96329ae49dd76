"""HEIC, AVIF and camera RAW decode upright, within the pixel limit, and fail with a reason that says
what to install when their library is missing."""

import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT
from photofiles import dng_bytes, save_photo, write_dng
from PIL import Image

from vitsearch import formats, images
from vitsearch.errors import ImageError
from vitsearch.images import discover, load_image


def marked(size=(60, 40)) -> Image.Image:
    """A grey picture with a red top-left corner, to see which way up it was decoded."""
    arr = np.full((size[1], size[0], 3), 120, np.uint8)
    arr[: size[1] // 4, : size[0] // 4] = (230, 20, 20)
    return Image.fromarray(arr)


def red_corner(img: Image.Image) -> str:
    arr = np.asarray(img.convert("RGB")).astype(int)
    h, w = arr.shape[:2]
    corners = {"top-left": arr[: h // 8, : w // 8], "top-right": arr[: h // 8, -(w // 8):],
               "bottom-left": arr[-(h // 8):, : w // 8], "bottom-right": arr[-(h // 8):, -(w // 8):]}
    return max(corners, key=lambda c: corners[c][..., 0].mean() - corners[c][..., 1].mean())


# EXIF orientation -> where the stored top-left corner is shown
SHOWN = {1: "top-left", 3: "bottom-right", 6: "top-right", 8: "bottom-left"}


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("fmt", ["HEIF", "AVIF", "JPEG"])
def test_heic_and_avif_decode_upright_like_jpeg(tmp_path, fmt, orientation):
    if fmt == "HEIF":
        pytest.importorskip("pillow_heif")
    path = save_photo(tmp_path / f"p.{fmt.lower()}", marked(), fmt, orientation=orientation)
    img = load_image(path)
    turned = orientation in (6, 8)
    assert img.size == ((40, 60) if turned else (60, 40))
    assert img.info["vitsearch.size"] == img.size
    assert red_corner(img) == SHOWN[orientation]


def test_heic_decodes_its_embedded_thumbnail_when_that_covers_the_size_asked_for(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    marked((800, 600)).save(tmp_path / "p.heic", "HEIF", quality=90, thumbnails=[240])  # as phones write them
    small = load_image(tmp_path / "p.heic", draft=(160, 160))
    assert small.size == (240, 180) and small.info["vitsearch.size"] == (800, 600)
    assert red_corner(small) == "top-left"
    assert load_image(tmp_path / "p.heic", draft=(224, 224)).size == (800, 600)  # 180 px would be too small
    assert load_image(tmp_path / "p.heic").size == (800, 600)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_raw_is_decoded_upright_from_its_preview_or_its_sensor_data(tmp_path, orientation):
    pytest.importorskip("rawpy")
    scene = np.asarray(marked((96, 64)))
    preview = marked((48, 32)).point(lambda v: v // 2)  # a half-size preview, darker: it is told apart by that
    path = write_dng(tmp_path / "p.dng", scene, orientation=orientation, preview=preview)
    from_preview = load_image(str(path), draft=(32, 32))
    demosaiced = load_image(str(path), draft=(40, 40))  # more than the preview's 32 px: LibRaw decodes the mosaic
    upright = (64, 96) if orientation in (6, 8) else (96, 64)
    assert demosaiced.size == upright
    assert from_preview.size == (upright[0] // 2, upright[1] // 2)
    for img in (from_preview, demosaiced):
        assert img.info["vitsearch.size"] == upright
        assert red_corner(img) == SHOWN[orientation]
    assert np.asarray(from_preview).mean() < np.asarray(demosaiced).mean() - 20


def test_raw_without_a_preview_half_size_when_that_suffices(tmp_path):
    pytest.importorskip("rawpy")
    path = write_dng(tmp_path / "p.dng", np.asarray(marked((200, 120))))
    assert load_image(str(path), draft=(50, 50)).size == (100, 60)  # half size covers 50 px
    assert load_image(str(path)).size == (200, 120)
    assert load_image(path.read_bytes()).size == (200, 120)  # a DNG is known by its content too


def test_raw_over_the_pixel_limit_is_refused(tmp_path, monkeypatch):
    pytest.importorskip("rawpy")
    path = write_dng(tmp_path / "p.dng", np.zeros((64, 96, 3), np.uint8))
    monkeypatch.setattr(images, "MAX_PIXELS", 96 * 64 - 1)
    with pytest.raises(ImageError, match="too many pixels: 96x64"):
        load_image(str(path))


@pytest.mark.parametrize("name, data, reason", [
    ("junk.dng", b"this is not a raw file at all" * 10, "cannot decode RAW"),
    ("header.nef", b"MM\0*\0\0\0\x08" + b"\0" * 4, "cannot decode RAW"),
    ("cut.dng", "cut", "cannot decode RAW"),
])
def test_broken_raw_files_fail_with_a_reason(tmp_path, name, data, reason):
    pytest.importorskip("rawpy")
    if data == "cut":
        data = dng_bytes(np.zeros((64, 96, 3), np.uint8))[:200]
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ImageError, match=reason):
        load_image(str(tmp_path / name))


def test_photo_extensions_are_discovered_in_any_case(tmp_path):
    names = ["a.HEIC", "b.heif", "c.avif", "d.DNG", "e.cr2", "f.CR3", "g.nef", "h.ARW", "i.raf", "j.orf", "k.RW2",
             "notes.xmp", "l.txt"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    found = sorted(e.path.rsplit("/", 1)[1] for e in discover([str(tmp_path)], []))
    assert found == sorted(names[:-2])


_WITHOUT = """
import sys
sys.modules[{module!r}] = None  # as if it were not installed
from vitsearch.errors import ImageError
from vitsearch.images import load_image
try:
    load_image({path!r})
except ImageError as exc:
    print(exc)
"""


@pytest.mark.parametrize("module, name, extra", [("pillow_heif", "p.heic", "heif"), ("rawpy", "p.dng", "raw")])
def test_a_missing_library_is_a_reason_naming_the_extra_to_install(tmp_path, module, name, extra):
    pytest.importorskip("pillow_heif")
    pytest.importorskip("rawpy")
    path = tmp_path / name
    if name.endswith(".heic"):
        save_photo(path, marked(), "HEIF")
    else:
        write_dng(path, np.zeros((8, 8, 3), np.uint8))
    result = subprocess.run([sys.executable, "-c", _WITHOUT.format(module=module, path=str(path))],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"pip install 'vitsearch[{extra}]'" in result.stdout, result.stdout
    assert "Traceback" not in result.stderr


def test_an_avif_that_this_pillow_cannot_decode_says_how_to_get_one_that_can(monkeypatch):
    monkeypatch.setattr(formats, "have_avif", lambda: False)
    assert "pillow>=11.3" in formats.unreadable_reason(b"\0\0\0\x1cftypavif\0\0\0\0", "x.avif")
    assert "pillow>=11.3" in formats.unreadable_reason(b"not even a header", "x.AVIF")
    assert formats.unreadable_reason(b"\x89PNG\r\n\x1a\n", "x.png") is None


def test_a_phone_folder_of_50_heic_and_50_jpeg_photos_indexes_all_100(tmp_path):
    pytest.importorskip("pillow_heif")
    import json

    from click.testing import CliRunner
    from helpers import photo, tiny_model

    from vitsearch.cli import main

    folder = tmp_path / "DCIM"
    folder.mkdir()
    for i in range(50):
        tags = dict(taken=f"2024:06:{1 + i % 28:02d} 12:00:00", offset="+01:00", make="Apple", model="iPhone 15",
                    orientation=(1, 6)[i % 2])
        save_photo(folder / f"IMG_{i:04d}.HEIC", photo(i, (160, 120)), "HEIF", **tags)
        save_photo(folder / f"IMG_{1000 + i:04d}.JPG", photo(1000 + i, (160, 120)), "JPEG", **tags)
    model = tiny_model(tmp_path / "model")
    uri = str(tmp_path / "store.db")
    args = ["--uri", uri, "--model", str(model), "--precision", "fp32"]
    result = CliRunner().invoke(main, ["index", str(folder), *args, "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["scanned"], summary["added"], summary["failed"]) == (100, 100, [])
    info = json.loads(CliRunner().invoke(main, ["info", "--uri", uri, "--json"]).stdout)
    assert info["count"] == 100 and info["exif"]["taken_at"] == 100 and info["exif"]["orientation"] == 100


def test_a_truncated_heic_is_skipped_with_a_one_line_reason(tmp_path):
    from vitsearch.images import Failure

    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    whole = tmp_path / "whole.heic"
    noise = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(whole, "HEIF")  # no EXIF: its metadata comes first, then 11 kB of data
    for size, reason in [(500, "cannot decode: Invalid input"), (40, "cannot open: a damaged or truncated HEIF file")]:
        (tmp_path / "cut.heic").write_bytes(whole.read_bytes()[:size])  # the data cut short, or its header
        with pytest.raises(ImageError, match=reason) as caught:
            load_image(str(tmp_path / "cut.heic"))
        failure = Failure(str(tmp_path / "cut.heic"), str(caught.value))
        assert reason in failure.reason and "\n" not in failure.reason and failure.reason == failure.reason.strip()
