"""Graceful shutdown, with a real `vitsearch serve` process: an upload in flight when the signal comes is
stored whole (its answer sent, its row and file kept) or refused whole (nothing kept), never half."""

from __future__ import annotations

import io
import json
import re
import signal
import socket
import time
from pathlib import Path

from helpers import photo, serve_process

KEY = "shutdown-test-key-0123456789"


def _upload(data: bytes, key: str | None, **fields) -> bytes:
    """A whole POST /images request: head and multipart body."""
    b = "shutdownboundary"
    body = b"".join(f"--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
                    for k, v in fields.items())
    body += (f"--{b}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"u.jpg\"\r\n"
             "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    head = (f"POST /images HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={b}\r\n"
            f"Content-Length: {len(body)}\r\n" + (f"Authorization: Bearer {key}\r\n" if key else "") + "\r\n")
    return head.encode() + body


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    photo(seed, (320, 240)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True


def _reply(sock: socket.socket) -> bytes:
    sock.settimeout(60)
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def _stored(lite_uri: str) -> list[dict]:
    from vitsearch.store import Store

    store = Store(lite_uri, "images")
    try:
        return list(store.iter_rows(fields=["id", "path", "sha256", "sku"]))
    finally:
        store.close()


def test_sigterm_lets_an_upload_in_flight_finish_then_exits_0(tmp_path, lite_uri):
    data = _jpeg(5)
    request = _upload(data, KEY, sku="S-1")
    with serve_process(tmp_path, lite_uri, "--api-key", KEY, "--log-json") as (proc, port, log):
        sock = socket.create_connection(("127.0.0.1", port))
        half = len(request) - len(data) // 2
        sock.sendall(request[:half])  # the head and half the image: the request is under way
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        deadline = time.time() + 10
        while not _refused(port):  # no new connections...
            assert time.time() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.1)
        time.sleep(0.5)
        sock.sendall(request[half:])  # ...but the one in flight goes on
        reply = _reply(sock)
        assert proc.wait(timeout=60) == 0
    assert reply.startswith(b"HTTP/1.1 201"), reply[:300]
    row = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert row["sku"] == "S-1" and Path(row["path"]).read_bytes() == data
    assert [(str(r["id"]), r["sku"]) for r in _stored(lite_uri)] == [(row["id"], "S-1")]
    text = log.read_text()
    # --log-json: every line is one JSON object (a native library's own stderr line, in the absl / glog
    # format, is not vitsearch's to format; serve silences gRPC's, which CI once saw)
    lines = [json.loads(line) for line in text.splitlines() if not re.match(r"[IWEF]\d{4} \d\d:\d\d:", line)]
    access = [line for line in lines if line["logger"] == "vitsearch.access"]
    assert [(a["method"], a["route"], a["status"]) for a in access if a["route"] == "/images"] == [
        ("POST", "/images", 201)]
    assert any("SIGTERM" in line["message"] for line in lines)
    assert any("store flushed" in line["message"] for line in lines)
    assert KEY not in text


def test_an_upload_still_unfinished_when_the_shutdown_timeout_ends_is_refused_whole(tmp_path, lite_uri):
    data = _jpeg(6)
    request = _upload(data, None)
    with serve_process(tmp_path, lite_uri, "--shutdown-timeout", "1", "--log-level", "warning") as (proc, port, log):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(request[: len(request) - len(data) // 2])  # and the rest never comes
        time.sleep(1.0)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        reply = _reply(sock)
        assert proc.wait(timeout=60) == 0
        assert time.monotonic() - started < 20
    assert reply == b"" or reply.startswith(b"HTTP/1.1 503"), reply[:300]
    assert b"may or may not have taken effect" in reply or reply == b""
    assert _stored(lite_uri) == []
    assert not [p for p in (tmp_path / "up").rglob("*") if p.is_file()]
    assert "Traceback" not in log.read_text()


def test_a_search_stuck_on_a_download_neither_holds_the_shutdown_nor_takes_every_thread(tmp_path, lite_uri):
    import urllib.error
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    from imagehost import ImageHost

    from vitsearch.server import URL_FETCHES

    def search(url: str) -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/search", data=json.dumps({"url": url}).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    with ImageHost() as host:
        never = host.slow("/never.jpg", 300)  # answers long after every timeout
        with serve_process(tmp_path, lite_uri, "--allow-private-urls", "--shutdown-timeout", "1",
                           "--log-level", "warning") as (proc, port, log), ThreadPoolExecutor(URL_FETCHES + 4) as pool:
            stuck = [pool.submit(search, never) for _ in range(URL_FETCHES)]
            time.sleep(2.0)
            extra = [pool.submit(search, never) for _ in range(4)]
            assert [f.result(timeout=30) for f in extra] == [503] * 4  # refused at once, no thread held
            started = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
                assert r.status == 200 and time.monotonic() - started < 5
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0  # not the 60 s the downloads could still take
            assert all(f.result(timeout=30) == 503 for f in stuck)
    assert "still busy after the shutdown" in log.read_text()
