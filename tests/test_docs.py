"""The documentation's generated parts and the README: the OpenAPI export, the MkDocs hooks, the front door."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from helpers import ROOT, load_module

README = (ROOT / "README.md").read_text(encoding="utf-8")


export_openapi = load_module("export_openapi", ROOT / "scripts" / "export_openapi.py")


# -- the HTTP API's schema ------------------------------------------------------------------------
def test_docs_openapi_json_is_what_the_server_publishes():
    committed = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert committed == export_openapi.render(export_openapi.schema()), (
        "docs/openapi.json is stale: run python scripts/export_openapi.py"
    )


def test_the_schema_has_every_endpoint_of_the_service():
    paths = export_openapi.schema()["paths"]
    assert {"/search", "/images", "/images/{image_id}", "/thumbnails/{image_id}", "/rows/{image_id}", "/healthz",
            "/stats"} <= set(paths)
    assert set(paths["/search"]["post"]["requestBody"]["content"]) == {"multipart/form-data", "application/json"}


def test_export_check_fails_on_a_stale_file(tmp_path):
    stale = tmp_path / "openapi.json"
    stale.write_text(json.dumps({"openapi": "3.1.0", "paths": {}}))
    script = str(ROOT / "scripts" / "export_openapi.py")
    def run(*args):
        return subprocess.run([sys.executable, script, *args, "--out", str(stale)], capture_output=True, text=True,
                              check=False)

    done = run("--check")
    assert done.returncode == 1 and "stale" in done.stderr
    assert run().returncode == 0 and run("--check").returncode == 0


# -- the MkDocs hooks (need the docs extra) -------------------------------------------------------
@pytest.fixture(scope="module")
def hooks():
    pytest.importorskip("mkdocs", reason="the docs extra is not installed")
    return load_module("docs_hooks", ROOT / "scripts" / "docs_hooks.py")


def _results_folder(tmp_path, *benchmarks):
    bench_results = load_module("bench_results_for_hooks", ROOT / "benchmarks" / "results.py")
    machine = {"cpu": "AMD EPYC", "cores": 2, "bf16": False, "gpu": None, "python": None, "torch": None,
               "vitsearch": "0.1.0"}
    for name in benchmarks:
        bench_results.write(name, {"speedup": 2.5}, machine_info=machine, folder=tmp_path)
    return tmp_path


def test_results_markers_become_the_tables_of_their_benchmark(hooks, tmp_path):
    folder = _results_folder(tmp_path, "bench_a", "bench_b")
    page = "# Performance\n\n<!-- results: bench_a -->\n\ntext `<!-- results: bench_c -->`\n<!-- results: bench_b -->\n"
    out = hooks.results_markdown(page, folder)
    assert out.count("### AMD EPYC, 2 cores, no bf16 (fp32)") == 2 and out.count("| speedup | 2.5 |") == 2
    assert "`<!-- results: bench_c -->`" in out  # a marker quoted in a sentence is left alone


def test_a_benchmark_whose_results_the_page_does_not_show_fails_the_build(hooks, tmp_path):
    from mkdocs.exceptions import PluginError

    folder = _results_folder(tmp_path, "bench_a", "bench_forgotten")
    with pytest.raises(PluginError, match="bench_forgotten"):
        hooks.results_markdown("<!-- results: bench_a -->\n", folder)


def test_a_page_without_markers_is_left_as_it_is(hooks, tmp_path):
    assert hooks.results_markdown("# Hello\n", tmp_path / "nothing") == "# Hello\n"
    assert hooks.openapi_markdown("# Hello\n", tmp_path / "none.json") == "# Hello\n"


def test_the_endpoint_table_comes_from_the_schema(hooks):
    table = hooks.openapi_markdown("<!-- openapi: endpoints -->\n", ROOT / "docs" / "openapi.json")
    assert "| `POST` | `/search` |" in table
    assert "| `DELETE` | `/images/{image_id}` | Remove an image from the collection | `image_id` (path) |" in table


def test_the_performance_page_shows_every_benchmark(hooks):
    page = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    out = hooks.results_markdown(page)  # raises if a benchmark with results has no marker
    assert "No results yet" not in out
    assert not re.search(r"^<!-- results:", out, re.MULTILINE)


# -- the README -----------------------------------------------------------------------------------
def test_the_readme_is_a_front_door():
    assert len(README.splitlines()) <= 200


def test_the_readme_set_up_commands_are_the_documented_ones_and_ci_runs_the_test_command():
    main_job = ("pip install torch==2.13.0 -e . && vitsearch index sample_images && "
                "vitsearch query sample_images/photos/chelsea.jpg -k 5")
    tests = "pip install -e '.[test]' && python -m pytest"
    getting_started = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    for command in (main_job, tests):
        assert f"\n{command}\n" in README and f"\n{command}\n" in getting_started
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^python -m pip install -q torch==2\.13\.0 ", ci, re.MULTILINE)
    assert re.search(r"^python -m pytest$", ci, re.MULTILINE)


def test_the_readme_links_to_files_that_exist():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    assert links
    missing = [link for link in links if "://" not in link and not (ROOT / link).exists()]
    assert not missing


def test_sphinx_roles_of_docstrings_are_shown_as_plain_code(hooks):
    html = "see :class:<code>Indexer</code> and :func:<code>vitsearch.search.stored_vectors</code>; 12:30"
    assert hooks.drop_roles(html) == "see <code>Indexer</code> and <code>vitsearch.search.stored_vectors</code>; 12:30"


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    block = re.search(r"```python\n(from vitsearch import VisualSearch\n.*?)```", README, re.DOTALL).group(1)
    (tmp_path / "sample_images").symlink_to(ROOT / "sample_images")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})  # noqa: S102 - the README's own code, as a user runs it
    lines = capsys.readouterr().out.splitlines()
    summary = eval(lines[0])  # the dict that index(...).as_dict() printed
    assert summary["added"] == summary["scanned"] == 93 and summary["failed"] == []
    assert lines[1].startswith("1 1.0 ") and lines[1].endswith("sample_images/photos/chelsea.jpg 451")
    assert "chelsea_small_bright.png" in lines[2]
    assert any(line.endswith("copies") for line in lines[6:])
