"""`vitsearch dups` at scale: time and peak memory over N synthetic rows with planted near-duplicates.

    python benchmarks/bench_dups.py [--rows 100000] [--dim 384] [--uri /tmp/bench-dups.db]

Rows are random unit vectors (cosine between two of them ≈ 0); 1 % of them get a planted near copy
(the same vector plus a little noise, cosine ≈ 0.98) and 0.5 % an exact copy (same sha256). The
script checks that exactly the planted groups are found and prints seconds and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time

import numpy as np
import results

from vitsearch.dups import find_duplicates
from vitsearch.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--uri", default="/tmp/bench-dups.db")
    results.add_argument(parser)
    args = parser.parse_args()
    if os.path.exists(args.uri):
        shutil.rmtree(args.uri) if os.path.isdir(args.uri) else os.remove(args.uri)
    rng = np.random.default_rng(0)
    store = Store(args.uri, "bench")
    store.create({"model": "synthetic", "fingerprint": "synthetic", "dim": args.dim})
    near, exact = args.rows // 100, args.rows // 200
    originals = args.rows - near - exact
    started = time.perf_counter()
    planted = 0
    for start in range(0, originals, 5000):
        count = min(5000, originals - start)
        vecs = rng.standard_normal((count, args.dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        rows = []
        for i, v in enumerate(vecs):
            n = start + i
            rows.append({"id": n, "path": f"/img/{n}.jpg", "size": 1000 + n, "mtime": 0.0, "sha256": f"h{n}",
                         "width": 100, "height": 100, "vector": v.tolist()})
            if planted < near + exact and n % 100 < 2:
                copy = v + (0.0 if planted >= near else 0.01) * rng.standard_normal(args.dim).astype(np.float32)
                copy /= np.linalg.norm(copy)
                sha = f"h{n}" if planted >= near else f"c{n}"
                rows.append({"id": 10_000_000 + n, "path": f"/img/{n}_copy.jpg", "size": 500, "mtime": 0.0,
                             "sha256": sha, "width": 50, "height": 50, "vector": copy.tolist()})
                planted += 1
        store.upsert(rows)
    inserted = time.perf_counter() - started
    total = store.count()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    groups = find_duplicates(store, 0.95)
    seconds = time.perf_counter() - started
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    found_ok = len(groups) == planted and all(len(g.paths) == 2 for g in groups)
    figures = {
        "rows": total, "planted_groups": planted, "groups_found": len(groups), "exactly_the_planted": found_ok,
        "insert_seconds": round(inserted, 1), "dups_seconds": round(seconds, 1),
        "peak_rss_mb_before": round(rss_before), "peak_rss_mb_after": round(rss_after),
    }
    print(json.dumps(figures))
    store.close()
    results.write("bench_dups", figures, variant="Milvus server" if "://" in args.uri else "Milvus Lite",
                  settings={"rows": args.rows, "dim": args.dim}, folder=results.folder_arg(args.results_dir))


if __name__ == "__main__":
    main()
