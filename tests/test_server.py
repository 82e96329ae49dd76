"""`vitsearch serve`: every endpoint and every error, through FastAPI's test client, plus one real server."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from faults import free_port
from helpers import SAMPLES, headless_chrome, healthy, needs_browser, photo, wait_until_up
from PIL import Image

from vitsearch import VisualSearch
from vitsearch.errors import VitsearchError
from vitsearch.server import MicroBatcher, Service, create_app


@pytest.fixture
def service(lite_uri, photos, bundled_encoder, tmp_path):
    vs = VisualSearch(lite_uri, encoder=bundled_encoder)
    vs.index(photos)
    svc = Service(vs, upload_dir=str(tmp_path / "uploads"), thumbnail_dir=str(tmp_path / "thumbs"),
                  max_upload_bytes=1_000_000)
    yield svc
    svc.close()


@pytest.fixture
def client(service):
    with TestClient(create_app(service)) as c:
        yield c


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _upload(client, data: bytes, name="q.jpg", **fields):
    return client.post("/search", files={"image": (name, data, "application/octet-stream")},
                       data={k: str(v) for k, v in fields.items()})


def test_search_by_upload_returns_ranked_hits_with_urls(client, photos):
    r = _upload(client, (photos / "chelsea.jpg").read_bytes(), k=3)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["took_ms"] > 0
    hits = body["results"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["path"] == str(photos / "chelsea.jpg") and hits[0]["score"] > 0.99
    assert hits[1]["path"] == str(photos / "sub" / "cat_copy.png")
    assert hits[0]["thumbnail_url"] == f"/thumbnails/{hits[0]['id']}"
    assert hits[0]["image_url"] == f"/images/{hits[0]['id']}"
    assert "vector" not in hits[0] and hits[0]["width"] == 451


def test_more_like_this_by_id_leaves_the_image_itself_out(client, photos):
    chelsea = _upload(client, (photos / "chelsea.jpg").read_bytes(), k=1).json()["results"][0]
    r = client.post("/search", json={"id": chelsea["id"], "k": 2})
    assert r.status_code == 200, r.text
    paths = [h["path"] for h in r.json()["results"]]
    assert paths[0] == str(photos / "sub" / "cat_copy.png") and str(photos / "chelsea.jpg") not in paths
    assert client.post("/search", json={"id": 12345, "k": 2}).status_code == 404


@pytest.mark.parametrize("k", ["0", "1001", "-3", "ten"])
def test_k_outside_range_is_400(client, photos, k):
    r = _upload(client, (photos / "coffee.jpg").read_bytes(), k=k)
    assert r.status_code == 400 and "k" in r.json()["detail"]


def test_filter_works_and_a_malformed_filter_is_400_with_reason(client, photos):
    r = _upload(client, (photos / "chelsea.jpg").read_bytes(), k=10, filter="width > 460")
    assert r.status_code == 200
    assert r.json()["results"] and all(h["width"] > 460 for h in r.json()["results"])
    r = _upload(client, (photos / "chelsea.jpg").read_bytes(), filter="width >>> 3")
    assert r.status_code == 400 and "invalid filter" in r.json()["detail"]
    r = _upload(client, (photos / "chelsea.jpg").read_bytes(), filter="width >>> 3 " + "x" * 100_000)
    assert r.status_code == 400 and len(r.json()["detail"]) < 1000  # not the whole filter echoed back
    r = client.post("/search", json={"id": 1, "filter": 7})
    assert r.status_code == 400


def test_min_score_keeps_close_hits_only_by_upload_and_by_id(client, photos):
    data = (photos / "chelsea.jpg").read_bytes()
    everything = _upload(client, data, k=7).json()["results"]
    close = _upload(client, data, k=7, min_score=0.9)
    assert close.status_code == 200, close.text
    assert [h["id"] for h in close.json()["results"]] == [h["id"] for h in everything if h["score"] >= 0.9]
    assert len(close.json()["results"]) == 2  # the photo and its copy; nothing else is that close
    chelsea = everything[0]["id"]
    by_id = client.post("/search", json={"id": chelsea, "k": 5, "min_score": 0.9})
    assert [h["path"] for h in by_id.json()["results"]] == [str(photos / "sub" / "cat_copy.png")]
    assert client.post("/search", json={"id": chelsea, "k": 5, "min_score": "0.9999"}).json()["results"] == []
    assert _upload(client, data, k=3, min_score="").status_code == 200  # an empty field is no floor
    for bad in ("1.5", "-3", "high", "nan"):
        r = _upload(client, data, min_score=bad)
        assert r.status_code == 400 and "min_score" in r.json()["detail"]
    for bad in (2, True, [0.5], "inf"):
        r = client.post("/search", json={"id": chelsea, "min_score": bad})
        assert r.status_code == 400 and "min_score" in r.json()["detail"]


def test_bad_uploads(client, photos):
    text = _upload(client, b"<html>not an image</html>", name="cat.jpg")  # the name lies: content decides
    assert text.status_code == 415 and "not an image" in text.json()["detail"]
    data = (photos / "chelsea.jpg").read_bytes()
    corrupt = _upload(client, data[: len(data) // 3])
    assert corrupt.status_code == 400 and "decode" in corrupt.json()["detail"]
    assert _upload(client, b"").status_code == 400
    pdf = _upload(client, b"%PDF-1.4\n" + b"0" * 100, name="x.png")
    assert pdf.status_code == 415
    big = _upload(client, b"\xff\xd8" + os.urandom(1_200_000))
    assert big.status_code == 413 and "limit" in big.json()["detail"]
    assert client.post("/search", files={"other": ("x", b"1")}).status_code == 400
    assert client.post("/search", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    assert client.post("/search", json={"k": 3}).status_code == 400
    assert client.post("/search", content=b"x", headers={"content-type": "text/plain"}).status_code == 415


@pytest.fixture
def image_host(photos):
    from imagehost import ImageHost

    with ImageHost() as host:
        host.image("/chelsea.jpg", (photos / "chelsea.jpg").read_bytes(), content_type="image/jpeg")
        host.html("/page.jpg")
        host.huge("/huge.jpg", 1_500_000)
        yield host


def test_search_by_url_refuses_private_addresses_by_default(client, image_host):
    r = client.post("/search", json={"url": image_host.url("/chelsea.jpg"), "k": 1})
    assert r.status_code == 400 and "refused: 127.0.0.1 is a loopback address" in r.json()["detail"]
    assert "--allow-private-urls" in r.json()["detail"] and image_host.requests["/chelsea.jpg"] == 0


def _allowing_private_urls(service):
    """A second service on the same collection that fetches from 127.0.0.1 (closed without the store)."""
    allowed = Service(service.vs, upload_dir=str(service.upload_dir), thumbnail_dir=str(service.thumbnail_dir),
                      max_upload_bytes=1_000_000, allow_private_urls=True)
    yield allowed
    allowed.batcher.close()
    allowed.fetcher.close()


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"url": "file:///etc/passwd"}, 400, "url must be an http:// or https:// URL"),
        ({"url": "s3://bucket/key.jpg"}, 400, "url must be an http:// or https:// URL"),
        ({"url": 5}, 400, "url must be a non-empty string"),
        ({"url": "http://x/a.jpg", "id": 1}, 400, 'send {"id"'),
        ({"url": "{host}/page.jpg"}, 415, "not an image"),
        ({"url": "{host}/huge.jpg"}, 413, "larger than the limit"),
        ({"url": "{host}/gone.jpg"}, 400, "HTTP 404 Not Found"),
        ({"url": "{host}/chelsea.jpg", "k": 0}, 400, "k must be between"),
    ],
)
def test_search_by_url_errors(service, image_host, body, status, words):
    body = {k: v.format(host=image_host.url("")) if isinstance(v, str) else v for k, v in body.items()}
    for allowed in _allowing_private_urls(service):
        with TestClient(create_app(allowed)) as c:
            r = c.post("/search", json=body)
    assert r.status_code == status and words in r.json()["detail"], r.text


def test_search_by_url_when_private_addresses_are_allowed(service, image_host, photos):
    for allowed in _allowing_private_urls(service):
        with TestClient(create_app(allowed)) as c:
            r = c.post("/search", json={"url": image_host.url("/chelsea.jpg"), "k": 2})
        assert r.status_code == 200, r.text
        hits = r.json()["results"]
        assert hits[0]["path"] == str(photos / "chelsea.jpg") and hits[0]["score"] > 0.99
        # a row indexed from a URL is shown from that URL
        shown = allowed.describe({"id": 7, "path": "https://cdn.example/a.jpg"})
        assert shown["image_url"] == shown["thumbnail_url"] == "https://cdn.example/a.jpg"


def test_the_file_and_thumbnail_of_a_row_indexed_from_a_url_redirect_there(service, client, image_host):
    url = image_host.url("/chelsea.jpg")
    assert service.vs.index([url]).added == 1
    found = next(iter(service.vs.store.iter_rows(f'path == "{url}"', ["id"])))["id"]
    for route in ("images", "thumbnails"):
        r = client.get(f"/{route}/{found}", follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"] == url, route


def test_streamed_upload_over_the_limit_is_413(client):
    def chunks():
        for _ in range(40):
            yield b"\0" * 65536  # 2.6 MB with no Content-Length

    r = client.post("/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413


def test_add_image_with_metadata_then_filter_fetch_and_delete(client, service, tmp_path):
    data = _jpeg(photo(7, (120, 90)))
    r = client.post("/images", files={"image": ("new.jpg", data, "image/jpeg")}, data={"sku": "A-1", "price": "12.5"})
    assert r.status_code == 201, r.text
    row = r.json()
    assert row["sku"] == "A-1" and row["price"] == 12.5 and row["width"] == 120
    stored = Path(row["path"])
    assert stored.parent.parent == tmp_path / "uploads" and stored.read_bytes() == data
    hits = _upload(client, data, k=1, filter='sku == "A-1"').json()["results"]
    assert hits[0]["id"] == row["id"] and hits[0]["price"] == 12.5
    again = client.post("/images", files={"image": ("again.jpg", data, "image/jpeg")}, data={"colour": "red"})
    assert again.status_code == 200 and again.json()["id"] == row["id"]
    assert again.json()["sku"] == "A-1" and again.json()["colour"] == "red"  # fields are kept and added
    assert client.get(f"/images/{row['id']}").content == data
    assert client.get(f"/rows/{row['id']}").json()["sku"] == "A-1"
    gone = client.delete(f"/images/{row['id']}")
    assert gone.status_code == 200 and gone.json()["deleted"]
    assert not stored.exists()
    assert client.delete(f"/images/{row['id']}").status_code == 404
    assert client.get(f"/images/{row['id']}").status_code == 404


def test_add_image_refuses_bad_fields_and_non_images(client):
    data = _jpeg(photo(8))
    for field in ("path", "vector", "9lives", "a-b"):
        r = client.post("/images", files={"image": ("x.jpg", data, "image/jpeg")}, data={field: "1"})
        assert r.status_code == 400, field
    assert client.post("/images", files={"image": ("x.png", b"GIF89 no", "image/png")}).status_code == 415
    assert client.post("/images", json={"path": "/etc/passwd"}).status_code == 415


def test_delete_of_an_indexed_file_keeps_the_file(client, photos):
    hit = _upload(client, (photos / "coffee.jpg").read_bytes(), k=1).json()["results"][0]
    assert client.delete(f"/images/{hit['id']}").status_code == 200
    assert (photos / "coffee.jpg").is_file()


@pytest.mark.parametrize("url", [
    "/images/123", "/images/abc", "/images/..%2F..%2Fetc%2Fpasswd", "/images/%2e%2e/%2e%2e/etc/passwd",
    "/images/../../etc/passwd", "/thumbnails/..%2Fsecret", "/thumbnails/999", "/images/1e3", "/images/%00",
])
def test_only_rows_are_served(client, url):
    r = client.get(url)
    assert r.status_code == 404
    assert b"root:" not in r.content


def test_a_row_whose_file_is_gone_is_404(client, photos):
    hit = _upload(client, (photos / "coffee.jpg").read_bytes(), k=1).json()["results"][0]
    os.remove(hit["path"])
    assert client.get(f"/images/{hit['id']}").status_code == 404
    assert client.get(f"/thumbnails/{hit['id']}").status_code == 404


def test_thumbnail_is_a_jpeg_made_once(client, photos, tmp_path):
    hit = _upload(client, (photos / "astronaut.jpg").read_bytes(), k=1).json()["results"][0]
    r = client.get(hit["thumbnail_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(r.content)).size) == 192
    cached = list((tmp_path / "thumbs").glob(f"{hit['id']}-*.jpg"))
    assert len(cached) == 1
    before = cached[0].stat().st_mtime_ns
    assert client.get(hit["thumbnail_url"]).content == r.content
    assert cached[0].stat().st_mtime_ns == before


def test_health_stats_docs_and_page(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    stats = client.get("/stats").json()
    assert stats["count"] == 7 and stats["dimension"] > 0 and stats["uptime_s"] >= 0 and stats["model"]
    assert client.get("/openapi.json").json()["paths"]["/search"]["post"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text  # works offline: no CDN


def test_concurrent_searches_are_right_and_batched(client, photos, service):
    files = sorted(p for p in photos.rglob("*") if p.is_file())
    results: dict = {}

    def one(path):
        results[path] = _upload(client, path.read_bytes(), k=1).json()["results"][0]["path"]

    threads = [threading.Thread(target=one, args=(p,)) for p in files for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {p: str(p) for p in files}


def test_micro_batcher_groups_waiting_items_and_isolates_errors():
    seen = []

    def work(items):
        seen.append(len(items))
        time.sleep(0.05)
        return [ValueError("odd") if i % 2 else i * 10 for i in items]

    batcher = MicroBatcher(work, max_batch=16, max_wait=0.01)
    out: dict = {}

    def call(i):
        try:
            out[i] = batcher.submit(i)
        except ValueError as exc:
            out[i] = str(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert out == {i: ("odd" if i % 2 else i * 10) for i in range(8)}
    assert sum(seen) == 8 and len(seen) < 8


def test_the_served_lite_store_is_refused_to_another_process(service, lite_uri):
    started = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "vitsearch", "info", "--uri", lite_uri],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "in use by another process" in r.stderr
    assert "Traceback" not in r.stderr
    assert time.perf_counter() - started < 30


@contextlib.contextmanager
def _serving(lite_uri, photos, tmp_path, *extra: str):
    """`vitsearch serve` as a user starts it, on a free port, over an indexed folder; its base URL."""
    subprocess.run([sys.executable, "-m", "vitsearch", "index", str(photos), "--uri", lite_uri], check=True,
                   capture_output=True, timeout=300)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vitsearch", "serve", "--uri", lite_uri, "--port", str(port), "--log-level", "warning",
         "--upload-dir", str(tmp_path / "up"), "--thumbnail-dir", str(tmp_path / "th"), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_up(proc, lambda: healthy(base + "/healthz"), seconds=120,
                  failure=lambda: f"serve did not start: {proc.stdout.read()}")
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def running_server(lite_uri, photos, tmp_path):
    with _serving(lite_uri, photos, tmp_path) as base:
        yield base


def test_serve_command_answers_over_http(running_server, photos):
    boundary = "vitsearchtest"
    data = (photos / "horse.jpg" if (photos / "horse.jpg").exists() else photos / "sub" / "horse.JPG").read_bytes()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\n2\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"h.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(running_server + "/search", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        hits = json.load(r)["results"]
    assert hits[0]["path"].endswith("horse.JPG") and len(hits) == 2


@needs_browser
def test_page_in_a_real_browser(running_server, photos, tmp_path):
    pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = headless_chrome()
    try:
        driver.get(running_server + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: "images in" in d.find_element(By.ID, "stats").text)
        driver.find_element(By.ID, "file").send_keys(str(SAMPLES / "photos" / "chelsea.jpg"))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".hit")) == 7)
        wait.until(lambda d: all(i.get_attribute("naturalWidth") not in (None, "0")
                                 for i in d.find_elements(By.CSS_SELECTOR, ".hit img")))
        cards = driver.find_elements(By.CSS_SELECTOR, ".hit")
        assert "chelsea.jpg" in cards[0].text and "cat_copy.png" in cards[1].text
        driver.save_screenshot(str(tmp_path / "results.png"))
        clicked = cards[1].get_attribute("data-id")
        cards[1].click()
        wait.until(lambda d: "more like" in d.find_element(By.ID, "message").text)
        cards = driver.find_elements(By.CSS_SELECTOR, ".hit")
        assert len(cards) == 6 and clicked not in [c.get_attribute("data-id") for c in cards]
        assert "chelsea.jpg" in cards[0].text  # the near-duplicate's nearest other image is its original
        driver.save_screenshot(str(tmp_path / "more_like_this.png"))
        driver.find_element(By.ID, "min-score").send_keys("0.9\n")  # "more like" the copy, only what is that close
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".hit")) == 1)
        assert "chelsea.jpg" in driver.find_element(By.CSS_SELECTOR, ".hit").text
        driver.find_element(By.ID, "filter").send_keys("width >>> 1\n")
        wait.until(lambda d: "invalid filter" in d.find_element(By.ID, "message").text)
    finally:
        driver.quit()
    assert (tmp_path / "results.png").stat().st_size > 10_000


def test_a_taken_port_is_a_one_line_error(lite_uri):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "vitsearch", "serve", "--uri", lite_uri, "--port", str(port)],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "cannot listen on 127.0.0.1" in r.stderr and "Traceback" not in r.stderr


def test_slow_and_oversized_clients_are_cut_off_and_never_starve_others(lite_uri, photos, tmp_path):
    with _serving(lite_uri, photos, tmp_path, "--read-timeout", "2", "--max-connections", "64") as base:
        port = int(base.rsplit(":", 1)[1])
        # slow loris: request heads that never end, and a body that stalls after its first bytes
        heads = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        for sock in heads:
            sock.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        body = socket.create_connection(("127.0.0.1", port))
        body.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 100000\r\n\r\n--b\r\n")
        started = time.perf_counter()
        with urllib.request.urlopen(base + "/stats", timeout=10) as r:  # others are served meanwhile
            assert r.status == 200
        assert time.perf_counter() - started < 1.5
        body.settimeout(15)
        assert body.recv(4096).startswith(b"HTTP/1.1 408")  # the stalled body, after 2 s without data
        for sock in heads:  # the unfinished heads: connection closed, nothing answered
            sock.settimeout(15)
            assert sock.recv(4096) == b""
            sock.close()
        body.close()
        # a head far over h11's limit is refused, not buffered
        huge = socket.create_connection(("127.0.0.1", port))
        huge.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 200_000 + b"\r\n\r\n")
        huge.settimeout(15)
        reply = huge.recv(4096)
        assert reply == b"" or reply.split(b" ")[1].startswith(b"4")
        huge.close()
        with urllib.request.urlopen(base + "/healthz", timeout=10) as r:
            assert r.status == 200


def test_photos_uploaded_as_heic_keep_their_exif_and_searches_filter_by_it(client, photos):
    pytest.importorskip("pillow_heif")
    from photofiles import save_photo

    def heic(seed, **tags):
        buf = io.BytesIO()
        save_photo(buf, photo(seed, (120, 90)), "HEIF", **tags)
        return buf.getvalue()

    fiji = heic(40, taken="2024:08:30 10:00:00", offset="+12:00", make="Apple", model="iPhone 14", gps=(-17.0, 179.95),
                orientation=6)
    samoa = heic(41, taken="2023:01:01 10:00:00", make="Google", model="Pixel 7", gps=(-13.8, -171.8))
    rows = []
    for name, data in (("fiji.heic", fiji), ("samoa.heic", samoa)):
        r = client.post("/images", files={"image": (name, data, "image/heic")}, data={"trip": "pacific"})
        assert r.status_code == 201, r.text
        rows.append(r.json())
    assert rows[0]["path"].endswith(".heic") and rows[0]["camera_model"] == "iPhone 14"
    assert (rows[0]["orientation"], rows[0]["width"], rows[0]["height"]) == (6, 90, 120)
    assert "exif_fields" not in rows[0] and "camera_words" not in rows[0]

    def ids(response):
        assert response.status_code == 200, response.text
        return [h["id"] for h in response.json()["results"]]

    query = (photos / "coffee.jpg").read_bytes()
    assert ids(_upload(client, query, k=5, near="-17,-179.9,50")) == [rows[0]["id"]]  # across the antimeridian
    assert ids(_upload(client, query, k=5, taken_before="2024-01-01", camera="pixel")) == [rows[1]["id"]]
    assert ids(_upload(client, query, k=5, filter='trip == "pacific"', camera="iphone")) == [rows[0]["id"]]
    by_id = client.post("/search", json={"id": rows[1]["id"], "k": 5, "near": [-17, 179.95, 10],
                                         "taken_after": "2024-08-29T22:00+00:00"})
    assert ids(by_id) == [rows[0]["id"]]
    assert ids(client.post("/search", json={"id": rows[0]["id"], "k": 5, "near": "-17,179.95,10"})) == []


@pytest.mark.parametrize("fields, words", [
    ({"near": "-17,179.9"}, "LAT,LON,KM"), ({"taken_after": "soon"}, "not a date"), ({"camera": "--"}, "no letters"),
    ({"taken_after": "2024-02-01", "taken_before": "2024-01-01"}, "later"),
])
def test_photo_filters_that_make_no_sense_are_400(client, photos, fields, words):
    r = _upload(client, (photos / "coffee.jpg").read_bytes(), **fields)
    assert r.status_code == 400 and words in r.json()["detail"]
    r = client.post("/search", json={"id": 1, **fields})
    assert r.status_code == 400 and words in r.json()["detail"]
    assert client.post("/search", json={"id": 1, "camera": 5}).status_code == 400


def test_the_server_uses_only_the_public_api_of_visualsearch():
    """server.py and vitsearch/serving/ reach VisualSearch through its public methods and attributes only:
    no ``x._name`` where ``_name`` is one of VisualSearch's private methods or attributes (``self._...``
    of the server's own classes aside)."""
    import ast
    import inspect

    import vitsearch.server
    from vitsearch.api import VisualSearch as Search

    private = {name for name in vars(Search) if name.startswith("_") and not name.startswith("__")}
    private |= {node.attr for node in ast.walk(ast.parse(inspect.getsource(Search)))
                if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")}
    assert {"_check_model", "_encoder", "_spec"} <= private  # the scan knows what it must not find
    package = Path(vitsearch.server.__file__).parent
    found = []
    for path in [package / "server.py", *sorted((package / "serving").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr in private
                    and not (isinstance(node.value, ast.Name) and node.value.id == "self")):
                found.append(f"{path.name}:{node.lineno}: .{node.attr}")
    assert found == []


def test_odd_requests_get_clean_answers(client, photos):
    for path in ("/rows/%C2%B2", "/images/%C2%B2", "/thumbnails/%D9%A3", "/rows/-%C2%B2"):  # "²", "٣": isdigit()
        r = client.get(path)
        assert r.status_code == 404 and "no image with id" in r.json()["detail"], path
    assert client.delete("/images/%C2%B2").status_code == 404
    deep = client.post("/search", content=b"[" * 100_000 + b"]" * 100_000, headers={"Content-Type": "application/json"})
    assert deep.status_code == 400 and "not valid JSON" in deep.json()["detail"]
    data = (photos / "chelsea.jpg").read_bytes()
    shouted = client.post("/search", files={"image": ("q.jpg", data)}, data={"k": "1"})
    boundary = shouted.request.headers["content-type"].split("boundary=")[1]
    upper = client.post("/search", content=shouted.request.content,
                        headers={"Content-Type": f"Multipart/Form-Data; boundary={boundary}"})
    assert upper.status_code == 200 and upper.json()["results"][0]["path"] == str(photos / "chelsea.jpg")
    assert client.post("/search", content=b'{"id": 1}', headers={"Content-Type": "Application/JSON"}).status_code == 404
    head = client.head("/healthz")
    assert head.status_code == 200 and head.content == b""


def test_an_unexpected_failure_is_a_json_500_and_the_folders_are_checked_at_start(service, photos, tmp_path,
                                                                               monkeypatch):
    def broken(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("vitsearch.server._keep", broken)
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        r = client.post("/images", files={"image": ("n.jpg", _jpeg(photo(5)))})
        assert r.status_code == 500 and r.json() == {"detail": "internal error: No space left on device (see the "
                                                                "server's log)"}
    blocker = tmp_path / "a file"
    blocker.write_text("in the way")
    for kind in ("upload_dir", "thumbnail_dir"):
        with pytest.raises(VitsearchError, match="cannot create the (upload|thumbnail) folder .*a file/sub"):
            Service(service.vs, **{kind: str(blocker / "sub")})
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o555)
    if os.geteuid() != 0:  # root may write anywhere
        with pytest.raises(VitsearchError, match="is not writable"):
            Service(service.vs, upload_dir=str(readonly))


def test_an_upload_embeds_as_the_indexer_embeds_its_file(client, photos):
    data = (photos / "chelsea.jpg").read_bytes()  # 451 x 300: the indexer decodes it at half scale
    top = _upload(client, data, k=1).json()["results"][0]
    assert top["path"] == str(photos / "chelsea.jpg") and top["score"] >= 0.9999  # was 0.9995 (full decode)
    mirrored = Image.open(photos / "chelsea.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    added = client.post("/images", files={"image": ("m.jpg", _jpeg(mirrored))}).json()
    assert (added["width"], added["height"]) == (451, 300)  # its own size, not the reduced decode's


def test_large_uploads_decode_one_at_a_time(service, photos, monkeypatch):
    from vitsearch import server

    real, active, most = server.load_image, [0], {}
    lock = threading.Lock()

    def slow_load(data, **kwargs):
        with lock:
            active[0] += 1
            most["n"] = max(most.get("n", 0), active[0])
        time.sleep(0.3)
        with lock:
            active[0] -= 1
        return real(data, **kwargs)

    monkeypatch.setattr(server, "load_image", slow_load)
    data = (photos / "chelsea.jpg").read_bytes()  # 135,300 pixels
    for limit, expected in ((100_000, 1), (10_000_000, 4)):
        monkeypatch.setattr(server, "LARGE_PIXELS", limit)
        most.clear()
        threads = [threading.Thread(target=service.decode, args=(data,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert most["n"] == expected, limit
