"""benchmarks/results.py: one results file per benchmark run, and the Performance page made from them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from helpers import ROOT, load_module, tiny_model

results = load_module("bench_results", ROOT / "benchmarks" / "results.py")

AMD = {"cpu": "AMD EPYC", "cores": 2, "bf16": False, "gpu": None, "python": "3.11.7", "torch": "2.13.0",
       "vitsearch": "0.1.0"}
AMX = {**AMD, "cpu": "Intel Xeon (AMX)", "bf16": True}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


# -- the machine ----------------------------------------------------------------------------------
def test_machine_names_this_machine():
    m = results.machine()
    assert set(results.MACHINE_KEYS) <= set(m)
    assert isinstance(m["cpu"], str) and m["cpu"]
    assert isinstance(m["cores"], int) and m["cores"] >= 1
    assert isinstance(m["bf16"], bool)
    from vitsearch import __version__

    assert m["vitsearch"] == __version__ and m["python"].count(".") == 2


@pytest.mark.parametrize("lscpu, cpuinfo, expected", [
    ({"Model name": "AMD EPYC"}, {"model name": "something else"}, "AMD EPYC"),
    ({}, {"model name": "Intel(R) Xeon(R) Platinum 8480+"}, "Intel(R) Xeon(R) Platinum 8480+"),
])
def test_cpu_model_prefers_lscpu_then_proc_cpuinfo(lscpu, cpuinfo, expected):
    assert results.cpu_model(lscpu, cpuinfo) == expected


@pytest.mark.parametrize("flags, expected", [
    ("fpu avx2 fma", False),
    ("avx512f avx512_bf16", True),
    ("amx_bf16 amx_tile amx_int8", True),
    ("", False),
])
def test_bf16_means_native_bf16_instructions(flags, expected):
    assert results.cpu_has_bf16(flags.split()) is expected


@pytest.mark.parametrize("lscpu, cpuinfo, flags, expected", [
    ({"CPU family": "23", "Model": "1"}, {}, "fpu avx avx2 fma", "family 23 model 1, AVX2"),
    ({}, {"cpu family": "25", "model": "17"}, "avx2 avx512f avx512bw", "family 25 model 17, AVX-512"),
    ({}, {"cpu family": "25", "model": "17"}, "avx2 avx512f avx512_bf16", "family 25 model 17, AVX-512, AVX512-BF16"),
    ({"CPU family": "6", "Model": "143"}, {}, "avx512f avx512_bf16 amx_bf16 amx_tile", "family 6 model 143, AVX-512, AMX"),
    ({}, {}, "fp asimd", "NEON"),
    ({}, {}, "", None),
])
def test_cpu_id_tells_apart_machines_of_one_model_name(lscpu, cpuinfo, flags, expected):
    assert results.cpu_id(lscpu, cpuinfo, flags.split()) == expected


def test_the_cpu_id_is_part_of_the_machine_label_and_of_its_grouping():
    zen2 = {**AMD, "cpu_id": "family 23 model 1, AVX2"}
    zen4 = {**AMD, "cpu_id": "family 25 model 17, AVX-512"}
    assert "family 23 model 1, AVX2" in results.machine_label(zen2)
    assert results.machine_label(AMD) == results.machine_label({**AMD, "cpu_id": None})
    runs = [{"benchmark": "bench_x", "date": f"2026-11-2{i}T00:00:00Z", "machine": m, "figures": {}}
            for i, m in enumerate((zen2, zen4, zen2))]
    assert [len(earlier) for _, earlier in results.latest_per_machine(runs)] == [1, 0]


# -- writing and reading --------------------------------------------------------------------------
def test_write_names_the_file_by_benchmark_and_time_and_records_the_run(tmp_path):
    path = results.write("bench_x", {"speedup": 3.5, "runs": [{"images": 80, "seconds": 12.5}]},
                         settings={"small": 40}, variant="Milvus Lite", notes="one run", machine_info=AMD,
                         date=at("2026-11-23T01:33:27"), folder=tmp_path)
    assert path.name == "bench_x-20261123-013327.json"
    record = json.loads(path.read_text())
    assert record == {"benchmark": "bench_x", "date": "2026-11-23T01:33:27Z", "machine": AMD,
                      "figures": {"speedup": 3.5, "runs": [{"images": 80, "seconds": 12.5}]},
                      "variant": "Milvus Lite", "settings": {"small": 40}, "notes": "one run"}


def test_write_describes_this_machine_and_now_by_default(tmp_path):
    path = results.write("bench_x", {"a": 1}, folder=tmp_path)
    record = json.loads(path.read_text())
    assert record["machine"] == results.machine()
    assert re.fullmatch(r"bench_x-\d{8}-\d{6}\.json", path.name)
    assert abs((datetime.now(timezone.utc) - results.parse_date(record["date"])).total_seconds()) < 60


def test_two_runs_in_the_same_second_keep_both_files(tmp_path):
    first = results.write("bench_x", {"a": 1}, machine_info=AMD, date=at("2026-11-23T01:00:00"), folder=tmp_path)
    second = results.write("bench_x", {"a": 2}, machine_info=AMD, date=at("2026-11-23T01:00:00"), folder=tmp_path)
    assert first != second and len(results.load(tmp_path)) == 2


def test_a_trial_run_writes_nothing(tmp_path):
    assert results.write("bench_x", {"a": 1}, folder=results.folder_arg("")) is None
    assert results.folder_arg(str(tmp_path)) == tmp_path


GOOD = {"benchmark": "bench_x", "date": "2026-11-22T08:26:25Z", "machine": AMD, "figures": {}}


@pytest.mark.parametrize("change, words", [
    ({"benchmark": None}, "'benchmark' must be a string"),
    ({"benchmark": "Bench X"}, "lower-case"),
    ({"date": "yesterday"}, "not ISO-8601"),
    ({"machine": "a laptop"}, "'machine' must be a JSON object"),
    ({"machine": {"cpu": "AMD EPYC"}}, "machine lacks cores"),
    ({"figures": [1, 2]}, "'figures' must be a JSON object"),
    ({"notes": ["a"]}, "'notes' must be a string"),
])
def test_check_names_what_is_wrong_with_a_record(change, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        results.check({**GOOD, **change}, "f.json")


def test_load_sorts_by_date_and_names_a_broken_file(tmp_path):
    results.write("bench_x", {"a": 2}, machine_info=AMD, date=at("2026-11-23T00:00:00"), folder=tmp_path)
    results.write("bench_x", {"a": 1}, machine_info=AMD, date=at("2026-11-22T00:00:00"), folder=tmp_path)
    assert [r["figures"]["a"] for r in results.load(tmp_path)] == [1, 2]
    (tmp_path / "bench_y-1.json").write_text("{not json")
    with pytest.raises(ValueError, match="bench_y-1.json"):
        results.load(tmp_path)


def test_latest_per_machine_keeps_machines_and_variants_apart():
    def rec(date, machine, variant=None):
        return {**GOOD, "date": date, "machine": machine, "variant": variant}

    old, new = rec("2026-11-22T10:00:00Z", AMD), rec("2026-11-23T10:00:00Z", AMD)
    other = rec("2026-11-22T12:00:00Z", AMX)
    server = rec("2026-11-21T12:00:00Z", AMD, "Milvus server")
    assert results.latest_per_machine([old, other, new, server]) == [(new, [old]), (other, []), (server, [])]


# -- Markdown -------------------------------------------------------------------------------------
def test_markdown_shows_the_latest_run_per_machine_and_folds_the_earlier_ones(tmp_path):
    results.write("bench_x", {"speedup": 1.9}, machine_info=AMD, date=at("2026-11-22T10:00:00"), folder=tmp_path)
    results.write("bench_x", {"speedup": 3.78, "runs": [{"images": 1000, "naive_seconds": 189.6}]},
                  notes="compare ratios within a run", source="imported from the README (commit 51e2e03)",
                  settings={"model": "bundled"}, machine_info=AMD, date=at("2026-11-23T01:33:27"), folder=tmp_path)
    results.write("bench_y", {"other": 1}, machine_info=AMD, date=at("2026-11-23T00:00:00"), folder=tmp_path)
    text = results.markdown("bench_x", results.load(tmp_path))
    latest, _, history = text.partition('??? note "Earlier runs on this machine (1)"')
    assert latest.startswith("### AMD EPYC, 2 cores, no bf16 (fp32)\n")
    assert "**2026-11-23 01:33 UTC** · python 3.11.7 · torch 2.13.0 · vitsearch 0.1.0" in latest
    assert "*imported from the README (commit 51e2e03)*" in latest
    assert "| speedup | 3.78 |" in latest and "Settings: `model` bundled" in latest
    assert "| images | naive seconds |\n|---|---|\n| 1,000 | 189.6 |" in latest
    assert "compare ratios within a run" in latest and "bench_x-20261123-013327.json" in latest
    assert "    | speedup | 1.9 |" in history and "2026-11-22 10:00 UTC" in history  # indented: inside the fold
    assert "other" not in text


def test_markdown_of_a_benchmark_without_results_says_how_to_get_them():
    assert "python benchmarks/bench_new.py" in results.markdown("bench_new", [])


@pytest.mark.parametrize("value, shown", [
    (None, "—"), (True, "yes"), (100000, "100,000"), (4.0, "4.0"), (1295.5, "1,295.5"),
    ([160, 390, 786], "160 / 390 / 786"), ({"requests_per_s": 22.8, "p50_ms": 339}, "requests per s 22.8, p50 ms 339"),
    ("a | b", "a \\| b"),
])
def test_figures_are_shown_as_the_file_has_them(value, shown):
    assert results._fmt(value) == shown


# -- the committed results ------------------------------------------------------------------------
def test_every_committed_results_file_is_well_formed():
    records = results.load(results.RESULTS_DIR)
    assert records
    for record in records:
        assert record["_file"].startswith(record["benchmark"] + "-")
        if record.get("source", "").startswith("imported from the README"):  # with the commit that had them
            assert re.search(r"\(commits? [0-9a-f]{7}", record["source"]), record["_file"]


def test_every_benchmark_writes_a_results_file():
    scripts = sorted((ROOT / "benchmarks").glob("bench_*.py"))
    assert scripts
    for script in scripts:
        text = script.read_text(encoding="utf-8")
        assert f'results.write("{script.stem}"' in text, f"{script.name} does not write its results"


# -- a benchmark run end to end, on a tiny model -----------------------------------------------------
def test_bench_model_times_both_forward_passes(tmp_path):
    model = tiny_model(tmp_path / "tiny", "dinov2")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_model.py"), "--model", str(model),
                           "--sizes", "32,48", "--rounds", "1", "--batches", "1", "--batch", "2",
                           "--results-dir", str(tmp_path / "results")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    (written,) = (tmp_path / "results").glob("bench_model-*.json")
    figures = json.loads(written.read_text())["figures"]
    own, larger = figures["fp32_32px"], figures["fp32_48px"]
    assert own["all_tokens"] > 0 and own["cls_only"] > 0 and own["speedup"] > 0
    assert larger["size_cost"] > 0 and "size_cost" not in own
