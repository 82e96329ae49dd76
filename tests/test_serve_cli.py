"""`vitsearch serve`'s options for production: keys (options and VITSEARCH_API_KEYS), CORS origins,
logs, shutdown, and the warnings it prints before it starts. The service and uvicorn are stand-ins
here (the real process is in test_server.py and test_serving_run.py), so nothing listens anywhere."""

from __future__ import annotations

import contextlib
import signal
import socket
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from vitsearch import cli, server

KEY, KEY2 = "first-key-0123456789abcdef", "second-key-0123456789abcdef"


@pytest.fixture
def started(monkeypatch, restore_logging):
    """Runs `vitsearch serve ARGS`; returns (result, what serve() was called with)."""
    calls: dict = {}
    vs = SimpleNamespace(store=SimpleNamespace(collection="images", uri="/data/x.db"), spec=SimpleNamespace(name="m"),
                         count=lambda: 3)
    monkeypatch.setattr(cli, "_open", lambda *a, **k: vs)
    monkeypatch.setattr(server, "Service", lambda vs, **kwargs: SimpleNamespace(vs=vs, **kwargs))

    def fake_serve(service, host, port, log_level, max_connections, **kwargs):
        calls.update(kwargs, host=host, port=port, log_level=log_level)
        return signal.SIGTERM

    monkeypatch.setattr(server, "serve", fake_serve)
    monkeypatch.setattr(socket, "create_server", lambda *a, **k: contextlib.nullcontext())

    def run(*args, env=None):
        return CliRunner().invoke(cli.main, ["serve", *args], env=env), calls

    return run


def test_keys_from_options_and_from_the_variable(started):
    result, calls = started("--api-key", KEY, "--api-key", KEY2)
    assert result.exit_code == 0, result.output
    assert len(calls["keys"]) == 2 and not calls["keys"].reads
    assert calls["keys"].valid(KEY2) and not calls["keys"].valid("other")
    result, calls = started(env={"VITSEARCH_API_KEYS": f" {KEY} ,{KEY2},", "VITSEARCH_KEYS_FOR_READS": "1"})
    assert result.exit_code == 0, result.output
    assert len(calls["keys"]) == 2 and calls["keys"].reads and calls["keys"].valid(KEY)


def test_defaults_are_no_keys_no_cors_text_logs_and_30_s(started):
    result, calls = started()
    assert result.exit_code == 0, result.output
    assert not calls["keys"].enabled and calls["cors_origins"] == [] and calls["log_json"] is False
    assert calls["shutdown_timeout"] == 30.0 and calls["host"] == "127.0.0.1"
    assert result.stdout == ""  # people's lines go to stderr
    assert "serving 'images' in /data/x.db (3 images, m)" in result.stderr and "API keys: 0" in result.stderr
    assert "stopped (SIGTERM)" in result.stderr


def test_cors_logs_and_shutdown_options(started):
    result, calls = started("--cors-origin", "https://shop.example/", "--log-json", "--shutdown-timeout", "5",
                            env={"VITSEARCH_CORS_ORIGINS": "http://ignored.example"})
    assert result.exit_code == 0, result.output
    assert calls["cors_origins"] == ["https://shop.example"] and calls["log_json"] and calls["shutdown_timeout"] == 5
    result, calls = started(env={"VITSEARCH_CORS_ORIGINS": "https://a.example,http://localhost:3000"})
    assert calls["cors_origins"] == ["https://a.example", "http://localhost:3000"]


@pytest.mark.parametrize("args, env, words", [
    (["--api-key", "has space"], None, "printable ASCII"),
    (["--api-key", "ключ-0123456789abcdef"], None, "printable ASCII"),
    ([], {"VITSEARCH_API_KEYS": "good-key-0123456789abcdef,bad key"}, "printable ASCII"),
    (["--cors-origin", "https://shop.example/app"], None, "scheme, a host and a port only"),
    (["--cors-origin", "shop.example"], None, "looks like"),
    (["--shutdown-timeout", "-1"], None, "x>=0"),
])
def test_bad_options_are_usage_errors_that_never_quote_a_key(started, args, env, words):
    result, calls = started(*args, env=env)
    assert result.exit_code == 2 and words in result.output and not calls
    assert "has space" not in result.output and "bad key" not in result.output and "ключ" not in result.output


@pytest.mark.parametrize("args, warned", [
    (["--host", "0.0.0.0"], "anyone who reaches port 8000 can add and delete images"),
    (["--host", "192.168.1.5", "--port", "9000"], "anyone who reaches port 9000"),
    (["--host", "::"], "no API key is set"),
    (["--host", "0.0.0.0", "--api-key", KEY], None),
    (["--host", "127.0.0.1"], None),
    (["--host", "localhost"], None),
    (["--api-key", "Zq7x"], "shorter than 16 characters"),
    (["--keys-for-reads"], "--keys-for-reads has no effect without --api-key"),
])
def test_warnings_before_start(started, args, warned):
    result, _ = started(*args)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if " WARNING " in line]
    if warned is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warned in warnings[0]
    assert "Zq7x" not in result.output and KEY not in result.output  # a key is never printed
