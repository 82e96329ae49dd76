"""Milvus store benchmark: insert rate, search latency and recall@10 per index type and size.

    python benchmarks/bench_store.py [--sizes 10000,100000] [--uri http://127.0.0.1:19530]
                                     [--index-types FLAT,HNSW,IVF_FLAT,IVF_SQ8] [--json out.json]

Synthetic rows with vitsearch's schema: 384-d unit vectors around 2,000 cluster centres, at a
cosine of 0.6-0.9 to their centre (groups of similar images, like embeddings of a photo
collection), with path, size, mtime, sha256, width and height. Per size: the upsert rate in batches
of 1,000 rows (what the indexer sends) and the flush that ends an index run; then for each index
type and search parameter: build + load time, single-query latency p50/p95 (one vector per call,
as `vitsearch query` and a server request send), batched latency per query (100 vectors per call,
as `dups`, `tag --missing` and serve's micro-batches send), and recall@10 against exact search in
numpy. Queries are held-out points of the same distribution. Default URI: a fresh Milvus Lite file
in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import results

DIM = 384
GRID = {  # index type -> (build params, [search params]); HNSW's build params are vitsearch's default
    "FLAT": ({}, [{}]),
    "HNSW": ({"M": 16, "efConstruction": 200}, [{"ef": 16}, {"ef": 64}, {"ef": 256}]),
    "IVF_FLAT": (None, [{"nprobe": 8}, {"nprobe": 32}, {"nprobe": 128}]),
    "IVF_SQ8": (None, [{"nprobe": 8}, {"nprobe": 32}, {"nprobe": 128}]),
    "HNSW_SQ": ({"M": 16, "efConstruction": 200, "sq_type": "SQ8"}, [{"ef": 64}]),
}


def synthetic(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    which = rng.integers(0, len(centres), n)
    spread = rng.uniform(0.015, 0.035, (n, 1)).astype(np.float32)  # cosine to its centre 0.6-0.9
    x = centres[which] + rng.standard_normal((n, DIM)).astype(np.float32) * spread
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def run_size(client, name: str, n: int, index_types: list[str], queries: int, seed: int, server: bool) -> list[dict]:
    from vitsearch.store import collection_schema

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    if client.has_collection(name):
        client.drop_collection(name)
    schema = collection_schema(DIM)  # vitsearch's own, without its index: each index type is built below
    client.create_collection(name, schema=schema, consistency_level="Strong")

    data = np.empty((n, DIM), np.float32)
    started = time.perf_counter()
    for start in range(0, n, 1000):
        block = synthetic(min(1000, n - start), rng, centres)
        data[start : start + len(block)] = block
        client.upsert(name, [{"id": start + i, "path": f"/photos/{start + i:08d}.jpg", "size": 100_000 + i,
                              "mtime": 1.7e9 + i, "sha256": f"{start + i:064x}", "width": 640, "height": 480,
                              "vector": v.tolist()} for i, v in enumerate(block)])
    insert_s = time.perf_counter() - started
    started = time.perf_counter()
    client.flush(name)  # as `vitsearch index` does at the end of a run
    flush_s = time.perf_counter() - started
    print(f"{n:>9,} rows inserted in {insert_s:.1f} s ({n / insert_s:,.0f} rows/s), flushed in {flush_s:.1f} s",
          file=sys.stderr, flush=True)

    # Reads as vitsearch makes them after its first: Session on a server, where Strong waits for the
    # server's next time tick (~300 ms a call on 2.3.5); Milvus Lite has no such wait.
    level = {"consistency_level": "Session"} if server else {}
    q = synthetic(queries, rng, centres)
    exact = np.argsort(-(q @ data.T), axis=1)[:, :10]
    rows = []
    for index_type in index_types:
        build, searches = GRID[index_type]
        if build is None:  # IVF: about 4·sqrt(n) lists
            build = {"nlist": int(min(65536, max(16, 4 * np.sqrt(n))))}
        client.release_collection(name)
        for existing in client.list_indexes(name):
            client.drop_index(name, existing)
        params = client.prepare_index_params()
        params.add_index("vector", index_type=index_type, metric_type="COSINE", params=dict(build))
        started = time.perf_counter()
        try:
            client.create_index(name, params)
            client.load_collection(name)
        except Exception as exc:  # noqa: BLE001 - a type this Milvus lacks
            print(f"  {index_type}: not available here ({' '.join(str(exc).split())[:120]})", file=sys.stderr)
            continue
        build_s = time.perf_counter() - started
        for search in searches:
            sp = {"metric_type": "COSINE", "params": search}
            client.search(name, data=[q[0].tolist()], limit=10, search_params=sp, **level)  # warm
            single, found = [], []
            for v in q:
                t = time.perf_counter()
                res = client.search(name, data=[v.tolist()], limit=10, search_params=sp, **level)
                single.append(time.perf_counter() - t)
                found.append([hit["id"] for hit in res[0]])
            t = time.perf_counter()
            for start in range(0, len(q), 100):
                client.search(name, data=q[start : start + 100].tolist(), limit=10, search_params=sp, **level)
            batched = (time.perf_counter() - t) / len(q)
            recall = float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact.tolist())]))
            row = {"rows": n, "index": index_type, "build": build, "search": search,
                   "insert_rows_per_s": round(n / insert_s), "flush_s": round(flush_s, 2), "build_load_s": round(build_s, 2),
                   "single_p50_ms": round(percentile(single, 50), 2), "single_p95_ms": round(percentile(single, 95), 2),
                   "batched_ms_per_query": round(batched * 1000, 3), "recall_at_10": round(recall, 4)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    client.drop_collection(name)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated row counts")
    parser.add_argument("--uri", help="a Milvus server URI, or a Milvus Lite .db path (default: a temporary one)")
    parser.add_argument("--index-types", default="FLAT,HNSW,IVF_FLAT,IVF_SQ8,HNSW_SQ")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows here")
    results.add_argument(parser)
    args = parser.parse_args()
    from pymilvus import MilvusClient

    tmp = tempfile.TemporaryDirectory()
    uri = args.uri or os.path.join(tmp.name, "bench.db")
    client = MilvusClient(uri=uri, timeout=600)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        rows += run_size(client, f"bench_store_{n}", n, args.index_types.split(","), args.queries, args.seed,
                         "://" in uri)
    client.close()
    kind = "Milvus server " + uri if "://" in uri else "Milvus Lite"
    print(f"\n{kind}; {args.queries} queries, k = 10\n")
    print("| rows | index (build) | search | insert rows/s | build+load s | 1 query p50 / p95 ms "
          "| batched ms/query | recall@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        build = ", ".join(f"{k}={v}" for k, v in r["build"].items()) or "—"
        search = ", ".join(f"{k}={v}" for k, v in r["search"].items()) or "exact"
        print(f"| {r['rows']:,} | {r['index']} ({build}) | {search} | {r['insert_rows_per_s']:,} | {r['build_load_s']} "
              f"| {r['single_p50_ms']} / {r['single_p95_ms']} | {r['batched_ms_per_query']} | {r['recall_at_10']:.3f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)
    results.write("bench_store", {"rows": rows}, variant="Milvus server" if "://" in uri else "Milvus Lite",
                  settings={"sizes": args.sizes, "index_types": args.index_types, "queries": args.queries,
                            "seed": args.seed}, folder=results.folder_arg(args.results_dir))
    tmp.cleanup()


if __name__ == "__main__":
    main()
