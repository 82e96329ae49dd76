"""The stack in compose: docker-compose.yml and the Dockerfile hold what a deployment relies on. No
Docker engine is needed: the files are parsed (PyYAML for compose), and the `vitsearch serve` command
lines they run are parsed by the real command, so an option that does not exist fails here."""

from __future__ import annotations

import json
import re
import shlex

import pytest
from helpers import ROOT

from vitsearch import cli

yaml = pytest.importorskip("yaml")

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with nothing set: the default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def _seconds(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text))


def _serve_options(argv: list[str]) -> dict:
    """The options `vitsearch serve` would run with, parsed by the command itself (nothing runs)."""
    assert argv[:2] == ["vitsearch", "serve"], argv
    ctx = cli.serve.make_context("serve", list(argv[2:]))
    return ctx.params


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_runs_vitsearch_beside_milvus_standalone(compose):
    services = compose["services"]
    assert {"etcd", "minio", "milvus", "vitsearch"} <= set(services)
    milvus, app = services["milvus"], services["vitsearch"]
    assert milvus["command"] == ["milvus", "run", "standalone"]
    assert app["build"] == "." and DOCKERFILE.is_file()
    assert app["depends_on"]["milvus"]["condition"] == "service_healthy"
    assert app["environment"]["VITSEARCH_URI"] == "http://milvus:19530"
    assert all(str(p).startswith("127.0.0.1:") for p in milvus["ports"])  # no auth on this Milvus: this machine only
    assert "127.0.0.1:19530:19530" in milvus["ports"]


def test_compose_serves_on_every_interface_of_the_container_with_the_key_variables(compose):
    app = compose["services"]["vitsearch"]
    options = _serve_options(app["command"])
    assert options["host"] == "0.0.0.0" and options["port"] == 8000
    published = _interpolate(app["ports"][0])
    assert published.rsplit(":", 1)[1] == "8000" and published.startswith("127.0.0.1:")  # loopback unless asked
    env = app["environment"]
    for variable in ("VITSEARCH_API_KEYS", "VITSEARCH_CORS_ORIGINS", "VITSEARCH_KEYS_FOR_READS"):
        assert f"${{{variable}:-" in env[variable]  # passed through from the shell or .env, never a key in the file
    assert env["VITSEARCH_LOG_JSON"] in ("true", "1")


def test_compose_checks_health_on_healthz(compose):
    check = compose["services"]["vitsearch"]["healthcheck"]
    assert check["test"][0] == "CMD" and any("/healthz" in part for part in check["test"])
    assert "127.0.0.1:8000/healthz" in " ".join(check["test"])
    assert _seconds(check["start_period"]) >= 60  # the model loads before /healthz answers
    assert _seconds(check["interval"]) > 0 and check["retries"] >= 1


def test_compose_keeps_uploads_in_a_named_volume(compose):
    app = compose["services"]["vitsearch"]
    options = _serve_options(app["command"])
    mounts = dict(v.split(":", 1) for v in app["volumes"])
    (volume, target), = [(v, t) for v, t in mounts.items() if options["upload_dir"].startswith(t.rstrip("/") + "/")]
    assert volume in compose["volumes"] and not volume.startswith(("/", "."))
    assert options["thumbnail_dir"].startswith(target)


def test_compose_gives_a_graceful_shutdown_time_to_finish(compose):
    app = compose["services"]["vitsearch"]
    options = _serve_options(app["command"])
    assert _seconds(app["stop_grace_period"]) > options["shutdown_timeout"] + 5  # then Docker would SIGKILL


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_cpu_torch_bundled_model_non_root():
    steps = _instructions()
    words = [w for w, _ in steps]
    assert words[0] == "FROM" and re.match(r"python:3\.\d+-slim$", steps[0][1])
    runs = [rest for w, rest in steps if w == "RUN"]
    torch = next(r for r in runs if "torch" in r)
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch
    assert runs.index(torch) < next(i for i, r in enumerate(runs) if "pip install ." in r)  # torch first
    copies = [rest for w, rest in steps if w == "COPY"]
    assert "vitsearch ./vitsearch" in copies and (ROOT / "vitsearch" / "models").is_dir()
    assert 'vitsearch = ["models/*/*", "static/*"]' in (ROOT / "pyproject.toml").read_text()  # model in the wheel
    users = [rest for w, rest in steps if w == "USER"]
    assert users and users[-1] not in ("root", "0") and words.index("USER") < words.index("CMD")
    assert any("useradd" in r and users[-1] in r for r in runs)
    env = " ".join(rest for w, rest in steps if w == "ENV")
    assert "VITSEARCH_URI=http://milvus:19530" in env and "HF_HUB_OFFLINE=1" in env


def test_dockerfile_serves_on_0_0_0_0_with_a_healthcheck():
    steps = dict(_instructions())
    argv = json.loads(steps["CMD"])
    options = _serve_options(argv)
    assert options["host"] == "0.0.0.0" and str(options["port"]) in steps["EXPOSE"].split()
    assert options["upload_dir"].startswith(json.loads(steps["VOLUME"])[0])
    check = shlex.split(steps["HEALTHCHECK"])
    assert "CMD" in check and "/healthz" in steps["HEALTHCHECK"] and f":{options['port']}/" in steps["HEALTHCHECK"]
    assert steps["STOPSIGNAL"] == "SIGTERM"


def test_dockerignore_keeps_the_context_small():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "datasets", "tests"} <= ignored and "vitsearch" not in ignored
