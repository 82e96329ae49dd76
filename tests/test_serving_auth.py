"""API keys: the checks themselves, and every route of the app, taken from its OpenAPI document, with
no key, a wrong key and the right one."""

from __future__ import annotations

import hmac
import io
import logging
import urllib.request

import pytest
from fastapi.routing import APIRoute
from helpers import headless_chrome, needs_browser, serve_process
from imagehost import ImageHost
from PIL import Image

from vitsearch import VisualSearch
from vitsearch.serving import auth
from vitsearch.serving.auth import Keys, check_key, is_loopback, split_keys
from vitsearch.serving.errors import ApiError

KEY = "k3y-for-tests-0123456789abcdef"
OTHER = "another-key-0123456789abcdef"

# What the tests hold to be reads and open routes. Every other route in the OpenAPI document is a
# write and must refuse a request without the right key: a route added later is checked here by
# being listed in the document, and is a write until it is put in one of these sets on purpose.
READS = {("post", "/search"), ("get", "/images/{image_id}"), ("get", "/thumbnails/{image_id}"),
         ("get", "/rows/{image_id}"), ("get", "/stats"), ("get", "/metrics")}
OPEN = {("get", "/healthz")}
HIDDEN = {("get", "/"), ("get", "/favicon.ico"), ("head", "/healthz")}  # left out of the document; open (the page asks for a key)
WRITES = {("post", "/images"), ("delete", "/images/{image_id}")}  # at least these


# -- the checks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("key, reason", [
    ("", "empty"), ("has space", "printable ASCII"), ("a,b", "commas"), ("tab\there", "printable"),
    ("ключ", "printable ASCII"), ("nul\x00", "printable"),
])
def test_bad_keys_are_refused_without_quoting_them(key, reason):
    with pytest.raises(ValueError, match=reason) as err:
        check_key(key)
    assert not key or key not in str(err.value)


@pytest.mark.parametrize("text, keys", [
    ("a", ["a"]), ("a,b", ["a", "b"]), (" a , b ,", ["a", "b"]), ("", []), (",,", []),
])
def test_the_variable_is_a_comma_separated_list(text, keys):
    assert split_keys(text) == keys


@pytest.mark.parametrize("header, ok", [
    (f"Bearer {KEY}", True), (f"bearer {KEY}", True), (f"BEARER   {KEY} ", True), (f"Bearer {OTHER}", True),
    (None, False), ("", False), (KEY, False), (f"Basic {KEY}", False), ("Bearer", False), ("Bearer ", False),
    (f"Bearer {KEY[:-1]}", False), (f"Bearer {KEY}x", False), (f"Bearer {KEY.upper()}", False),
    ("Bearer \udcff", False),
])
def test_a_write_needs_one_of_the_keys_as_a_bearer_token(header, ok):
    keys = Keys([KEY, OTHER])
    if ok:
        keys.check(auth.WRITE, header)
        return
    with pytest.raises(ApiError) as err:
        keys.check(auth.WRITE, header)
    assert err.value.status == 401 and err.value.headers["WWW-Authenticate"].startswith("Bearer")
    assert KEY not in str(err.value) and OTHER not in str(err.value)


@pytest.mark.parametrize("keys, reads, level, needed", [
    ([], False, auth.WRITE, False), ([], True, auth.READ, False), ([KEY], False, auth.WRITE, True),
    ([KEY], False, auth.READ, False), ([KEY], True, auth.READ, True), ([KEY], True, auth.OPEN, False),
])
def test_which_levels_need_a_key(keys, reads, level, needed):
    assert Keys(keys, reads=reads).needed(level) is needed


def test_every_key_is_compared_in_constant_time_and_none_is_shown(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    keys = Keys([KEY, OTHER, "third-key-0123456789"])
    for given in (KEY, "wrong", "x" * 500):  # the first key, a short wrong one, a long wrong one
        calls.clear()
        keys.valid(given)
        assert calls == [(32, 32)] * 3  # every key, digests of one length: no early exit, no length leak
    assert KEY not in repr(keys) and repr(keys) == "Keys(3 keys, reads=False)"


def test_access_levels_are_named_and_checked():
    assert auth.access(auth.READ) == {auth.ACCESS: "read"}
    with pytest.raises(ValueError, match="open, read, write"):
        auth.access("admin")


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.0.1", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("example.com", False), ("", False),
])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


# -- every route of the app -----------------------------------------------------------------------
def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 90)).save(buf, "JPEG")
    return buf.getvalue()


def _operations(client) -> list[tuple[str, str]]:
    paths = client.get("/openapi.json").json()["paths"]
    return sorted((method, path) for path, ops in paths.items() for method in ops)


def _call(client, method: str, path: str, image_id: str, key: str | None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = path.replace("{image_id}", image_id)
    if (method, path) == ("post", "/search"):
        return client.post(url, json={"id": image_id, "k": 2}, headers=headers)
    if (method, path) == ("post", "/images"):
        return client.post(url, files={"image": ("n.jpg", _jpeg(), "image/jpeg")}, headers=headers)
    return client.request(method.upper(), url, headers=headers)


def _an_id(client, key=None) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post("/search", files={"image": ("q.jpg", _jpeg(), "image/jpeg")}, data={"k": "1"},
                       headers=headers).json()["results"][0]["id"]


def test_every_route_is_in_the_document_or_known_to_be_hidden(serve_app):
    client = serve_app(keys=Keys([KEY]))
    documented = set(_operations(client))
    for route in client.app.routes:
        if isinstance(route, APIRoute):
            for method in route.methods:
                op = (method.lower(), route.path)
                assert op in documented or op in HIDDEN, f"{op} is neither in /openapi.json nor known as hidden"
    assert WRITES <= documented and (READS | OPEN) <= documented


def test_with_keys_every_write_route_refuses_a_missing_or_wrong_key(serve_app):
    client = serve_app(keys=Keys([KEY, OTHER]))
    image_id = _an_id(client)
    count = client.get("/stats").json()["count"]
    writes = [op for op in _operations(client) if op not in READS | OPEN]
    assert set(writes) >= WRITES
    for method, path in _operations(client):
        for key in (None, "wrong-key-0123456789abcdef", KEY[:-1]):
            r = _call(client, method, path, image_id, key)
            if (method, path) in writes:
                assert r.status_code == 401, (method, path, key, r.status_code)
                assert r.json()["detail"] and r.headers["www-authenticate"].startswith("Bearer")
            else:
                assert r.status_code != 401, (method, path, key, r.text)
    assert client.get("/stats").json()["count"] == count  # nothing refused was done
    assert client.get(f"/rows/{image_id}").status_code == 200
    for method, path in sorted(writes, reverse=True):  # POST before DELETE
        r = _call(client, method, path, image_id, OTHER)
        assert r.status_code in (200, 201), (method, path, r.text)
    assert client.get(f"/rows/{image_id}").status_code == 404


def test_keys_for_reads_guard_everything_but_health_and_the_page(serve_app):
    client = serve_app(keys=Keys([KEY], reads=True))
    image_id = _an_id(client, KEY)
    for method, path in _operations(client):
        r = _call(client, method, path, image_id, None)
        if (method, path) in OPEN:
            assert r.status_code == 200
        else:
            assert r.status_code == 401, (method, path)
    for method, path in sorted(HIDDEN):
        assert client.request(method.upper(), path).status_code in (200, 204)
    for method, path in sorted(READS):
        assert _call(client, method, path, image_id, KEY).status_code == 200, (method, path)
    assert client.get("/docs").status_code == 200  # the documentation itself stays readable


def test_without_keys_every_route_is_open(serve_app):
    client = serve_app()
    image_id = _an_id(client)
    for method, path in _operations(client):
        assert _call(client, method, path, image_id, None).status_code != 401, (method, path)
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})


def test_the_document_marks_the_routes_that_need_a_key(serve_app):
    paths = serve_app(keys=Keys([KEY])).get("/openapi.json").json()
    assert paths["components"]["securitySchemes"][auth.SCHEME] == {
        "type": "http", "scheme": "bearer", "description": "one of the keys given to `vitsearch serve --api-key`"}
    for path, ops in paths["paths"].items():
        for method, op in ops.items():
            guarded = (method, path) not in READS | OPEN
            assert ("security" in op) is guarded, (method, path)
            assert ("401" in op["responses"]) is guarded and "422" not in op["responses"], (method, path)
            assert op[auth.ACCESS] == ("write" if guarded else "open" if (method, path) in OPEN else "read")


def test_keys_never_reach_the_log_or_an_answer(serve_app, caplog):
    client = serve_app(keys=Keys([KEY]))
    caplog.set_level(logging.DEBUG)
    answers = []
    for header in (f"Bearer {KEY}", f"Bearer {KEY}x", f"Basic {KEY}", KEY):
        for method, path in (("post", "/images"), ("delete", "/images/123"), ("get", "/stats")):
            r = client.request(method.upper(), path, headers={"Authorization": header})
            answers.append(r.text)
    assert caplog.records and any(r.name == "vitsearch.access" for r in caplog.records)
    assert KEY not in caplog.text and not any(KEY in a for a in answers)


# -- the page -------------------------------------------------------------------------------------
@needs_browser
def test_the_page_asks_for_a_key_when_the_server_does(tmp_path, lite_uri, bundled_encoder):
    pytest.importorskip("selenium.webdriver")

    # a row indexed from another host, which answers any origin: the page must not send it the key
    host = ImageHost(cors=True)
    photo_url = host.image("/shoe.jpg", _jpeg(), content_type="image/jpeg")
    with host:
        with VisualSearch(lite_uri, encoder=bundled_encoder) as vs:
            assert vs.index([photo_url]).added == 1
        _page_with_a_key(tmp_path, lite_uri)
    seen = host.headers["/shoe.jpg"]
    assert len(seen) >= 2  # the indexer's download, then the page's <img>
    assert not any(name.lower() == "authorization" for headers in seen for name in headers)
    assert host.requests["OPTIONS /shoe.jpg"] == 0  # no preflight: the page never tried a request with the key


def _page_with_a_key(tmp_path, lite_uri):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with serve_process(tmp_path, lite_uri, "--api-key", KEY, "--keys-for-reads", "--log-level", "warning") as (
            _, port, _log):
        base = f"http://127.0.0.1:{port}"
        upload = urllib.request.Request(base + "/images", data=_multipart(_jpeg()), headers={
            "Content-Type": "multipart/form-data; boundary=pageboundary", "Authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(upload, timeout=60) as r:
            assert r.status == 201
        driver = headless_chrome()
        try:
            driver.get(base + "/")
            wait = WebDriverWait(driver, 60)
            wait.until(lambda d: d.find_element(By.ID, "auth").is_displayed())  # stats answered 401
            assert "needs an API key" in driver.find_element(By.ID, "auth-note").text
            driver.find_element(By.ID, "key").send_keys("not-the-key-0123456789\n")
            wait.until(lambda d: "not valid" in d.find_element(By.ID, "auth-note").text
                       and d.find_element(By.ID, "auth").is_displayed())
            driver.find_element(By.ID, "key").send_keys(KEY + "\n")
            wait.until(lambda d: "2 images in" in d.find_element(By.ID, "stats").text)
            assert not driver.find_element(By.ID, "auth").is_displayed()
            query = tmp_path / "query.jpg"
            query.write_bytes(_jpeg())
            driver.find_element(By.ID, "file").send_keys(str(query))
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".hit")) == 2)
            wait.until(lambda d: all(i.get_attribute("naturalWidth") not in (None, "0")  # thumbnails, with the key
                                     for i in d.find_elements(By.CSS_SELECTOR, ".hit img")))
            assert KEY not in driver.current_url
        finally:
            driver.quit()


def _multipart(data: bytes) -> bytes:
    b = "pageboundary"
    return (f"--{b}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
