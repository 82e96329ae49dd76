"""Fetching images by URL: against a local HTTP server on 127.0.0.1 that misbehaves on purpose."""

from __future__ import annotations

import io
import os
import time

import pytest
from helpers import photo
from imagehost import ImageHost

from vitsearch.fetch import (
    Fetcher,
    FetchError,
    FetchOptions,
    TooLargeError,
    address_kind,
    object_token,
    parse_retry_after,
)


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    photo(seed).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def host():
    with ImageHost() as server:
        yield server


def fetcher(**options) -> Fetcher:
    defaults = {"timeout": 1.0, "retries": 1, "backoff": 0.01}
    return Fetcher(FetchOptions(**{**defaults, **options}))


def test_an_image_comes_with_its_validators_and_a_conditional_request_downloads_nothing(host):
    url = host.image("/a.png", png(1))
    with fetcher() as f:
        got = f.open(url)
        assert got.data == png(1) and got.size == len(png(1)) and got.etag.startswith('"')
        assert got.mtime == 1_700_000_000.0 and got.content_type == "image/png"
        assert f.open(url, etag=got.etag) is None  # 304: not modified
        assert f.open(url, mtime=got.mtime) is None
        host.replace("/a.png", png(2))
        changed = f.open(url, etag=got.etag)
        assert changed.data == png(2) and changed.etag != got.etag
    assert host.bodies["/a.png"] == 2 and host.requests["/a.png"] == 4
    assert host.headers["/a.png"][1]["If-None-Match"] == got.etag


@pytest.mark.parametrize(
    "route, reason",
    [
        (lambda h: h.url("/missing.jpg"), r"^HTTP 404 Not Found$"),
        (lambda h: h.status("/secret.jpg", 403), r"^HTTP 403 Forbidden$"),
        (lambda h: h.status("/down.jpg", 503), r"^HTTP 503 Service Unavailable$"),
        (lambda h: h.slow("/slow.jpg", 3.0), r"^timed out after 0.3 s$"),
        (lambda h: h.huge("/big.jpg", 300_000), r"^larger than the limit of 0.0954 MB \(300,000 bytes\)$"),
        (lambda h: h.huge("/streamed.jpg", 300_000, declared=False), r"^larger than the limit of 0.0954 MB$"),
        (lambda h: "http://127.0.0.1:1/x.jpg", r"^cannot connect: "),
        (lambda h: "http:///x.jpg", r"^bad URL: no host name$"),
        (lambda h: "http://exa mple.com/x.jpg", r"^bad URL: it contains spaces$"),
        (lambda h: "ftp:/x.jpg", r"^bad URL: not a URL"),
        (lambda h: "/local/file.jpg", r"^bad URL: not a URL"),
    ],
)
def test_failures_give_a_reason(host, route, reason):
    url = route(host)
    with fetcher(timeout=0.3, max_bytes=100_000) as f, pytest.raises(FetchError, match=reason):
        f.open(url)


def test_too_large_is_its_own_kind(host):
    with fetcher(max_bytes=1000) as f, pytest.raises(TooLargeError):
        f.open(host.image("/a.png", png(1)))


def test_429_is_retried_after_the_time_the_server_asks_for(host):
    url = host.busy_then("/busy.png", png(3), times=2, retry_after="1")
    waits = []
    f = Fetcher(FetchOptions(retries=3), sleep=waits.append)
    assert f.open(url).data == png(3)
    assert waits == [1.0, 1.0] and host.requests["/busy.png"] == 3


def test_5xx_and_timeouts_are_retried_with_growing_back_off_then_given_up(host):
    url = host.status("/down.jpg", 502)
    waits = []
    f = Fetcher(FetchOptions(retries=3, backoff=0.5), sleep=waits.append)
    with pytest.raises(FetchError, match="HTTP 502"):
        f.open(url)
    assert host.requests["/down.jpg"] == 4 and len(waits) == 3
    assert 0.25 <= waits[0] <= 0.5 and 0.5 <= waits[1] <= 1.0 and 1.0 <= waits[2] <= 2.0


def test_a_retry_after_longer_than_the_run_waits_fails_the_image(host):
    url = host.busy_then("/busy.png", png(3), times=5, retry_after="3600")
    f = Fetcher(FetchOptions(retries=3), sleep=lambda s: pytest.fail("should not wait an hour"))
    with pytest.raises(FetchError, match=r"HTTP 429 Too Many Requests \(Retry-After 3600 s is longer"):
        f.open(url)


def test_a_real_retry_after_is_honoured_in_time(host):
    url = host.busy_then("/busy.png", png(3), times=1, retry_after="1")
    started = time.monotonic()
    assert fetcher().open(url).data == png(3)
    assert time.monotonic() - started >= 0.95


def test_404_is_not_retried(host):
    with fetcher(retries=3) as f, pytest.raises(FetchError):
        f.open(host.url("/missing.jpg"))
    assert host.requests["/missing.jpg"] == 1


def test_stream_fetches_concurrently_within_the_per_host_limit(host):
    host.latency = 0.1
    urls = [host.image(f"/{i}.png", png(i)) for i in range(24)]
    f = fetcher(concurrency=16, per_host=4)
    got = dict(f.stream([(i, url, None, None) for i, url in enumerate(urls)]))
    assert sorted(got) == list(range(24)) and all(got[i].data == png(i) for i in range(24))
    # concurrent, and never more than per_host at once: the host saw exactly 4 requests in flight
    # (a count, not a clock, so a loaded machine cannot fail it)
    assert host.max_active == 4


def test_stream_gives_each_failure_and_the_outcome_of_prepare(host):
    good = host.image("/a.png", png(1))
    jobs = [("good", good, None, None), ("gone", host.url("/nope.jpg"), None, None),
            ("same", good, host.image("/a.png", png(1)) and fetcher().open(good).etag, None),
            ("bad", host.html("/page.jpg"), None, None)]

    def prepare(fetched):
        if not fetched.content_type.startswith("image/"):
            raise ValueError("not an image")
        return len(fetched.data)

    out = dict(fetcher().stream(jobs, prepare))
    assert out["good"] == len(png(1)) and out["same"] is None
    assert isinstance(out["gone"], FetchError) and str(out["gone"]) == "HTTP 404 Not Found"
    assert isinstance(out["bad"], FetchError) and "not an image" in str(out["bad"])


def test_stream_stops_starting_requests_while_unconsumed_bytes_fill_the_buffer(host):
    urls = [host.image(f"/{i}.png", png(i)) for i in range(40)]
    f = fetcher(concurrency=2, buffer_bytes=3 * len(png(0)))
    stream = f.stream((i, url, None, None) for i, url in enumerate(urls))
    next(stream)
    time.sleep(0.5)  # the consumer dawdles: the fetcher may fill its buffer, and no more
    assert 3 <= sum(host.requests.values()) <= 3 + 2 + 1
    assert len(list(stream)) == 39


def test_nothing_is_written_to_disk_without_a_cache_dir(host, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fetcher().open(host.image("/a.png", png(1)))
    assert os.listdir(tmp_path) == []


def test_the_cache_dir_keeps_images_and_revalidates_them(host, tmp_path):
    url = host.image("/a.png", png(1))
    cache = tmp_path / "cache"
    first = fetcher(cache_dir=str(cache)).open(url)
    again = fetcher(cache_dir=str(cache)).open(url)  # a new process: asks "changed?", reads the bytes here
    assert again.from_cache and again.data == first.data and host.bodies["/a.png"] == 1
    assert host.headers["/a.png"][-1]["If-None-Match"] == first.etag
    host.replace("/a.png", png(2))
    fresh = fetcher(cache_dir=str(cache)).open(url)
    assert not fresh.from_cache and fresh.data == png(2)
    assert sorted(p.name for p in (cache / "objects").rglob("*") if p.is_file()) == sorted([first.sha256, fresh.sha256])


# -- the server's guard against request forgery ----------------------------------------------------
@pytest.mark.parametrize(
    "address, kind",
    [
        ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("192.168.0.7", "private"),
        ("172.16.5.4", "private"), ("169.254.169.254", "link-local"), ("fe80::1%eth0", "link-local"),
        ("0.0.0.0", "unspecified"), ("::ffff:127.0.0.1", "loopback"), ("100.64.0.1", "non-global"),
        ("fd00::1", "private"), ("224.0.0.1", "multicast"), ("93.184.216.34", None), ("2606:4700::1", None),
    ],
)
def test_address_kinds(address, kind):
    assert address_kind(address) == kind


@pytest.mark.parametrize("path", ["http://127.0.0.1:{port}/a.png", "http://localhost:{port}/a.png",
                                  "http://[::1]:{port}/a.png"])
def test_the_guard_refuses_loopback_urls_and_allows_them_when_told(host, path):
    host.image("/a.png", png(1))
    url = path.format(port=host.server.server_address[1])
    guarded = Fetcher(FetchOptions(allow_private=False, retries=0))
    with pytest.raises(FetchError, match="refused: .* is a loopback address"):
        guarded.open(url)
    assert host.requests["/a.png"] == 0
    if "[::1]" not in url:  # the test server listens on IPv4 only
        assert Fetcher(FetchOptions(allow_private=True)).open(url).data == png(1)


def test_the_guard_refuses_other_schemes():
    with pytest.raises(FetchError, match="only http and https"):
        Fetcher(FetchOptions(allow_private=False)).open("s3://bucket/key.jpg")


def test_the_guard_checks_every_redirect_and_connects_to_the_address_it_checked():
    import httpx

    seen = []

    def handler(request: httpx.Request):
        seen.append((str(request.url), request.headers["Host"], request.extensions.get("sni_hostname")))
        if request.url.path == "/start.jpg":
            return httpx.Response(302, headers={"Location": "http://internal.example/admin.png"})
        return httpx.Response(200, content=png(1))

    addresses = {"cdn.example": ["93.184.216.34"], "internal.example": ["10.0.0.5"]}
    client = httpx.Client(transport=httpx.MockTransport(handler))
    f = Fetcher(FetchOptions(allow_private=False, retries=0), client=client,
                resolver=lambda host, port: addresses[host])
    with pytest.raises(FetchError, match=r"refused: internal.example is a private address \(10.0.0.5\)"):
        f.open("http://cdn.example/start.jpg")
    assert seen == [("http://93.184.216.34/start.jpg", "cdn.example", None)]  # pinned to the checked address
    seen.clear()
    f.open("https://cdn.example/ok.png")
    assert seen == [("https://93.184.216.34/ok.png", "cdn.example", "cdn.example")]  # TLS still checks the name


# -- small parsers ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, seconds",
    [("7", 7.0), (" 0 ", 0.0), ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0), ("soon", None), ("", None), (None, None)],
)
def test_retry_after(value, seconds):
    now = 1445412480.0  # 07:28:00 that day
    assert parse_retry_after(value, now=now) == seconds


@pytest.mark.parametrize(
    "info, token",
    [
        ({"size": 5, "ETag": '"abc"', "LastModified": __import__("datetime").datetime(2024, 1, 1,
          tzinfo=__import__("datetime").timezone.utc)}, (5, 1704067200.0, '"abc"')),  # s3fs
        ({"size": 5, "etag": "CJ", "updated": "2024-01-01T00:00:00Z"}, (5, 1704067200.0, "CJ")),  # gcsfs
        ({"size": 5, "mtime": 12.5}, (5, 12.5, None)),  # local, memory
        ({"name": "x"}, (None, None, None)),
    ],
)
def test_object_tokens_of_each_store(info, token):
    assert object_token(info) == token


# -- object stores: whatever their library raises is one reason ----------------------------------------
class NoCredentialsError(Exception):
    """Named like botocore's: vitsearch knows it by its name (botocore is optional)."""


def fake_filesystem(name: str, error: Exception | None = None, init_error: Exception | None = None):
    """Register an fsspec filesystem for the protocol ``name`` whose reads raise ``error`` (or whose constructor
    raises ``init_error``), as an object store without credentials or a host that does not answer."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    class Failing(MemoryFileSystem):
        cachable = False
        protocol = (name,)

        def __init__(self, *args, **kwargs):
            if init_error is not None:
                raise init_error
            super().__init__(*args, **kwargs)

        def info(self, path, **kwargs):
            raise error

        def find(self, path, **kwargs):
            raise error

    fsspec.register_implementation(name, Failing, clobber=True)


@pytest.mark.parametrize("error, reason", [
    (NoCredentialsError("Unable to locate credentials"), "no credentials for s3: set AWS_ACCESS_KEY_ID"),
    (RuntimeError("the SDK\nbroke"), "cannot read: the SDK broke"),
    (KeyError(), "cannot read: KeyError"),
])
def test_an_object_store_error_of_any_type_is_a_fetch_error_with_one_line(error, reason):
    fake_filesystem("failing", error)
    with pytest.raises(FetchError, match=reason) as caught:
        fetcher(allow_private=True, retries=0).open("failing://bucket/x.jpg")
    assert "\n" not in str(caught.value)


def test_a_filesystem_that_cannot_be_made_is_a_fetch_error():
    fake_filesystem("brokenftp", init_error=TypeError("__init__() missing 1 required positional argument: 'host'"))
    with pytest.raises(FetchError, match=r"cannot open brokenftp://: __init__\(\) missing"):
        fetcher(allow_private=True, retries=0).open("brokenftp://example.com/x.jpg")


def test_an_ftp_uri_gives_its_host_to_the_filesystem(monkeypatch):
    import fsspec

    made = {}
    monkeypatch.setattr(fsspec, "filesystem", lambda protocol, **options: made.update(options) or 1 / 0)
    with pytest.raises(FetchError, match="cannot open ftp://: division by zero"):
        fetcher(allow_private=True, retries=0).open("ftp://example.com:2121/x.jpg")
    assert made["host"] == "example.com" and made["port"] == 2121


def test_keyboard_interrupt_is_not_swallowed():
    fake_filesystem("interrupted", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        fetcher(allow_private=True, retries=0).open("interrupted://bucket/x.jpg")
