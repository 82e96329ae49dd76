"""Filters in people's terms: the expressions they become, and the rows they select from a real
collection (dates across time zones, a GPS circle across the antimeridian, rows without the field)."""

import math
import os
import uuid
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from helpers import photo, tiny_model
from photofiles import dng_bytes, save_photo

from vitsearch import VisualSearch
from vitsearch.filters import Near, PhotoFilter, parse_time


def utc(*args) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp())


@pytest.mark.parametrize("value, want", [
    ("2024-06-01", utc(2024, 6, 1)),
    ("2024-06-01T18:30", utc(2024, 6, 1, 18, 30)),
    ("2024-06-01 18:30:15", utc(2024, 6, 1, 18, 30, 15)),
    ("2024-06-01T18:30+02:00", utc(2024, 6, 1, 16, 30)),
    ("2024-06-01T00:00:00Z", utc(2024, 6, 1)),
    (date(2024, 6, 1), utc(2024, 6, 1)),
    (datetime(2024, 6, 1, 9, tzinfo=timezone.utc), utc(2024, 6, 1, 9)),
    (1717200000, 1717200000),
    ("1717200000", 1717200000),
    (1717200000.9, 1717200000),
])
def test_dates_and_times_people_type(value, want):
    assert parse_time(value) == want


@pytest.mark.parametrize("value", ["June", "2024-13-01", "", "2024/06/01", float("nan"), True, [2024]])
def test_what_is_not_a_date_is_refused_saying_what_is(value):
    with pytest.raises(ValueError, match="not a date or time"):
        parse_time(value)


@pytest.mark.parametrize("value", ["99999999999999999999", 10**20, -(10**19), 1e300, "253402300800"])
def test_a_time_beyond_the_years_1_to_9999_is_a_usage_error(value):
    from vitsearch.errors import UsageError

    with pytest.raises(UsageError, match="out of range"):
        parse_time(value, "taken_after")


@pytest.mark.parametrize("value, words", [
    ("48.8584,2.2945", "not LAT,LON,KM"), ("a,b,c", "not LAT,LON,KM"), ("91,0,5", "latitude 91"),
    ("0,181,5", "longitude 181"), ("0,0,0", "positive"), ("0,0,-3", "positive"), ("0,0,inf", "positive"),
])
def test_near_that_is_not_a_place_and_radius(value, words):
    with pytest.raises(ValueError, match=words):
        Near.parse(value)


@pytest.mark.parametrize("kwargs, words", [
    ({"taken_after": "2024-09-01", "taken_before": "2024-06-01"}, "must be later"),
    ({"taken_after": "2024-06-01", "taken_before": "2024-06-01"}, "must be later"),
    ({"camera": "--"}, "no letters or digits"),
    ({"near": "1,2"}, "LAT,LON,KM"),
])
def test_contradictory_or_empty_filters_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        PhotoFilter.build(**kwargs)


def test_each_filter_is_the_expression_a_user_could_have_written():
    f = PhotoFilter.build(taken_after="2024-06-01", taken_before="2024-09-01", camera="iPhone 15")
    assert f.expression() == (f"taken_at >= {utc(2024, 6, 1)} and taken_at < {utc(2024, 9, 1)} and "
                              'json_contains_all(camera_words, ["iphone", "15"])')
    assert f.exact and f.combine('label == "x"') == f'(label == "x") and {f.expression()}'
    assert PhotoFilter.build().combine(" ") is None and not PhotoFilter.build()
    assert PhotoFilter.build().combine("width > 5") == "width > 5"


def test_the_box_of_a_circle_across_the_antimeridian_is_two_longitude_ranges():
    box = Near.parse("-17,179.9,100").box()
    assert "(gps_lon >= 178.9" in box and " or gps_lon <= -179.1" in box
    west = Near.parse("-17,-179.9,100").box()
    assert "(gps_lon >= 179.1" in west and " or gps_lon <= -178.9" in west
    assert " or " not in Near.parse("48.85,2.29,100").box()


def test_a_circle_around_a_pole_spans_every_longitude():
    assert "gps_lon >= -180 and gps_lon <= 180" in Near.parse("89.5,10,100").box()
    assert "gps_lat >= -90.0" in Near.parse("-89.9,0,50").box()


@pytest.mark.parametrize("lat, lon, km", [(0, 0, 10), (60, 30, 500), (-17, 179.9, 100), (75, -170, 800),
                                           (0, 180, 50), (45, 0, 3000)])
def test_the_box_holds_the_whole_circle(lat, lon, km):
    near = Near(lat, lon, km)
    box = near.box()
    lat_lo = float(box.split("gps_lat >= ")[1].split(" ")[0])
    lat_hi = float(box.split("gps_lat <= ")[1].split(" ")[0])
    for bearing in np.linspace(0, 2 * math.pi, 720, endpoint=False):  # points on the circle itself
        d = km / 6371.0088
        p1, l1 = math.radians(lat), math.radians(lon)
        p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(bearing))
        l2 = l1 + math.atan2(math.sin(bearing) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
        plat, plon = math.degrees(p2), (math.degrees(l2) + 540) % 360 - 180
        assert near.distance_km(plat, plon) == pytest.approx(km, rel=1e-6)
        assert lat_lo <= plat <= lat_hi
        assert _in_lon_box(box, plon), (plat, plon, box)


def _in_lon_box(box: str, lon: float) -> bool:
    if "gps_lon >= -180 and gps_lon <= 180" in box:
        return True
    if " or " in box:
        lo = float(box.split("(gps_lon >= ")[1].split(" ")[0])
        hi = float(box.split("or gps_lon <= ")[1].split(")")[0])
        return lon >= lo or lon <= hi
    return float(box.split("gps_lon >= ")[1].split(" ")[0]) <= lon <= float(box.split("gps_lon <= ")[1].split(" ")[0])


# -- a real collection ------------------------------------------------------------------------------
PHOTOS = {  # name: (format, EXIF)
    # 10:00 on 1 June in Tokyo is 01:00 UTC on 1 June; 01:00 on 1 June in Tokyo is 16:00 UTC on 31 May
    "tokyo_early.jpg": ("JPEG", dict(taken="2024:06:01 01:00:00", offset="+09:00", make="Apple",
                                      model="iPhone 15 Pro", gps=(35.6762, 139.6503))),
    "tokyo.heic": ("HEIF", dict(taken="2024:06:01 10:00:00", offset="+09:00", make="Apple", model="iPhone 15 Pro",
                               gps=(35.6812, 139.7671), orientation=6)),
    # 20:00 on 31 May in Los Angeles is 03:00 UTC on 1 June
    "los_angeles.jpg": ("JPEG", dict(taken="2024:05:31 20:00:00", offset="-07:00", make="Canon",
                                      model="Canon EOS R5", gps=(34.0522, -118.2437))),
    "no_offset.avif": ("AVIF", dict(taken="2024:06:01 00:30:00", make="Google", model="Pixel 8")),  # read as UTC
    "fiji_east.jpg": ("JPEG", dict(taken="2024:08:31 23:59:59", offset="+12:00", make="SONY", model="ILCE-7M3",
                                    gps=(-17.0, 179.9))),
    "fiji_west.jpg": ("JPEG", dict(make="SONY", model="ILCE-7M3", gps=(-17.05, -179.95))),
    "fiji_corner.jpg": ("JPEG", dict(gps=(-17.85, 179.15))),  # in the box around (-17, 180, 100 km), 130 km away
    "far.jpg": ("JPEG", dict(gps=(-17.0, 175.0))),
    "nothing.png": ("PNG", {}),
    "autumn.dng": ("DNG", dict(taken="2024:09:01 00:00:00", offset="+00:00", make="NIKON CORPORATION",
                               model="NIKON D750", gps=(-16.99, -179.99))),
}


@pytest.fixture(scope="module", params=["lite", pytest.param("server", marks=pytest.mark.server)])
def library(request, tmp_path_factory):
    uri = os.environ.get("MILVUS_URI") if request.param == "server" else None
    if request.param == "server" and not uri:
        pytest.skip("no Milvus server: set MILVUS_URI (CI starts one from PyPI milvus==2.3.5)")
    pytest.importorskip("pillow_heif")
    pytest.importorskip("rawpy")
    root = tmp_path_factory.mktemp("library")
    folder = root / "photos"
    folder.mkdir()
    for i, (name, (fmt, tags)) in enumerate(PHOTOS.items()):
        img = photo(100 + i, (64, 48))
        if fmt == "DNG":
            (folder / name).write_bytes(dng_bytes(np.asarray(img), taken=tags["taken"], offset=tags["offset"],
                                                  make=tags["make"], model=tags["model"], gps=tags["gps"]))
        else:
            save_photo(folder / name, img, fmt, **tags)
    model = tiny_model(root / "model")
    collection = "photos_" + uuid.uuid4().hex[:12]
    vs = VisualSearch(uri or str(root / "store.db"), collection, model=str(model), device="cpu", precision="fp32",
                      num_workers=0)
    summary = vs.index(folder)
    assert summary.added == len(PHOTOS) and not summary.failed, summary.as_dict()
    yield vs, folder
    if uri:
        vs.store.drop()
    vs.close()


def _found(vs: VisualSearch, folder: Path, **filters) -> set[str]:
    hits = vs.query(str(folder / "nothing.png"), k=50, **filters)
    return {Path(h.path).name for h in hits}


@pytest.mark.parametrize("filters, want", [
    ({"taken_after": "2024-06-01"}, {"tokyo.heic", "los_angeles.jpg", "no_offset.avif", "fiji_east.jpg", "autumn.dng"}),
    ({"taken_after": "2024-06-01T00:00+09:00"},  # midnight in Tokyo
     {"tokyo_early.jpg", "tokyo.heic", "los_angeles.jpg", "no_offset.avif", "fiji_east.jpg", "autumn.dng"}),
    ({"taken_after": "2024-06-01", "taken_before": "2024-09-01"},
     {"tokyo.heic", "los_angeles.jpg", "no_offset.avif", "fiji_east.jpg"}),
    ({"taken_before": "2024-06-01T02:00Z"}, {"tokyo_early.jpg", "tokyo.heic", "no_offset.avif"}),
    ({"taken_before": datetime(2024, 5, 31, 16, tzinfo=timezone.utc)}, set()),
    ({"taken_before": datetime(2024, 5, 31, 16, 0, 1, tzinfo=timezone.utc)}, {"tokyo_early.jpg"}),
    ({"near": "-17,180,100"}, {"fiji_east.jpg", "fiji_west.jpg", "autumn.dng"}),
    ({"near": (-17.0, -179.9, 25)}, {"fiji_east.jpg", "fiji_west.jpg", "autumn.dng"}),
    ({"near": "-17,180,150"}, {"fiji_east.jpg", "fiji_west.jpg", "autumn.dng", "fiji_corner.jpg"}),
    ({"near": "35.68,139.7,10"}, {"tokyo_early.jpg", "tokyo.heic"}),
    ({"camera": "iphone"}, {"tokyo_early.jpg", "tokyo.heic"}),
    ({"camera": "EOS r5"}, {"los_angeles.jpg"}),
    ({"camera": "ilce-7m3"}, {"fiji_east.jpg", "fiji_west.jpg"}),
    ({"camera": "nikon"}, {"autumn.dng"}),
    ({"camera": "canon iphone"}, set()),
    ({"camera": "sony", "near": "-17,180,100", "taken_after": "2024-08-01"}, {"fiji_east.jpg"}),
    ({"filter": 'camera_make == "Apple"', "taken_after": "2024-06-01"}, {"tokyo.heic"}),
])
def test_filters_select_exactly_the_photos_whose_exif_says_so(library, filters, want):
    vs, folder = library
    assert _found(vs, folder, **filters) == want


def test_an_exact_filter_is_the_same_as_its_expression_given_as_filter(library):
    vs, folder = library
    for kwargs in ({"taken_after": "2024-06-01", "taken_before": "2024-09-01"}, {"camera": "apple"}):
        expression = PhotoFilter.build(**kwargs).expression()
        assert _found(vs, folder, **kwargs) == _found(vs, folder, filter=expression)


def test_near_gives_k_hits_when_there_are_k_though_the_box_holds_more(library):
    vs, folder = library
    assert len(vs.query(str(folder / "far.jpg"), k=2, near="-17,180,100")) == 2
    assert len(vs.query(str(folder / "far.jpg"), k=3, near="-17,180,100")) == 3


def test_group_by_with_near(library):
    vs, folder = library
    hits = vs.query(str(folder / "far.jpg"), k=10, near="-17,180,100", group_by="camera_make")
    assert sorted(h.metadata["camera_make"] for h in hits) == ["NIKON CORPORATION", "SONY"]


def test_rows_carry_their_exif_and_hide_the_bookkeeping(library):
    vs, folder = library
    hit = next(h for h in vs.query(str(folder / "tokyo.heic"), k=1))
    assert hit.path.endswith("tokyo.heic")
    assert hit.metadata["taken_at"] == utc(2024, 6, 1, 1)
    assert (hit.metadata["camera_make"], hit.metadata["orientation"]) == ("Apple", 6)
    assert hit.metadata["gps_lat"] == pytest.approx(35.6812, abs=1e-6)
    assert "exif_fields" not in hit.metadata and "camera_words" not in hit.metadata
    assert (hit.metadata["width"], hit.metadata["height"]) == (48, 64)  # upright


def test_info_counts_the_rows_that_have_each_field(library):
    vs, _ = library
    assert vs.info()["exif"] == {"taken_at": 6, "camera_make": 7, "camera_model": 7, "lens": 0, "gps_lat": 8,
                                 "gps_lon": 8, "orientation": 2}  # the HEIC's 6, the DNG's 1
