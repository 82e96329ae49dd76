"""Product feeds in CSV, JSON Lines and Parquet: the same rows and the same types from each."""

from __future__ import annotations

import json

import pytest

from vitsearch.errors import VitsearchError
from vitsearch.feeds import feed_format, read_feed

ROWS = [
    {"sku": "00123", "image": "https://cdn.example/a.jpg", "title": "Red shoe", "price": 49.5, "stock": 3,
     "sale": True},
    {"sku": "00124", "image": ["https://cdn.example/b1.jpg", "s3://bucket/b2.jpg"], "title": "Blue shoe",
     "price": 60, "stock": None, "sale": False},
    {"sku": "00125", "image": "img/c.png", "title": "Green, bag", "price": 12.25, "stock": 0, "sale": False},
]


def write_feed(path, rows=ROWS):
    """``rows`` as a feed in the format of ``path``'s extension (a list cell: JSON array in CSV)."""
    kind = feed_format(path)
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "csv":
        import csv

        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            for r in rows:
                writer.writerow({k: (json.dumps(v) if isinstance(v, list) else "" if v is None else
                                     str(v).lower() if isinstance(v, bool) else v) for k, v in r.items()})
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        images = [r["image"] if isinstance(r["image"], list) else [r["image"]] for r in rows]
        table = pa.table({**{k: [r[k] for r in rows] for k in rows[0] if k != "image"}, "image": images})
        pq.write_table(table, path)
    return path


@pytest.mark.parametrize("name", ["feed.csv", "feed.jsonl", "feed.parquet"])
def test_every_format_gives_the_same_rows_and_types(tmp_path, name):
    rows = list(read_feed(write_feed(tmp_path / name), "image", "sku"))
    assert [r.images for r in rows] == [["https://cdn.example/a.jpg"],
                                        ["https://cdn.example/b1.jpg", "s3://bucket/b2.jpg"], ["img/c.png"]]
    assert [r.fields for r in rows] == [
        {"sku": "00123", "title": "Red shoe", "price": 49.5, "stock": 3, "sale": True},
        {"sku": "00124", "title": "Blue shoe", "price": 60, "stock": None, "sale": False},
        {"sku": "00125", "title": "Green, bag", "price": 12.25, "stock": 0, "sale": False},
    ]
    assert all(r.error is None for r in rows)
    assert rows[0].where == ("row 1" if name.endswith("parquet") else "line 2" if name.endswith("csv") else "line 1")


def test_the_id_column_stays_text_and_other_csv_cells_are_inferred(tmp_path):
    feed = tmp_path / "f.csv"
    feed.write_text("sku,image,price\n007,a.jpg,7\n1e3,b.jpg,x\n")
    rows = list(read_feed(feed, "image", "sku"))
    assert [r.fields for r in rows] == [{"sku": "007", "price": 7}, {"sku": "1e3", "price": "x"}]


def test_a_csv_list_may_be_separated_by_bars(tmp_path):
    feed = tmp_path / "f.csv"
    feed.write_text("image,sku\nhttps://x/a.jpg | https://x/b.jpg,1\n")
    assert next(read_feed(feed, "image")).images == ["https://x/a.jpg", "https://x/b.jpg"]


def test_parquet_decimals_dates_and_nan(tmp_path):
    import datetime
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": ["a.jpg"], "price": pa.array([decimal.Decimal("9.99")], pa.decimal128(5, 2)),
                             "added": [datetime.date(2024, 5, 1)], "rating": [float("nan")]}), tmp_path / "f.parquet")
    row = next(read_feed(tmp_path / "f.parquet", "image"))
    assert row.fields == {"price": 9.99, "added": "2024-05-01", "rating": None}


@pytest.mark.parametrize(
    "name, text, where, reason",
    [
        ("f.csv", "sku,image\n1,\n", "line 2", "no image in column 'image'"),
        ("f.csv", "sku,image\n,a.jpg\n", "line 2", "empty 'sku' (--id-column)"),
        ("f.csv", 'sku,image\n1,"[oops"\n', "line 2", "'image' starts with '[' but is not a JSON array"),
        ("f.jsonl", '{"sku": 1, "image": 5}\n', "line 1", "'image' must be a URL or path, or a list of them"),
        ("f.jsonl", '{"sku": 1, "image": []}\n', "line 1", "no image in column 'image'"),
        # after a good line, a damaged one (an export cut short, a stray array) is that line's failure
        ("f.jsonl", '{"sku": 0, "image": "a.jpg"}\n{"sku": 1, "ima\n', "line 2", "not JSON ("),
        ("f.jsonl", '{"sku": 0, "image": "a.jpg"}\n["b.jpg"]\n', "line 2", "each line must be a JSON object"),
    ],
)
def test_a_bad_row_costs_one_line(tmp_path, name, text, where, reason):
    (tmp_path / name).write_text(text)
    row = list(read_feed(tmp_path / name, "image", "sku"))[-1]
    assert row.where == where and row.error.startswith(reason)


def test_a_csv_cell_may_be_long(tmp_path):
    description = "<p>" + "very " * 40_000 + "long</p>"  # 200 KB: beyond the csv module's 128 KiB default
    (tmp_path / "f.csv").write_text(f"sku,image,description\n1,a.jpg,{description}\n2,b.jpg,short\n")
    rows = list(read_feed(tmp_path / "f.csv", "image", "sku"))
    assert [r.fields["description"] for r in rows] == [description, "short"]


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("f.csv", "sku,img\n1,a.jpg\n", "no column 'image' (--image-column); its columns are 'sku', 'img'"),
        ("f.jsonl", '{"sku": 1, "img": "a.jpg"}\n', "no column 'image' (--image-column)"),
        ("f.csv", "image,unit price\na.jpg,3\n", "'unit price' is not a usable field name"),
        ("f.csv", "image,width\na.jpg,3\n", "'width' is one of vitsearch's own fields"),
        ("f.csv", "image,feed\na.jpg,3\n", "'feed' is one of vitsearch's own fields"),
        ("f.jsonl", '{"image": "a.jpg", "tags": ["x"]}\n', "'tags' must be a string, number or boolean"),
        ("f.jsonl", "not json\n", "line 1: not JSON"),
        ("f.parquet", "not parquet", "cannot read the feed"),
        ("f.txt", "image\na.jpg\n", "a feed is a .csv, .jsonl or .parquet file"),
    ],
)
def test_a_feed_that_cannot_be_stored_is_an_error(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(VitsearchError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        list(read_feed(tmp_path / name, "image"))


def test_image_and_id_columns_must_differ(tmp_path):
    with pytest.raises(VitsearchError, match="another column"):
        list(read_feed(write_feed(tmp_path / "f.csv"), "image", "image"))
