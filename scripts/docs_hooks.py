"""MkDocs hooks (mkdocs.yml `hooks:`): pages whose figures and tables come from files, never by hand.

* ``<!-- results: NAME -->`` (on a line of its own) becomes the results of benchmark NAME, from ``benchmarks/results/*.json``
  (the latest run per machine, earlier ones folded; see ``benchmarks/results.py``). A page with such
  markers must name every benchmark that has results, so that no run is silently left out.
* ``<!-- openapi: endpoints -->`` becomes the table of endpoints of ``docs/openapi.json``, which
  ``scripts/export_openapi.py`` writes from the FastAPI app (a test fails when it is stale).
* The docstrings' Sphinx roles (``:class:`Indexer```) are shown as plain code on the API pages.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parent.parent
# markers stand on a line of their own (a marker quoted in a sentence or a code span is left alone)
RESULTS_MARKER = re.compile(r"^<!--\s*results:\s*([a-z0-9_]+)\s*-->[ \t]*$", re.MULTILINE)
OPENAPI_MARKER = re.compile(r"^<!--\s*openapi:\s*endpoints\s*-->[ \t]*$", re.MULTILINE)
_METHODS = ("get", "post", "put", "patch", "delete")
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):(?=<code>)")


def _results_module():
    spec = importlib.util.spec_from_file_location("vitsearch_bench_results", ROOT / "benchmarks" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def results_markdown(markdown: str, folder: Path = ROOT / "benchmarks" / "results") -> str:
    """Replace every results marker; PluginError when a benchmark with results has no marker, or a file is bad."""
    names = RESULTS_MARKER.findall(markdown)
    if not names:
        return markdown
    results = _results_module()
    try:
        records = results.load(folder)
    except ValueError as exc:
        raise PluginError(f"benchmarks/results: {exc}") from None
    left_out = sorted({r["benchmark"] for r in records} - set(names))
    if left_out:
        raise PluginError(f"benchmark results not shown on the page (add <!-- results: NAME -->): {', '.join(left_out)}")
    return RESULTS_MARKER.sub(lambda m: results.markdown(m.group(1), records), markdown)


def _body_types(operation: dict) -> str:
    content = operation.get("requestBody", {}).get("content", {})
    return ", ".join(f"`{kind}`" for kind in content) or "—"


def _parameters(operation: dict) -> str:
    params = [f"`{p['name']}` ({p.get('in', '?')})" for p in operation.get("parameters", [])]
    return ", ".join(params) or "—"


def _responses(operation: dict) -> str:
    return ", ".join(sorted(operation.get("responses", {}))) or "—"


def endpoints_table(schema: dict) -> str:
    """One row per operation of an OpenAPI schema: method, path, summary, parameters, body, responses."""
    lines = ["| method | path | what it does | parameters | body | responses |", "|---|---|---|---|---|---|"]
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                op = item[method]
                lines.append(f"| `{method.upper()}` | `{path}` | {op.get('summary', '')} | {_parameters(op)} "
                             f"| {_body_types(op)} | {_responses(op)} |")
    return "\n".join(lines) + "\n"


def openapi_markdown(markdown: str, schema_file: Path = ROOT / "docs" / "openapi.json") -> str:
    if not OPENAPI_MARKER.search(markdown):
        return markdown
    try:
        schema = json.loads(schema_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PluginError(f"{schema_file}: {exc} (run python scripts/export_openapi.py)") from None
    return OPENAPI_MARKER.sub(lambda m: endpoints_table(schema), markdown)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return openapi_markdown(results_markdown(markdown))


def drop_roles(html: str) -> str:
    """``:class:<code>X</code>`` (a Sphinx role in a docstring, rendered as Markdown) → ``<code>X</code>``."""
    return _ROLE.sub("", html)


def on_page_content(html: str, page, config, files) -> str:
    return drop_roles(html)
