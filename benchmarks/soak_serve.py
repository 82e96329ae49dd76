"""Soak test of `vitsearch serve`: a real server process under mixed load for minutes, on loopback only.

    python benchmarks/soak_serve.py [--seconds 600] [--clients 8] [--max-requests 200000]
                                    [--stores lite server] [--uri http://127.0.0.1:19530] [--model DIR]

For each store (Milvus Lite in a fresh file; and a Milvus server, given by ``--uri`` or
``MILVUS_URI``, in a scratch collection dropped before and after), it starts `vitsearch serve` as a
user would (on 127.0.0.1, with an API key and JSON logs), uploads the six sample photos as fixed
rows, then lets ``--clients`` clients (one keep-alive connection each) mix, until ``--seconds`` have
passed or ``--max-requests`` were made:

* 35 % searches by upload (a sample photo or a new synthetic picture, k = 10),
* 30 % searches by id ("more like this" of a fixed row or of one the client uploaded),
* 20 % uploads of new synthetic pictures (each one unique, with metadata),
* 15 % deletes of a row the same client uploaded.

Then it scrapes /metrics, stops the server with SIGTERM (graceful: it must exit 0), and reads the
store back: every acknowledged upload must be stored once, every acknowledged delete gone, nothing
else there. It prints requests, answers by status, latency p50 / p95 / p99 (overall and by kind),
the server's RSS at start, after the first minute (or half the run, when shorter than two minutes)
and at the end, and rows expected against rows stored, and writes them to
``benchmarks/results/soak_serve-<date>.json``. Exit status 1 when a target is missed: any 5xx, any
row lost or duplicated or left behind, RSS at the end over 1.1 x RSS after the first minute, or a
server that did not exit 0.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import results

PHOTOS = sorted((ROOT / "sample_images" / "photos").glob("*.jpg"))
KEY = "soak-" + os.urandom(16).hex()
SCRATCH = "vitsearch_soak"
MIX = (("search_upload", 0.35), ("search_id", 0.30), ("upload", 0.20), ("delete", 0.15))
BOUNDARY = "soakboundary"


# -- HTTP -----------------------------------------------------------------------------------------
def multipart(image: bytes, **fields) -> tuple[bytes, str]:
    body = b"".join(f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
                    for k, v in fields.items())
    body += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"i.jpg\"\r\n"
             "Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode()
    return body, f"multipart/form-data; boundary={BOUNDARY}"


class Connection:
    """One keep-alive connection to the server; counts every answer it gets (for the access-log check)."""

    answered = 0
    lock = threading.Lock()

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call(self, method: str, path: str, body: bytes | None = None, kind: str | None = None,
             key: bool = True) -> tuple[int | str, bytes, float]:
        headers = {"Authorization": f"Bearer {KEY}"} if key else {}
        if kind:
            headers["Content-Type"] = kind
        started = time.perf_counter()
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            return f"conn:{type(exc).__name__}", b"", time.perf_counter() - started
        with Connection.lock:
            Connection.answered += 1
        return response.status, payload, time.perf_counter() - started


def synthetic(seed: int) -> bytes:
    """A unique smooth colour picture (its content hash, so its row id, differs for every seed)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((160, 120), Image.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


# -- the load -------------------------------------------------------------------------------------
class Ledger:
    """What the clients were told: rows acknowledged as stored and as deleted, answers, latencies."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stored: dict[str, str] = {}  # id -> path, acknowledged by 201
        self.deleted: dict[str, str] = {}  # id -> path, acknowledged by 200
        self.uncertain: set[str] = set()  # uploads or deletes whose answer never came
        self.statuses: Counter = Counter()
        self.by_kind: dict[str, list[float]] = {}
        self.anomalies: list[str] = []
        self.requests = 0

    def record(self, kind: str, status, seconds: float) -> None:
        with self.lock:
            self.requests += 1
            self.statuses[str(status)] += 1
            self.by_kind.setdefault(kind, []).append(seconds)

    def note(self, text: str) -> None:
        with self.lock:
            if len(self.anomalies) < 50:
                self.anomalies.append(text)


def client(n: int, port: int, seeds: list[str], photos: list[bytes], ledger: Ledger, stop: threading.Event,
           budget: list[int]) -> None:
    rng = random.Random(n)
    conn = Connection(port)
    live: list[str] = []
    made = 0
    kinds, weights = zip(*MIX)
    while not stop.is_set():
        with ledger.lock:
            if budget[0] <= 0:
                break
            budget[0] -= 1
        kind = rng.choices(kinds, weights)[0]
        if kind == "delete" and not live:
            kind = "upload"
        if kind == "search_upload":
            image = photos[rng.randrange(len(photos))] if rng.random() < 0.7 else synthetic(10**9 + rng.randrange(10**6))
            body, ctype = multipart(image, k=10)
            status, payload, seconds = conn.call("POST", "/search", body, ctype)
            if status == 200 and not json.loads(payload)["results"]:
                ledger.note("a search by upload found nothing")
        elif kind == "search_id":
            target = rng.choice(seeds + live[-20:])
            status, payload, seconds = conn.call("POST", "/search", json.dumps({"id": target, "k": 10}).encode(),
                                                 "application/json")
        elif kind == "upload":
            made += 1
            body, ctype = multipart(synthetic(n * 10**7 + made), client=n, serial=made)
            status, payload, seconds = conn.call("POST", "/images", body, ctype)
            if status == 201:
                row = json.loads(payload)
                live.append(row["id"])
                with ledger.lock:
                    ledger.stored[row["id"]] = row["path"]
            elif status == 200:
                ledger.note(f"an upload of new content answered 200 (already there): {payload[:200]!r}")
            elif not isinstance(status, int) or status >= 500:
                ledger.uncertain.add(f"upload:{n}:{made}")
        else:
            target = live.pop(rng.randrange(len(live)))
            status, payload, seconds = conn.call("DELETE", f"/images/{target}")
            with ledger.lock:
                if status == 200:
                    ledger.deleted[target] = ledger.stored.pop(target)
                elif not isinstance(status, int) or status >= 500:
                    ledger.uncertain.add(target)
                else:
                    ledger.note(f"delete of {target} answered {status}: {payload[:200]!r}")
        if status not in (200, 201):
            ledger.note(f"{kind} answered {status}: {payload[:200]!r}")
        ledger.record(kind, status, seconds)


# -- the server -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def start(uri: str, collection: str, tmp: Path, model: str | None) -> tuple[subprocess.Popen, int, Path]:
    port = free_port()
    log = tmp / "serve.log"
    cmd = [sys.executable, "-m", "vitsearch", "serve", "--host", "127.0.0.1", "--port", str(port), "--uri", uri,
           "--collection", collection, "--upload-dir", str(tmp / "uploads"), "--thumbnail-dir", str(tmp / "thumbs"),
           "--log-json", "--log-level", "info", "--shutdown-timeout", "30"]
    if model:
        cmd += ["--model", model]
    env = {**os.environ, "VITSEARCH_API_KEYS": KEY,
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"vitsearch serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port, log
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("vitsearch serve did not start within 300 s")


def stored_rows(uri: str, collection: str) -> list[dict]:
    from vitsearch.store import Store

    store = Store(uri, collection)
    try:
        return list(store.iter_rows(fields=["id", "path"]))
    finally:
        store.close()


def drop(uri: str, collection: str) -> None:
    from vitsearch.store import Store

    store = Store(uri, collection)
    try:
        store.drop()
    finally:
        store.close()


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values) * 1000, q)), 1) if values else None


def metric_total(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def soak(store: str, uri: str, collection: str, args, tmp: Path) -> dict:
    if store == "server":
        drop(uri, collection)
    proc, port, log = start(uri, collection, tmp, args.model)
    try:
        return _soak(proc, port, log, store, uri, collection, args)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if store == "server":
            drop(uri, collection)


def _soak(proc: subprocess.Popen, port: int, log: Path, store: str, uri: str, collection: str, args) -> dict:
    ledger = Ledger()
    conn = Connection(port)
    seeds = []
    for photo in PHOTOS:
        body, ctype = multipart(photo.read_bytes(), kind="seed")
        status, payload, _ = conn.call("POST", "/images", body, ctype)
        if status not in (200, 201):
            raise SystemExit(f"seeding failed: {status} {payload[:300]!r}")
        seeds.append(json.loads(payload)["id"])
    photos = [p.read_bytes() for p in PHOTOS]
    for i in range(4):  # warm: both kinds of search
        conn.call("POST", "/search", *multipart(photos[i % len(photos)], k=10))
    rss = {"start": rss_mb(proc.pid)}
    timeline: list[tuple[float, float | None]] = []
    settle = min(60.0, args.seconds / 2)
    stop = threading.Event()
    budget = [args.max_requests]
    threads = [threading.Thread(target=client, args=(n, port, seeds, photos, ledger, stop, budget), daemon=True)
               for n in range(args.clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    next_sample, last_report = 0.0, 0.0
    while time.monotonic() - started < args.seconds and any(t.is_alive() for t in threads):
        elapsed = time.monotonic() - started
        if elapsed >= next_sample:
            timeline.append((round(elapsed, 1), rss_mb(proc.pid)))
            next_sample += 5.0
        if "settled" not in rss and elapsed >= settle:
            rss["settled"] = rss_mb(proc.pid)
        if elapsed - last_report >= 60:
            last_report = elapsed
            print(f"  {elapsed:5.0f} s: {ledger.requests} requests, {dict(ledger.statuses)}, "
                  f"RSS {rss_mb(proc.pid)} MB", file=sys.stderr, flush=True)
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=180)
    seconds = time.monotonic() - started
    rss.setdefault("settled", rss_mb(proc.pid))
    rss["end"] = rss_mb(proc.pid)
    conn = Connection(port)  # the first one idled past the server's keep-alive
    stats = json.loads(conn.call("GET", "/stats")[1])
    metrics = conn.call("GET", "/metrics")[1].decode()
    conn.conn.close()
    stopping = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = "killed after 90 s"
    shutdown_s = round(time.monotonic() - stopping, 2)

    rows = stored_rows(uri, collection)
    ids = [str(r["id"]) for r in rows]
    expected = set(seeds) | set(ledger.stored)
    missing = sorted(expected - set(ids))
    unexpected = sorted(set(ids) - expected - ledger.uncertain)
    files_missing = [i for i, p in ledger.stored.items() if not os.path.isfile(p)]
    files_left = [i for i, p in ledger.deleted.items() if os.path.isfile(p)]
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    access = sum(1 for line in lines if line.get("logger") == "vitsearch.access")
    all_latencies = [s for values in ledger.by_kind.values() for s in values]
    server_5xx = sum(n for s, n in ledger.statuses.items() if s.startswith("5"))
    figures = {
        "store": store, "uri": uri if store == "server" else "lite", "seconds": round(seconds, 1),
        "clients": args.clients, "requests": ledger.requests,
        "requests_per_s": round(ledger.requests / seconds, 2) if seconds else None,
        "statuses": dict(sorted(ledger.statuses.items())), "errors_5xx": server_5xx,
        "latency_ms": {"p50": pct(all_latencies, 50), "p95": pct(all_latencies, 95), "p99": pct(all_latencies, 99)},
        "latency_ms_by_kind": {k: {"n": len(v), "p50": pct(v, 50), "p95": pct(v, 95), "p99": pct(v, 99)}
                               for k, v in sorted(ledger.by_kind.items())},
        "rss_mb": {**rss, "settled_after_s": settle}, "rss_timeline": timeline,
        "rows": {"expected": len(expected), "stored": len(ids), "duplicated": len(ids) - len(set(ids)),
                 "missing": len(missing), "unexpected": len(unexpected), "uncertain": len(ledger.uncertain),
                 "uploads_acknowledged": len(ledger.stored) + len(ledger.deleted),
                 "deletes_acknowledged": len(ledger.deleted), "stats_count_before_stop": stats.get("count")},
        "files": {"missing": len(files_missing), "left_after_delete": len(files_left)},
        "server": {"exit": rc, "shutdown_s": shutdown_s,
                   "requests_counted_by_metrics": metric_total(metrics, "vitsearch_http_requests_total"),
                   "mean_batch": stats.get("mean_batch"),
                   "store_errors": metric_total(metrics, "vitsearch_store_errors_total"),
                   "access_log_lines": access, "answers_received": Connection.answered,
                   "key_in_log": KEY in text},
        "anomalies": ledger.anomalies[:20],
    }
    figures["targets"] = {
        "no_5xx": server_5xx == 0,
        "rows_exact": not (missing or unexpected or figures["rows"]["duplicated"] or files_missing or files_left),
        "rss_end_within_1.1x_settled": bool(rss["end"] and rss["settled"] and rss["end"] <= 1.1 * rss["settled"]),
        "exit_0": rc == 0,
        "one_access_line_per_answer": access == Connection.answered,
        "no_key_in_log": KEY not in text,
    }
    Connection.answered = 0
    return figures


# -- the report -----------------------------------------------------------------------------------
def summary(f: dict) -> str:
    r, lat, rss = f["rows"], f["latency_ms"], f["rss_mb"]
    failed = [k for k, ok in f["targets"].items() if not ok]
    return "\n".join([
        (f"{f['store']}: {f['requests']} requests in {f['seconds']} s ({f['requests_per_s']} req/s, "
         f"{f['clients']} clients); answers {f['statuses']}; 5xx: {f['errors_5xx']}"),
        f"  latency p50 / p95 / p99: {lat['p50']} / {lat['p95']} / {lat['p99']} ms; "
        + "; ".join(f"{k} {v['p50']}/{v['p95']}/{v['p99']}" for k, v in f["latency_ms_by_kind"].items()),
        f"  RSS: start {rss['start']} MB, after {rss['settled_after_s']:g} s {rss['settled']} MB, end {rss['end']} MB",
        (f"  rows: expected {r['expected']}, stored {r['stored']} (missing {r['missing']}, unexpected "
         f"{r['unexpected']}, duplicated {r['duplicated']}, uncertain {r['uncertain']}); "
         f"{r['uploads_acknowledged']} uploads and {r['deletes_acknowledged']} deletes acknowledged"),
        (f"  server: exit {f['server']['exit']} after SIGTERM in {f['server']['shutdown_s']} s, mean batch "
         f"{f['server']['mean_batch']}, store errors {f['server']['store_errors']}, access-log lines "
         f"{f['server']['access_log_lines']} for {f['server']['answers_received']} answers"),
        "  targets: " + ("all met" if not failed else "MISSED " + ", ".join(failed)),
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the load (default: 600)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-requests", type=int, default=200_000, help="stop earlier after this many requests")
    parser.add_argument("--stores", nargs="+", choices=("lite", "server"),
                        help="default: lite, and server when --uri or MILVUS_URI is given")
    parser.add_argument("--uri", default=os.environ.get("MILVUS_URI"), help="a Milvus server (default: MILVUS_URI)")
    parser.add_argument("--model", help="default: the bundled model")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="where the JSON goes")
    args = parser.parse_args()
    if args.seconds <= 0 or args.clients < 1 or args.max_requests < 1:
        parser.error("--seconds, --clients and --max-requests must be positive")
    stores = args.stores or (["lite", "server"] if args.uri else ["lite"])
    if "server" in stores and not args.uri:
        parser.error("--stores server needs --uri or MILVUS_URI")
    runs = []
    for store in stores:
        with tempfile.TemporaryDirectory() as tmp:
            uri, collection = (args.uri, SCRATCH) if store == "server" else (os.path.join(tmp, "soak.db"), "images")
            print(f"soak on {store}: {args.seconds:g} s, {args.clients} clients", file=sys.stderr, flush=True)
            figures = soak(store, uri, collection, args, Path(tmp))
        print(summary(figures), flush=True)
        runs.append(figures)
    figures = {"runs": runs, "all_targets_met": all(all(r["targets"].values()) for r in runs)}
    path = results.write("soak_serve", figures, settings=vars(args), folder=args.out)
    print(f"wrote {path}", file=sys.stderr)
    return 0 if figures["all_targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
