"""`vitsearch serve` latency and throughput: warm POST /search over N synthetic rows, one client and eight.

    python benchmarks/bench_serve.py [--rows 10000 100000] [--requests 60] [--clients 8] [--model DIR]
                                     [--uri http://127.0.0.1:19530]

For each row count, a store (a fresh Milvus Lite file, or with ``--uri`` a scratch collection on
that Milvus server, dropped afterwards) is filled with random unit vectors under the served model's
record (so the service accepts it), `vitsearch serve` is started as a user starts it, and a client
uploads the sample photos (real JPEG decode + embedding per request):

* one client, one request at a time: latency p50 / p95 (after 5 warm-up requests);
* ``--clients`` clients at once: requests per second and latency p50 / p95, with the service's
  micro-batching (``--max-batch 32``) and without it (``--max-batch 1``), measured in the same run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import results

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = sorted((ROOT / "sample_images" / "photos").glob("*.jpg"))


SCRATCH = "vitsearch_bench_serve"


def fill(uri: str, collection: str, rows: int, model: str | None) -> None:
    from vitsearch.api import model_record
    from vitsearch.checkpoint import load_spec
    from vitsearch.store import Store

    spec = load_spec(model)
    store = Store(uri, collection)
    store.drop()
    store.create(model_record(spec))
    rng = np.random.default_rng(0)
    for start in range(0, rows, 5000):
        vecs = rng.standard_normal((min(5000, rows - start), spec.dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        store.upsert([{"id": start + i, "path": f"/synthetic/{start + i}.jpg", "size": 1, "mtime": 0.0,
                       "sha256": f"s{start + i}", "width": 1, "height": 1, "category": f"c{(start + i) % 10}",
                       "vector": v.tolist()} for i, v in enumerate(vecs)])
    store.flush()
    # A server builds the index in the background; measuring meanwhile would time the build.
    deadline = time.time() + 3600
    while time.time() < deadline:
        index = store.client.describe_index(collection, "vector")
        if index.get("pending_index_rows", 0) == 0 and index.get("indexed_rows", rows) >= rows:
            break
        time.sleep(2)
    store.close()


def drop(uri: str, collection: str) -> None:
    from vitsearch.store import Store

    store = Store(uri, collection)
    store.drop()
    store.close()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _body(data: bytes, k: int) -> tuple[bytes, str]:
    b = "benchboundary"
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\n{k}\r\n--{b}\r\n"
            "Content-Disposition: form-data; name=\"image\"; filename=\"q.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
            ).encode() + data + f"\r\n--{b}--\r\n".encode()
    return body, f"multipart/form-data; boundary={b}"


class Client:
    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def search(self, data: bytes, k: int = 10) -> float:
        body, kind = _body(data, k)
        started = time.perf_counter()
        self.conn.request("POST", "/search", body=body, headers={"Content-Type": kind})
        response = self.conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {payload[:200]!r}")
        return time.perf_counter() - started


def start(uri: str, collection: str, port: int, max_batch: int, model: str | None, tmp: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vitsearch", "serve", "--uri", uri, "--collection", collection,
           "--port", str(port), "--log-level", "warning",
           "--max-batch", str(max_batch), "--upload-dir", os.path.join(tmp, "up"), "--thumbnail-dir", os.path.join(tmp, "th")]
    if model:
        cmd += ["--model", model]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("vitsearch serve did not start")


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values) * 1000, q)), 1)


def concurrent(port: int, clients: int, per_client: int, photos: list[bytes]) -> dict:
    latencies: list[float] = []
    lock = threading.Lock()

    def run(c: int) -> None:
        client = Client(port)
        for i in range(per_client):
            t = client.search(photos[(c + i) % len(photos)])
            with lock:
                latencies.append(t)

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    return {"requests_per_s": round(len(latencies) / seconds, 2), "p50_ms": _pct(latencies, 50), "p95_ms": _pct(latencies, 95)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--requests", type=int, default=60, help="sequential requests per measurement")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--model", help="default: the bundled model")
    parser.add_argument("--uri", help="a Milvus server (http://host:19530); default: a fresh Milvus Lite file per size")
    parser.add_argument("--fill", nargs=3, metavar=("URI", "COLLECTION", "ROWS"), help=argparse.SUPPRESS)
    parser.add_argument("--drop", nargs=2, metavar=("URI", "COLLECTION"), help=argparse.SUPPRESS)
    results.add_argument(parser)
    args = parser.parse_args()
    if args.fill:
        fill(args.fill[0], args.fill[1], int(args.fill[2]), args.model)
        return
    if args.drop:
        drop(*args.drop)
        return
    photos = [p.read_bytes() for p in PHOTOS]
    rows_out = []
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            uri, collection = (args.uri, SCRATCH) if args.uri else (os.path.join(tmp, "bench.db"), "images")
            started = time.perf_counter()
            # in a child process: Milvus Lite keeps its file locked until the process that opened it exits
            subprocess.run([sys.executable, __file__, "--fill", uri, collection, str(rows)]
                           + (["--model", args.model] if args.model else []), check=True)
            row: dict = {"store": "server" if args.uri else "lite", "rows": rows,
                         "fill_seconds": round(time.perf_counter() - started, 1)}
            for max_batch in (32, 1):
                port = _port()
                proc = start(uri, collection, port, max_batch, args.model, tmp)
                try:
                    client = Client(port)
                    for i in range(5):
                        client.search(photos[i % len(photos)])
                    if max_batch > 1:
                        single = [client.search(photos[i % len(photos)]) for i in range(args.requests)]
                        row["single_p50_ms"], row["single_p95_ms"] = _pct(single, 50), _pct(single, 95)
                    per = max(1, args.requests // args.clients) * 2
                    row[f"clients{args.clients}_batch{max_batch}"] = concurrent(port, args.clients, per, photos)
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
            batched = row[f"clients{args.clients}_batch32"]["requests_per_s"]
            unbatched = row[f"clients{args.clients}_batch1"]["requests_per_s"]
            row["batching_speedup"] = round(batched / unbatched, 2)
            print(json.dumps(row), flush=True)
            rows_out.append(row)
            if args.uri:
                subprocess.run([sys.executable, __file__, "--drop", uri, collection], check=True)
    print(json.dumps(rows_out, indent=2))
    results.write("bench_serve", {"runs": rows_out}, variant="Milvus server" if args.uri else "Milvus Lite",
                  settings={"rows": args.rows, "requests": args.requests, "clients": args.clients,
                            "model": args.model or "bundled"}, folder=results.folder_arg(args.results_dir))


if __name__ == "__main__":
    main()
