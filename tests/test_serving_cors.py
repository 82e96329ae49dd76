"""CORS: off by default; for the origins given, preflights and answers (errors too) carry the headers."""

from __future__ import annotations

import pytest

from vitsearch.serving.auth import Keys
from vitsearch.serving.cors import check_origin

SHOP = "https://shop.example"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}


@pytest.mark.parametrize("origin, expected", [
    ("https://shop.example", "https://shop.example"), ("http://localhost:3000", "http://localhost:3000"),
    (" https://shop.example/ ", "https://shop.example"), ("*", "*"),
])
def test_good_origins(origin, expected):
    assert check_origin(origin) == expected


@pytest.mark.parametrize("origin, reason", [
    ("shop.example", "looks like"), ("ftp://shop.example", "looks like"), ("https://", "looks like"),
    ("https://shop.example/app", "scheme, a host and a port only: https://shop.example"),
    ("https://shop.example?x=1", "only"), ("https://user:pw@shop.example", "only: https://shop.example"),
])
def test_bad_origins_say_why(origin, reason):
    with pytest.raises(ValueError, match=reason.replace("?", r"\?")):
        check_origin(origin)


def test_off_by_default(serve_app):
    client = serve_app()
    r = client.options("/search", headers={"Origin": SHOP, **PREFLIGHT})
    assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in client.get("/stats", headers={"Origin": SHOP}).headers


def test_allowed_origins_get_preflights_and_headers_even_on_errors(serve_app):
    client = serve_app(keys=Keys(["a-key-for-cors-tests-0123"]), cors_origins=[SHOP, "http://localhost:3000"])
    r = client.options("/images", headers={"Origin": SHOP, **PREFLIGHT})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == SHOP
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    assert "DELETE" in r.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in r.headers  # keys travel in a header, never in cookies
    assert client.get("/stats", headers={"Origin": SHOP}).headers["access-control-allow-origin"] == SHOP
    refused = client.delete("/images/1", headers={"Origin": SHOP})  # the page can read why: 401 with CORS
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == SHOP
    other = client.options("/search", headers={"Origin": "https://evil.example", **PREFLIGHT})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in client.get("/stats", headers={"Origin": "https://evil.example"}).headers


def test_any_origin(serve_app):
    client = serve_app(cors_origins=["*"])
    assert client.get("/stats", headers={"Origin": "https://anywhere.example"}).headers[
        "access-control-allow-origin"] == "*"
