"""Duplicate groups: exact copies by content, near copies by similarity, no group among different images."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from helpers import SAMPLES
from PIL import Image

from vitsearch import VisualSearch
from vitsearch.cli import main
from vitsearch.dups import keeper

DIFFERENT = ("chelsea", "coffee", "astronaut", "rocket", "horse", "camera", "coins", "text")


def test_keeper_prefers_pixels_then_bytes():
    rows = [{"path": "/a", "width": 10, "height": 10, "size": 900}, {"path": "/b", "width": 20, "height": 10, "size": 5},
            {"path": "/c", "width": 20, "height": 10, "size": 50}]
    assert keeper(rows)["path"] == "/c"


def _copy(path, size=100, pixels=(20, 10), **exif):
    return {"path": path, "width": pixels[0], "height": pixels[1], "size": size, **exif}


@pytest.mark.parametrize("rows, keep", [
    # among equal pixels: the earliest taken_at (the original, not a later export), whatever the file size
    ([_copy("/export.jpg", 900, taken_at=2000), _copy("/original.jpg", 100, taken_at=1000)], "/original.jpg"),
    # a copy without taken_at counts as taken last
    ([_copy("/stripped.jpg", 900), _copy("/original.jpg", 100, taken_at=1000)], "/original.jpg"),
    # then the most EXIF fields
    ([_copy("/a.jpg", 900, taken_at=1000), _copy("/b.jpg", 100, taken_at=1000, camera_make="X", gps_lat=1.0)], "/b.jpg"),
    ([_copy("/a.jpg", 900, camera_make="X", taken_at=None), _copy("/b.jpg", 100, lens="L", camera_make="X")], "/b.jpg"),
    # then, with the same EXIF, the largest file
    ([_copy("/a.jpg", 100, taken_at=1000), _copy("/b.jpg", 900, taken_at=1000)], "/b.jpg"),
    # more pixels still come first
    ([_copy("/small.jpg", 900, (10, 10), taken_at=1), _copy("/big.jpg", 100, (20, 10))], "/big.jpg"),
])
def test_keeper_among_equals_prefers_the_earliest_taken_at_and_the_most_exif(rows, keep):
    assert keeper(rows)["path"] == keep


def test_planted_copies_are_grouped_and_nothing_else(tmp_path, cli_encoder, monkeypatch):
    monkeypatch.setenv("VITSEARCH_URI", str(tmp_path / "s.db"))
    folder = tmp_path / "photos"
    (folder / "copies").mkdir(parents=True)
    for name in DIFFERENT:
        shutil.copy(SAMPLES / "photos" / f"{name}.jpg", folder / f"{name}.jpg")
    shutil.copy(SAMPLES / "photos" / "rocket.jpg", folder / "copies" / "rocket_again.jpg")  # exact copy
    shutil.copy(SAMPLES / "photos" / "rocket.jpg", folder / "copies" / "rocket_third.jpg")
    shutil.copy(SAMPLES / "near_duplicates" / "chelsea_mirror.jpg", folder / "copies")  # near copies
    small = Image.open(SAMPLES / "photos" / "horse.jpg")
    small.resize((small.width // 2, small.height // 2)).save(folder / "copies" / "horse_small.jpg", quality=80)
    with VisualSearch(encoder=cli_encoder) as vs:
        vs.index(folder)
        groups = vs.duplicates(0.9)
    names = [sorted(p.rsplit("/", 1)[1] for p in g.paths) for g in groups]
    assert names == [["rocket.jpg", "rocket_again.jpg", "rocket_third.jpg"], ["chelsea.jpg", "chelsea_mirror.jpg"],
                     ["horse.jpg", "horse_small.jpg"]]
    assert groups[0].exact and groups[0].similarity == 1.0
    assert groups[0].keep == min(groups[0].paths, key=len)  # same pixels and bytes: the shortest path
    horse = groups[2]
    assert horse.keep.endswith("/horse.jpg") and 0.9 <= horse.similarity < 1.0 and not horse.exact

    result = CliRunner().invoke(main, ["dups", "--threshold", "0.9", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [len(g["paths"]) for g in data["groups"]] == [3, 2, 2]
    assert all({"paths", "keep", "similarity"} <= g.keys() for g in data["groups"])
    human = CliRunner().invoke(main, ["dups", "--threshold", "0.9"])
    assert "group 1 (3 images, identical)" in human.stdout and "4 images could go" in human.stderr
    assert CliRunner().invoke(main, ["dups", "--threshold", "0"]).exit_code == 2


def test_html_and_grid_reports(tmp_path, cli_encoder, monkeypatch):
    monkeypatch.setenv("VITSEARCH_URI", str(tmp_path / "s.db"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea", "coffee", "rocket"):
        shutil.copy(SAMPLES / "photos" / f"{name}.jpg", folder)
    shutil.copy(SAMPLES / "photos" / "rocket.jpg", folder / "rocket_copy.jpg")
    assert CliRunner().invoke(main, ["index", str(folder)]).exit_code == 0
    (folder / "coffee.jpg").unlink()  # a hit whose file is gone still gets a tile
    page, grid = tmp_path / "out.html", tmp_path / "out.png"
    result = CliRunner().invoke(main, ["query", str(folder / "chelsea.jpg"), "-k", "3", "--html", str(page),
                                       "--grid", str(grid)])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert text.count("<img src='data:image/jpeg;base64,") == 4 and "http" not in text.replace("http-equiv", "")
    assert "chelsea.jpg" in text and "#1" in text
    sheet = Image.open(grid)
    assert sheet.size[0] > sheet.size[1] and sheet.format == "PNG"
    for name, fmt in (("out.jpg", "JPEG"), ("out.webp", "WEBP"), ("out.sheet", "PNG"), ("out.psd", "PNG")):
        result = CliRunner().invoke(main, ["query", str(folder / "chelsea.jpg"), "-k", "2", "--grid", str(tmp_path / name)])
        assert result.exit_code == 0 and Image.open(tmp_path / name).format == fmt, (name, result.output)
    dup_page = tmp_path / "dups.html"
    result = CliRunner().invoke(main, ["dups", "--html", str(dup_page)])
    assert result.exit_code == 0 and "figure class='keep'" in dup_page.read_text()
    bad = CliRunner().invoke(main, ["query", str(folder / "chelsea.jpg"), "--html", str(tmp_path / "no" / "x.html")])
    assert bad.exit_code == 1 and "cannot write" in bad.stderr
