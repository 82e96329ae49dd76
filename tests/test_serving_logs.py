"""The access log: one line per request, as text or JSON lines, with nothing a client could forge."""

from __future__ import annotations

import json
import logging

import pytest

from vitsearch.serving import logs
from vitsearch.serving.logs import JsonFormatter, TextFormatter, safe_path


def _access(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logs.ACCESS_LOGGER]


def test_one_line_per_request_with_method_route_status_ms_and_bytes(serve_app, caplog):
    client = serve_app()
    caplog.set_level(logging.INFO, logger=logs.ACCESS_LOGGER)
    answers = [client.get("/stats"), client.get("/rows/42"), client.get("/healthz"),
               client.post("/search", json={"k": 1})]
    records = _access(caplog)
    assert len(records) == len(answers)
    fields = [r.http for r in records]
    assert [(f["method"], f["path"], f["route"], f["status"]) for f in fields] == [
        ("GET", "/stats", "/stats", 200), ("GET", "/rows/42", "/rows/{image_id}", 404),
        ("GET", "/healthz", "/healthz", 200), ("POST", "/search", "/search", 400)]
    assert [f["bytes"] for f in fields] == [len(a.content) for a in answers]
    assert all(f["ms"] > 0 for f in fields) and fields[0]["client"] == "testclient"
    assert records[1].getMessage().startswith("GET /rows/42 404 ") and "B testclient" in records[1].getMessage()


def test_nothing_is_logged_below_info(serve_app, caplog):
    client = serve_app()
    caplog.set_level(logging.WARNING, logger=logs.ACCESS_LOGGER)
    client.get("/stats")
    assert not _access(caplog)


@pytest.mark.parametrize("path, logged", [
    ("/images/1", "/images/1"), ("/a\nINFO forged line", "/a\\x0aINFO forged line"), ("/\x1b[31mred", "/\\x1b[31mred"),
    ("/" + "a" * 400, "/" + "a" * 299 + "…"),
])
def test_paths_are_made_safe_for_one_line(path, logged):
    assert safe_path(path) == logged


def _record(**http) -> logging.LogRecord:
    record = logging.LogRecord(logs.ACCESS_LOGGER, logging.INFO, __file__, 1, "GET /stats 200 1.5ms 12B 1.2.3.4", (),
                               None)
    if http:
        record.http = http
    return record


def test_json_lines_carry_the_fields():
    line = JsonFormatter().format(_record(method="GET", path="/stats", route="/stats", status=200, ms=1.5, bytes=12,
                                          client="1.2.3.4"))
    out = json.loads(line)
    assert "\n" not in line
    assert out["logger"] == "vitsearch.access" and out["level"] == "info" and out["ts"].endswith("Z")
    assert (out["method"], out["route"], out["status"], out["ms"], out["bytes"]) == ("GET", "/stats", 200, 1.5, 12)
    plain = json.loads(JsonFormatter().format(_record()))
    assert plain["message"] == "GET /stats 200 1.5ms 12B 1.2.3.4" and "status" not in plain


def test_text_lines_have_a_utc_time_level_and_logger():
    line = TextFormatter().format(_record())
    stamp, level, name, message = line.split(" ", 3)
    assert stamp.endswith("Z") and "T" in stamp and level == "INFO" and name == "vitsearch.access"
    assert message == "GET /stats 200 1.5ms 12B 1.2.3.4"


@pytest.mark.parametrize("json_lines", [False, True])
def test_configure_sends_server_logs_to_stderr_in_one_format(json_lines, capsys, restore_logging):
    logs.configure("info", json_lines)
    logging.getLogger("uvicorn.error").info("Started server process [1]")
    logging.getLogger(logs.ACCESS_LOGGER).info("GET / 200 1.0ms 10B 127.0.0.1")
    logging.getLogger("uvicorn.access").info("uvicorn's own access line")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "uvicorn's own" not in "".join(err)
    if json_lines:
        assert [json.loads(line)["logger"] for line in err] == ["uvicorn.error", "vitsearch.access"]
    else:
        assert err[0].split(" ")[1:3] == ["INFO", "uvicorn.error"]
