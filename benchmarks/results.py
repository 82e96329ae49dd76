"""Benchmark results: every run writes one JSON file; the documentation's Performance page is made from them.

A benchmark ends with::

    import results                      # benchmarks/ is on sys.path when a benchmark runs as a script
    results.write("bench_index", figures, settings=vars(args))

which writes ``benchmarks/results/bench_index-<YYYYMMDD-HHMMSS>.json``::

    {"benchmark": "bench_index", "date": "2026-11-23T01:33:27Z",
     "machine": {"cpu": "AMD EPYC", "cores": 2, "bf16": false, "gpu": null,
                 "python": "3.12.3", "torch": "2.13.0+cpu", "vitsearch": "0.1.0"},
     "figures": {...}}

plus, when given: ``variant`` (a configuration that is compared on its own, e.g. "Milvus Lite" and
"Milvus server" runs of the store benchmark), ``settings`` (the arguments of the run), ``notes``
(what the figures mean) and ``source`` (where figures that no script wrote came from, e.g.
"imported from the README").

Old files stay as history. :func:`markdown` shows, per benchmark, the latest run of each machine
(and variant) and folds the earlier ones away; the MkDocs hook ``scripts/docs_hooks.py`` puts that
on the Performance page, so no figure there is copied by hand.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MACHINE_KEYS = ("cpu", "cores", "bf16", "gpu", "python", "torch", "vitsearch")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


# -- the machine --------------------------------------------------------------------------------
def _fields(text: str) -> dict[str, str]:
    """``key: value`` lines (lscpu, /proc/cpuinfo) as a dict; the first of a repeated key wins."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def _lscpu() -> dict[str, str]:
    try:
        return _fields(subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=True).stdout)
    except (OSError, subprocess.SubprocessError):
        return {}


def _cpuinfo() -> dict[str, str]:
    try:
        return _fields(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return {}


def cpu_model(lscpu: dict[str, str] | None = None, cpuinfo: dict[str, str] | None = None) -> str:
    """The CPU's model name: lscpu's "Model name", else /proc/cpuinfo's "model name", else platform's guess."""
    lscpu = _lscpu() if lscpu is None else lscpu
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    return lscpu.get("Model name") or cpuinfo.get("model name") or platform.processor() or platform.machine()


# cpu flag -> its name in a record: the native bf16 units, the stronger first
BF16_UNITS = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16"))


def cpu_has_bf16(flags: Iterable[str]) -> bool:
    """Native bf16 matrix instructions: AMX-BF16 or AVX512-BF16 (what vitsearch's --precision auto looks for)."""
    return bool({flag for flag, _ in BF16_UNITS} & set(flags))


def cpu_id(lscpu: dict[str, str], cpuinfo: dict[str, str], flags: Iterable[str]) -> str | None:
    """CPU family, model, widest vector unit and bf16 unit ("family 23 model 1, AVX2"; "family 6 model
    143, AVX-512, AMX"): what tells apart two machines that both call themselves "AMD EPYC" but
    differ twofold in speed, or AMX from AVX512-BF16 (about twofold in bf16); None when unknown."""
    family = lscpu.get("CPU family") or cpuinfo.get("cpu family")
    model = lscpu.get("Model") or cpuinfo.get("model")
    flags = set(flags)
    vector = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("neon", "NEON"), ("asimd", "NEON"))
                   if flag in flags), None)
    bf16 = next((name for flag, name in BF16_UNITS if flag in flags), None)
    parts = [f"family {family} model {model}" if family and model else None, vector, bf16]
    return ", ".join(p for p in parts if p) or None


def _torch() -> tuple[str | None, str | None]:
    """(torch version, GPU name or None); (None, None) without torch."""
    try:
        import torch
    except ImportError:
        return None, None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return torch.__version__, gpu


def _vitsearch_version() -> str | None:
    try:
        from vitsearch import __version__
    except ImportError:
        return None
    return __version__


def machine() -> dict[str, Any]:
    """What ran the benchmark: CPU model (and its family, model number, vector and bf16 units), cores,
    native bf16, GPU, and the Python, torch and vitsearch versions."""
    lscpu, cpuinfo = _lscpu(), _cpuinfo()
    flags = (lscpu.get("Flags") or cpuinfo.get("flags") or "").split()
    torch_version, gpu = _torch()
    return {
        "cpu": cpu_model(lscpu, cpuinfo),
        "cpu_id": cpu_id(lscpu, cpuinfo, flags),
        "cores": os.cpu_count(),
        "bf16": cpu_has_bf16(flags),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch_version,
        "vitsearch": _vitsearch_version(),
    }


# -- writing and reading ------------------------------------------------------------------------
def check(record: Any, where: str = "result") -> dict:
    """``record`` if it has the shape of a results file, else ValueError naming what is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: not a JSON object")  # noqa: TRY004 - a bad file is a bad value
    for key, kind in (("benchmark", str), ("date", str), ("machine", dict), ("figures", dict)):
        if not isinstance(record.get(key), kind):
            raise ValueError(  # noqa: TRY004 - a bad file is a bad value
                f"{where}: {key!r} must be a {'string' if kind is str else 'JSON object'}"
            )
    if not _NAME.match(record["benchmark"]):
        raise ValueError(f"{where}: benchmark name {record['benchmark']!r} must be lower-case letters, digits and _")
    try:
        parse_date(record["date"])
    except ValueError:
        raise ValueError(f"{where}: date {record['date']!r} is not ISO-8601") from None
    missing = [k for k in MACHINE_KEYS if k not in record["machine"]]
    if missing:
        raise ValueError(f"{where}: machine lacks {', '.join(missing)}")
    for key in ("variant", "notes", "source"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise ValueError(f"{where}: {key!r} must be a string")
    return record


def parse_date(text: str) -> datetime:
    """An ISO-8601 date; one without a zone is taken as UTC."""
    date = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return date if date.tzinfo else date.replace(tzinfo=timezone.utc)


def write(
    benchmark: str,
    figures: dict,
    *,
    settings: dict | None = None,
    variant: str | None = None,
    notes: str | None = None,
    source: str | None = None,
    machine_info: dict | None = None,
    date: datetime | None = None,
    folder: str | os.PathLike | None = RESULTS_DIR,
) -> Path | None:
    """Write one run's ``figures`` to ``folder/<benchmark>-<YYYYMMDD-HHMMSS>.json``; returns the path.

    ``folder=None`` writes nothing (a trial run). ``machine_info`` and ``date`` default to this
    machine and now; imported figures pass the ones they were measured on.
    """
    if folder is None:
        return None
    date = (date or datetime.now(timezone.utc)).astimezone(timezone.utc)
    record = {"benchmark": benchmark, "date": date.strftime("%Y-%m-%dT%H:%M:%SZ"),
              "machine": machine_info if machine_info is not None else machine(), "figures": figures}
    for key, value in (("variant", variant), ("settings", settings), ("notes", notes), ("source", source)):
        if value is not None:
            record[key] = value
    check(record, benchmark)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{benchmark}-{date.strftime('%Y%m%d-%H%M%S')}"
    path, n = folder / f"{stem}.json", 1
    while path.exists():  # two runs in the same second keep both files
        n += 1
        path = folder / f"{stem}-{n}.json"
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path


def add_argument(parser) -> None:
    """The ``--results-dir`` option every benchmark takes ('' writes no results file)."""
    parser.add_argument("--results-dir", default=str(RESULTS_DIR),
                        help="where the results file goes (default: benchmarks/results; '' for none)")


def folder_arg(value: str | None) -> Path | None:
    return Path(value) if value else None


def load(folder: str | os.PathLike = RESULTS_DIR) -> list[dict]:
    """Every results file in ``folder``, oldest first; a malformed file is a ValueError naming it."""
    records = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path.name}: not JSON ({exc})") from None
        check(record, path.name)
        record["_file"] = path.name
        records.append(record)
    return sorted(records, key=lambda r: (parse_date(r["date"]), r["_file"]))


def machine_label(m: dict) -> str:
    """A short name for a machine: its GPU or CPU model (with its family, vector and bf16 units when recorded),
    the cores, and bf16 or not."""
    cpu = m.get("cpu") or "CPU not recorded"
    cpu = f"{cpu} ({m['cpu_id']})" if m.get("cpu_id") else cpu
    cores = f"{m['cores']} cores" if m.get("cores") else "cores not recorded"
    bf16 = {True: "bf16", False: "no bf16 (fp32)"}.get(m.get("bf16"), "bf16 not recorded")
    label = f"{cpu}, {cores}, {bf16}"
    return f"{m['gpu']} ({label})" if m.get("gpu") else label


def latest_per_machine(records: list[dict]) -> list[tuple[dict, list[dict]]]:
    """Per machine (and variant): (its latest run, its earlier runs newest first); newest machines first."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        m = record["machine"]
        key = (m.get("cpu"), m.get("cpu_id"), m.get("cores"), m.get("gpu"), record.get("variant"))
        groups.setdefault(key, []).append(record)
    runs = []
    for group in groups.values():
        group = sorted(group, key=lambda r: parse_date(r["date"]), reverse=True)
        runs.append((group[0], group[1:]))
    return sorted(runs, key=lambda pair: parse_date(pair[0]["date"]), reverse=True)


# -- Markdown ------------------------------------------------------------------------------------
def _words(key: str) -> str:
    return str(key).replace("_", " ")


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,}"  # as the file has it: 4.0 stays 4.0
    if isinstance(value, dict):
        return ", ".join(f"{_words(k)} {_fmt(v)}" for k, v in value.items()) or "—"
    if isinstance(value, (list, tuple)):
        return " / ".join(_fmt(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _table(rows: list[dict]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    lines = ["| " + " | ".join(_words(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return lines


def _flatten(figures: dict, prefix: str = "") -> tuple[list[tuple[str, Any]], list[tuple[str, list]]]:
    """(scalar figures with dotted names, tables): nested objects are flattened, lists of objects are tables."""
    scalars, tables = [], []
    for key, value in figures.items():
        name = f"{prefix}{_words(key)}"
        if _is_rows(value):
            tables.append((name, value))
        elif isinstance(value, dict) and value and any(isinstance(v, (dict, list)) for v in value.values()):
            more_scalars, more_tables = _flatten(value, f"{name} · ")
            scalars += more_scalars
            tables += more_tables
        elif isinstance(value, dict) and value:
            scalars += [(f"{name} · {_words(k)}", v) for k, v in value.items()]
        else:
            scalars.append((name, value))
    return scalars, tables


def run_markdown(record: dict) -> list[str]:
    """One run (its machine is in the heading above it): date, versions, provenance, settings, figures, notes."""
    m = record["machine"]
    about = [f"**{parse_date(record['date']).strftime('%Y-%m-%d %H:%M UTC')}**"]
    about += [f"{k} {m[k]}" for k in ("python", "torch", "vitsearch") if m.get(k)]
    if record.get("source"):
        about.append(f"*{record['source']}*")
    lines = [" · ".join(about), ""]
    if record.get("settings"):
        lines += ["Settings: " + ", ".join(f"`{k}` {_fmt(v)}" for k, v in record["settings"].items()), ""]
    scalars, tables = _flatten(record["figures"])
    if scalars:
        lines += _table([{"figure": name, "value": value} for name, value in scalars]) + [""]
    for name, rows in tables:
        if name != "runs" or scalars or len(tables) > 1:
            lines += [f"*{name}*", ""]
        lines += _table(rows) + [""]
    if record.get("notes"):
        lines += [record["notes"].strip(), ""]
    lines.append(f"<small>File: `benchmarks/results/{record.get('_file', '')}`</small>")
    lines.append("")
    return lines


def markdown(benchmark: str, records: list[dict], heading: str = "###") -> str:
    """The Performance page's section for ``benchmark``: the latest run per machine, earlier runs folded."""
    mine = [r for r in records if r["benchmark"] == benchmark]
    if not mine:
        return f"*No results yet: run `python benchmarks/{benchmark}.py`.*\n"
    lines: list[str] = []
    for latest, earlier in latest_per_machine(mine):
        title = machine_label(latest["machine"]) + (f" — {latest['variant']}" if latest.get("variant") else "")
        lines += [f"{heading} {title}", ""]
        lines += run_markdown(latest)
        if earlier:
            lines += [f'??? note "Earlier runs on this machine ({len(earlier)})"', ""]
            for record in earlier:
                lines += [f"    {line}" if line else "" for line in run_markdown(record)]
    return "\n".join(lines).rstrip() + "\n"
