"""End to end through the CLI in a real process: product feeds of image URLs, an S3 bucket, query by URL.

All traffic stays on 127.0.0.1: a local HTTP server (a thread of this process) and moto's S3 server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import SAMPLES
from imagehost import ImageHost
from test_feeds import write_feed

FASHION = sorted((SAMPLES / "fashion").glob("*.png"))[:8]


def vitsearch(*args, env=None, timeout=600):
    done = subprocess.run([sys.executable, "-m", "vitsearch", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done


def index(*args, env=None) -> dict:
    return json.loads(vitsearch("index", *args, "--json", env=env).stdout)


@pytest.fixture
def shop():
    """A CDN of product photos, and the ways a CDN fails."""
    with ImageHost() as host:
        rows = []
        for i, path in enumerate(FASHION):
            url = host.image(f"/img/{path.name}", path.read_bytes())
            rows.append({"sku": f"{i:05d}", "image": url, "title": path.stem, "price": 10.0 + 5 * i,
                         "on_sale": i % 2 == 0})
        rows[0]["image"] = [rows[0]["image"], host.image("/img/back.png", FASHION[-1].read_bytes())]  # two views
        rows[1]["image"] = host.busy_then("/img/busy.png", FASHION[1].read_bytes(), times=1, retry_after="1")
        rows[2]["image"] = host.image("/img/changing.png", FASHION[2].read_bytes())
        bad = {
            "missing": (host.url("/img/missing.jpg"), "HTTP 404 Not Found"),
            "forbidden": (host.status("/img/secret.jpg", 403), "HTTP 403 Forbidden"),
            "slow": (host.slow("/img/slow.jpg", 5.0), "timed out after 3 s"),
            "html": (host.html("/img/page.jpg"), "not a recognised image format (the server sent text/html)"),
            "huge": (host.huge("/img/huge.jpg", 2_000_000), "larger than the limit of 1 MB (2,000,000 bytes)"),
            "badurl": ("http:///img/x.jpg", "bad URL: no host name"),
        }
        for n, (name, (url, _)) in enumerate(bad.items()):
            rows.append({"sku": f"9{n:04d}", "image": url, "title": name, "price": 1.0, "on_sale": False})
        host.rows, host.bad = rows, bad
        yield host


FETCH = ["--timeout", 3, "--retries", 1, "--max-image-mb", 1]  # 3 s: a loaded CI machine still answers; the slow image takes 5


def stored(db) -> dict[str, dict]:
    from vitsearch.store import Store

    store = Store(str(db), "images")
    try:
        return {row["path"]: row for row in store.iter_rows("", ["*"])}
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["products.csv", "products.jsonl", "products.parquet"])
def test_a_feed_end_to_end(tmp_path, shop, name):
    feed = write_feed(tmp_path / name, shop.rows)
    db = tmp_path / "shop.db"
    first = index(feed, "--image-column", "image", "--id-column", "sku", "--uri", db, *FETCH)
    good = len(FASHION) + 1  # a row with two images
    assert (first["scanned"], first["added"], first["fetched"], first["removed"]) == (good + 6, good, good, 0)
    assert (first["embedded"], first["reused"]) == (good - 1, 1)  # the back view is the same picture as the last
    failed = {f["path"]: f["reason"] for f in first["failed"]}
    assert failed == {url: reason for url, reason in shop.bad.values()}
    assert shop.requests["/img/busy.png"] == 2  # a 429, then the image after the Retry-After second

    rows = stored(db)  # the URL as the row's path, the metadata typed, the id column as text
    assert sorted(rows) == sorted(u for r in shop.rows[:len(FASHION)] for u in
                                  (r["image"] if isinstance(r["image"], list) else [r["image"]]))
    row = rows[shop.rows[3]["image"]]
    assert (row["sku"], row["price"], row["on_sale"], row["title"]) == ("00003", 25.0, False, FASHION[3].stem)
    assert row["feed"] == str(feed) and row["etag"].startswith('"') and row["width"] > 0
    assert {rows[u]["sku"] for u in shop.rows[0]["image"]} == {"00000"}

    # unchanged: every image is asked "changed?" and none is downloaded; no model is loaded
    shop.reset_counts()
    again = index(feed, "--image-column", "image", "--id-column", "sku", "--uri", db, *FETCH)
    assert (again["unchanged"], again["added"], again["fetched"], again["embedded"]) == (good, 0, 0, 0)
    assert sum(shop.bodies.values()) == 0 and shop.requests["/img/changing.png"] == 1


@pytest.mark.slow
def test_a_feed_follows_its_changes_and_is_queried_by_url_price_and_sku(tmp_path, shop):
    feed = write_feed(tmp_path / "products.csv", shop.rows)
    db = tmp_path / "shop.db"
    index(feed, "--image-column", "image", "--id-column", "sku", "--uri", db, *FETCH)
    # one image changes (a new ETag; its new picture is another product's), a product leaves, a price changes
    shop.replace("/img/changing.png", FASHION[6].read_bytes())
    rows = [dict(r) for r in shop.rows if r["sku"] != "00004"]
    rows[4]["price"] = 99.0
    write_feed(feed, rows)
    shop.reset_counts()
    later = index(feed, "--image-column", "image", "--id-column", "sku", "--uri", db, *FETCH)
    assert (later["updated"], later["removed"], later["fetched"], later["metadata_updated"]) == (1, 1, 1, 1)
    assert (later["reused"], later["embedded"]) == (1, 0)
    assert sum(shop.bodies.values()) == 1 and len(stored(db)) == len(FASHION)

    query = shop.rows[3]["image"]
    cheap = json.loads(vitsearch("query", query, "--uri", db, "-k", 20, "--filter", "price < 25", "--json").stdout)
    assert cheap["query"] == query
    assert sorted(h["sku"] for h in cheap["results"]) == ["00000", "00000", "00001", "00002"]
    grouped = vitsearch("query", query, "--uri", db, "-k", 20, "--group-by", "sku").stdout.splitlines()
    assert grouped[0] == f"query: {query}" and grouped[1].split()[1:] == ["1.0000", query]
    assert len(grouped) == 1 + len(FASHION) - 1  # product 00000's two images count once; 00004 is gone


@pytest.mark.slow
def test_an_s3_prefix_end_to_end(tmp_path, s3, s3_server):
    s3.mkdir("catalogue")
    for path in FASHION[:5]:
        s3.put_file(str(path), f"catalogue/shoes/{path.name}")
    s3.pipe_file("catalogue/shoes/notes.txt", b"not an image")
    s3.put_file(str(FASHION[5]), "catalogue/bags/bag.png")  # outside the prefix
    db = tmp_path / "s3.db"
    first = index("s3://catalogue/shoes/", "--uri", db, env=s3_server)
    assert (first["scanned"], first["added"], first["fetched"], first["failed"]) == (5, 5, 5, [])
    again = index("s3://catalogue/shoes", "--uri", db, env=s3_server)
    assert (again["unchanged"], again["fetched"]) == (5, 0)  # the listing's ETags: no object opened
    s3.rm(f"catalogue/shoes/{FASHION[0].name}")
    s3.put_file(str(FASHION[6]), f"catalogue/shoes/{FASHION[1].name}")
    later = index("s3://catalogue/shoes", "--uri", db, env=s3_server)
    assert (later["removed"], later["updated"], later["unchanged"], later["fetched"]) == (1, 1, 3, 1)
    hits = json.loads(vitsearch("query", f"s3://catalogue/shoes/{FASHION[2].name}", "--uri", db, "-k", 1, "--json",
                                env=s3_server).stdout)
    assert hits["results"][0]["path"] == f"s3://catalogue/shoes/{FASHION[2].name}"
    removed = json.loads(vitsearch("remove", "s3://catalogue/shoes", "--uri", db, "--json").stdout)
    assert removed == {"removed": 4}


def test_a_query_url_that_fails_is_a_one_line_error(tmp_path, shop):
    from vitsearch.api import model_record
    from vitsearch.checkpoint import load_spec
    from vitsearch.store import Store

    store = Store(str(tmp_path / "empty.db"), "images")  # an empty collection of the bundled model
    store.create(model_record(load_spec(None)))
    store.close()
    url = shop.url("/img/missing.jpg")
    done = subprocess.run([sys.executable, "-m", "vitsearch", "query", url, "--uri", tmp_path / "empty.db"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr == f"Error: cannot read query image {url}: HTTP 404 Not Found\n"


def test_usage_errors_name_the_fix(tmp_path):
    (tmp_path / "feed.csv").write_text("image\nhttps://x/a.jpg\n")
    from click.testing import CliRunner

    from vitsearch.cli import main

    result = CliRunner().invoke(main, ["index", str(tmp_path / "feed.csv")])
    assert result.exit_code == 1 and "give --image-column" in result.stderr
    result = CliRunner().invoke(main, ["index", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = CliRunner().invoke(main, ["query", str(tmp_path)])
    assert result.exit_code == 2 and "is a directory" in result.stderr
