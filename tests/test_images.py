import io
import os
import time

import numpy as np
import pytest
from helpers import photo, write_bad_files
from PIL import Image

from vitsearch.errors import ImageError, VitsearchError
from vitsearch.images import Failure, check_file, check_roots, discover, load_image


def test_discover_recurses_matches_extensions_in_any_case_and_sorts(tmp_path):
    for rel in ("a.jpg", "b.PNG", "sub/c.WebP", "sub/deep/d.tiff", "sub/e.gif", "notes.txt", "f.bmp", "g.JPEG"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    found = [os.path.relpath(e.path, tmp_path) for e in discover([str(tmp_path)], [])]
    assert sorted(found) == sorted(["a.jpg", "b.PNG", "f.bmp", "g.JPEG", "sub/c.WebP", "sub/deep/d.tiff", "sub/e.gif"])


def test_discover_survives_symlink_loops_dangling_links_and_directories_named_like_images(tmp_path):
    (tmp_path / "x.jpg").mkdir()
    (tmp_path / "x.jpg" / "inside.png").write_bytes(b"x")
    (tmp_path / "loop").symlink_to(tmp_path)
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "missing.jpg")
    failures: list[Failure] = []
    found = [os.path.relpath(e.path, tmp_path) for e in discover([str(tmp_path)], failures)]
    assert found == ["x.jpg/inside.png"]
    assert [os.path.basename(f.path) for f in failures] == ["dangling.jpg"]


def test_a_folder_behind_a_link_is_walked_as_itself(tmp_path):
    (tmp_path / "photos" / "deep").mkdir(parents=True)
    (tmp_path / "photos" / "deep" / "p.jpg").write_bytes(b"x")
    (tmp_path / "photos" / "q.jpg").write_bytes(b"x")
    (tmp_path / "a_link").symlink_to(tmp_path / "photos")  # sorts first, and names the same folder
    (tmp_path / "b_deep").symlink_to(tmp_path / "photos" / "deep")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "e.jpg").write_bytes(b"x")
    (tmp_path / "photos" / "more").symlink_to(tmp_path / "elsewhere")  # also reached as itself from the root
    found = [os.path.relpath(e.path, tmp_path) for e in discover([str(tmp_path)], [])]
    assert sorted(found) == ["elsewhere/e.jpg", "photos/deep/p.jpg", "photos/q.jpg"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.jpg").write_bytes(b"x")
    (tmp_path / "photos" / "out").symlink_to(outside)  # a folder the root reaches only through a link
    found = [os.path.relpath(e.path, tmp_path / "photos") for e in discover([str(tmp_path / "photos")], [])]
    assert sorted(found) == ["deep/p.jpg", "more/e.jpg", "out/o.jpg", "q.jpg"]


def test_explicit_files_are_taken_whatever_their_extension_and_overlapping_roots_once(tmp_path):
    (tmp_path / "pic.data").write_bytes(b"x")
    (tmp_path / "a.png").write_bytes(b"x")
    roots = check_roots([tmp_path / "pic.data", tmp_path, tmp_path / "a.png"])
    assert sorted(os.path.basename(e.path) for e in discover(roots, [])) == ["a.png", "pic.data"]


def test_check_roots_rejects_missing_paths(tmp_path):
    with pytest.raises(VitsearchError, match="no such file"):
        check_roots([tmp_path / "nope"])


@pytest.mark.parametrize("name", ["empty.jpg", "text.png", "page.jpg", "truncated.jpg", "bomb.png"])
def test_bad_files_raise_image_error_with_a_reason(tmp_path, name):
    expected = write_bad_files(tmp_path)
    with pytest.raises(ImageError, match=expected[name]):
        load_image(tmp_path / name)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    return folder, write_bad_files(folder)


@pytest.mark.parametrize("name", ["empty.jpg", "text.png", "page.jpg", "truncated.jpg", "bomb.png"])
def test_check_file_refuses_on_the_header_what_load_image_refuses(bad_files, name):
    folder, expected = bad_files
    with pytest.raises(ImageError, match=expected[name]) as refused:
        check_file(folder / name)
    with pytest.raises(ImageError) as loading:
        load_image(folder / name)
    assert str(refused.value).split(":")[0] == str(loading.value).split(":")[0]  # the same reason


def test_check_file_passes_images_and_leaves_pixels_and_raw_files_to_the_decoder(tmp_path):
    photo(1).save(tmp_path / "ok.png")
    whole = io.BytesIO()
    photo(1, (400, 300)).save(whole, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])  # its header is whole
    (tmp_path / "x.dng").write_bytes(b"not a DNG either")  # LibRaw judges camera RAW files
    for name in ("ok.png", "cut.jpg", "x.dng"):
        check_file(tmp_path / name)
    with pytest.raises(ImageError, match="decode"):
        load_image(tmp_path / "cut.jpg")
    with pytest.raises(FileNotFoundError):
        check_file(tmp_path / "missing.png")


def test_check_file_reads_only_the_header_of_a_large_file(tmp_path, monkeypatch):
    big = tmp_path / "x.jpg"
    with open(big, "wb") as fh:
        fh.write(b"this is no image header\n")
        fh.truncate(2 * 1024**3)  # 2 GB, sparse
    started = time.perf_counter()
    with pytest.raises(ImageError, match="^not a recognised image format$"):
        check_file(big)
    assert time.perf_counter() - started < 2.0


def test_directory_and_missing_file_raise_image_error(tmp_path):
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_inputs_of_every_kind_decode_to_the_same_rgb_pixels(tmp_path):
    img = photo(3)
    img.save(tmp_path / "p.png")
    data = (tmp_path / "p.png").read_bytes()
    ref = np.asarray(load_image(tmp_path / "p.png"))
    for source in (str(tmp_path / "p.png"), data, img, np.asarray(img), np.asarray(img).transpose(2, 0, 1),
                   np.asarray(img).astype(np.float32) / 255.0):
        out = load_image(source)
        assert out.mode == "RGB"
        assert np.abs(np.asarray(out).astype(int) - ref).max() <= 1


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)
    la = Image.new("LA", (4, 4), (0, 0))
    assert load_image(la).getpixel((0, 0)) == (255, 255, 255)
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    assert load_image(pal).getpixel((0, 0)) == (255, 255, 255)
    # every colour at every alpha gives exactly what compositing over opaque white gives (what
    # the bundled model was trained and measured with), though made without the full-size copies
    pixels = np.random.default_rng(0).integers(0, 256, (256, 256, 4), dtype=np.uint8)
    pixels[0, :, 3] = np.arange(256)
    rgba = Image.fromarray(pixels, "RGBA")
    white = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    assert np.array_equal(np.asarray(load_image(rgba)), np.asarray(white))


def test_16_bit_grey_cmyk_and_exif_rotation(tmp_path):
    grey16 = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert load_image(grey16).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(Image.new("CMYK", (3, 3), (0, 0, 0, 0))).mode == "RGB"
    tall = photo(5, (40, 80))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    tall.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (80, 40)


def test_jpeg_draft_decodes_large_photos_at_reduced_scale_but_not_below_the_need(tmp_path):
    photo(7, (2000, 1500)).save(tmp_path / "big.jpg", quality=90)
    img = load_image(tmp_path / "big.jpg", draft=(256, 256))
    assert 256 <= min(img.size) < 1500
    lazy = Image.open(tmp_path / "big.jpg")
    assert load_image(lazy, draft=(256, 256)).size == (2000, 1500)  # a caller's image is not drafted
    buf = io.BytesIO()
    photo(7, (2000, 1500)).save(buf, "PNG")
    assert load_image(buf.getvalue(), draft=(256, 256)).size == (2000, 1500)  # PNG has no draft mode


@pytest.mark.parametrize("array", [np.zeros((2, 2, 5), np.uint8), np.zeros((3,), np.uint8)])
def test_arrays_that_are_not_images_are_rejected(array):
    with pytest.raises(ImageError, match="not an image"):
        load_image(array)


def test_large_images_under_the_limit_load_quietly_and_over_it_are_refused(tmp_path, monkeypatch):
    """PIL warns above its own guess (89 MP); vitsearch's MAX_PIXELS is the limit, and a file it
    refuses is closed at once."""
    import warnings

    from vitsearch import images

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL warns above 1,000 pixels, refuses above 2,000
    monkeypatch.setattr(images, "MAX_PIXELS", 1500)
    Image.new("RGB", (35, 35), (9, 99, 199)).save(tmp_path / "fine.jpg")  # 1,225: PIL warns, vitsearch loads
    Image.new("RGB", (40, 40)).save(tmp_path / "big.png")  # 1,600: vitsearch refuses it, PIL would not
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert load_image(tmp_path / "fine.jpg").size == (35, 35)
        with pytest.raises(ImageError, match="too many pixels: 40x40"):
            load_image(tmp_path / "big.png")
    assert not [w for w in seen if issubclass(w.category, (Image.DecompressionBombWarning, ResourceWarning))]


@pytest.mark.parametrize("reason, shown", [
    ("cannot decode: Invalid input: Unexpected end of file\n", "cannot decode: Invalid input: Unexpected end of file"),
    ("two\r\nlines\tand  tabs", "two lines and tabs"),
    ("a bell\x07 and\x85 a NEL\u2028", "a bell\\x07 and a NEL"),
])
def test_every_skip_reason_is_one_line_with_control_characters_quoted(reason, shown):
    from vitsearch.images import Failure

    assert Failure("/p.jpg", reason).reason == shown


def test_arrays_of_every_number_type_or_none_at_all():
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3)).astype(np.uint8)
    # 16-bit samples are scaled, as a 16-bit PIL image is (they were clipped to white)
    assert np.array_equal(np.asarray(load_image(rgb.astype(np.uint16) * 257)), rgb)
    assert np.array_equal(np.asarray(load_image(rgb.astype(np.int64))), rgb)  # 0..255 in a wider type: as is
    for bad, words in ((np.zeros((0, 0), np.uint8), "empty image"), (np.zeros((0, 5, 3)), "empty image"),
                       (np.full((4, 4), np.nan), "NaN"), (np.zeros((4, 4), complex), "complex"),
                       (np.array([["a"] * 4] * 4), "not an image"), (np.zeros((4, 4), object), "object")):
        with pytest.raises(ImageError, match=words):
            load_image(bad)
    assert load_image(Image.new("La", (4, 4), (0, 0))).getpixel((0, 0)) == (255, 255, 255)  # premultiplied L + alpha
