"""GET /metrics: what Prometheus scrapes after a few requests of each kind."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from vitsearch.errors import StoreError
from vitsearch.serving.metrics import Metrics


def _scrape(client) -> dict:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _jpeg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (80, 60), colour).save(buf, "JPEG")
    return buf.getvalue()


def test_requests_batches_embedding_search_and_rows_are_counted(serve_app, photos):
    client = serve_app()
    for _ in range(2):
        assert client.post("/search", files={"image": ("q.jpg", (photos / "coffee.jpg").read_bytes())},
                           data={"k": "3"}).status_code == 200
    assert client.post("/images", files={"image": ("n.jpg", _jpeg((10, 200, 30)))}).status_code == 201
    assert client.get("/images/123").status_code == 404
    assert client.get("/no/such/path").status_code == 404
    assert client.post("/search", files={"image": ("q.jpg", _jpeg((1, 2, 3)))},
                       data={"filter": "width >>> 3"}).status_code == 400
    m = _scrape(client)
    assert _value(m, "vitsearch_http_requests_total", method="POST", route="/search", status="200") == 2
    assert _value(m, "vitsearch_http_requests_total", method="POST", route="/search", status="400") == 1
    assert _value(m, "vitsearch_http_requests_total", method="POST", route="/images", status="201") == 1
    assert _value(m, "vitsearch_http_requests_total", method="GET", route="/images/{image_id}", status="404") == 1
    assert _value(m, "vitsearch_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert _value(m, "vitsearch_http_request_duration_seconds_count", method="POST", route="/search") == 3
    assert _value(m, "vitsearch_http_requests_in_flight") == 1  # the scrape itself
    assert _value(m, "vitsearch_http_response_bytes_total") > 0
    assert _value(m, "vitsearch_batch_size_count") >= 4 and _value(m, "vitsearch_batch_size_sum") >= 4
    assert _value(m, "vitsearch_embedded_images_total") == 4
    assert _value(m, "vitsearch_embed_seconds_count") >= 1 and _value(m, "vitsearch_embed_seconds_sum") > 0
    assert _value(m, "vitsearch_search_seconds_count") >= 3
    assert _value(m, "vitsearch_store_errors_total", operation="search") == 0  # a bad filter is the client's
    assert _value(m, "vitsearch_rows") == 8
    assert _value(m, "process_resident_memory_bytes") > 10_000_000
    info = next(k for k in m if k[0] == "vitsearch_info")
    assert dict(info[1])["collection"] == "images" and dict(info[1])["version"]
    again = _scrape(client)  # the first scrape is counted, with its route
    assert _value(again, "vitsearch_http_requests_total", method="GET", route="/metrics", status="200") == 1


def test_store_errors_are_counted_by_operation_and_rows_read_nan(serve_app, monkeypatch):
    client = serve_app()
    store = serve_app.service.vs.store

    def down(*args, **kwargs):
        raise StoreError("Milvus query failed: the server went away")

    monkeypatch.setattr(store, "get", down)
    monkeypatch.setattr(store, "count", down)
    assert client.get("/rows/123").status_code == 503
    assert client.post("/search", json={"id": "123"}).status_code == 503
    assert client.get("/healthz").status_code == 503
    m = _scrape(client)
    assert _value(m, "vitsearch_store_errors_total", operation="get") == 2
    assert _value(m, "vitsearch_store_errors_total", operation="count") >= 1  # healthz (the scrape reads rows after)
    assert _value(m, "vitsearch_rows") != _value(m, "vitsearch_rows")  # NaN: no count, no failed scrape


def test_each_service_has_its_own_registry():
    a, b = Metrics(), Metrics()
    a.observe_request("GET", "/stats", 200, 0.01, 10)
    assert b"vitsearch_http_requests_total{" not in b.render()
    assert b'route="/stats"' in a.render()


@pytest.mark.parametrize("status", [200, 404, 503])
def test_observed_requests_are_counted_by_status(status):
    m = Metrics()
    m.observe_request("POST", "/search", status, 0.2, 100)
    text = m.render().decode()
    assert f'vitsearch_http_requests_total{{method="POST",route="/search",status="{status}"}} 1.0' in text


def test_made_up_methods_share_one_label_so_no_client_can_grow_metrics(serve_app):
    client = serve_app()
    for i in range(50):
        assert client.request(f"X{i:04d}", "/healthz").status_code == 405
    client.request("DELETE", "/healthz")
    m = _scrape(client)
    methods = {dict(labels)["method"] for name, labels in m if name == "vitsearch_http_requests_total"}
    assert methods == {"other", "DELETE"}
    assert _value(m, "vitsearch_http_requests_total", method="other", route="/healthz", status="405") == 50
