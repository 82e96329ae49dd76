"""Write the HTTP API's OpenAPI schema to docs/openapi.json (what `vitsearch serve` shows at /docs).

    python scripts/export_openapi.py            # rewrite docs/openapi.json
    python scripts/export_openapi.py --check    # exit 1 when docs/openapi.json is stale

The schema comes from the real FastAPI app of :mod:`vitsearch.server`, built around a service with
`vitsearch serve`'s defaults whose store is never opened and whose model is never loaded, so the
export takes a second and needs no Milvus and no weights. tests/test_docs.py fails when the
committed file differs from what this writes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SCHEMA_FILE = ROOT / "docs" / "openapi.json"


def schema() -> dict:
    """The OpenAPI schema of the app `vitsearch serve` runs, with its default options."""
    from vitsearch.api import VisualSearch
    from vitsearch.server import Service, create_app

    class _Unopened(Service):
        def _open(self) -> None:  # the schema needs neither the store nor the model
            pass

    with tempfile.TemporaryDirectory() as tmp:
        vs = VisualSearch(os.path.join(tmp, "schema.db"))  # nothing is opened until a call needs it
        service = _Unopened(vs, upload_dir=os.path.join(tmp, "up"), thumbnail_dir=os.path.join(tmp, "th"))
        try:
            return create_app(service).openapi()
        finally:
            service.batcher.close()


def render(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the file is up to date")
    parser.add_argument("--out", default=str(SCHEMA_FILE))
    args = parser.parse_args(argv)
    text = render(schema())
    out = Path(args.out)
    if args.check:
        if not out.exists() or out.read_text(encoding="utf-8") != text:
            print(f"{out} is stale: run python scripts/export_openapi.py", file=sys.stderr)
            return 1
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
