"""``CACHED_TEI_LOG_FORMAT=json`` / ``--log-format json``: every line the command line and the
proxy write to stderr is one JSON object; text stays the default; secrets never appear."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import httpx

from cached_tei.logs import JSONFormatter, RequestContext, request_context
from tests.faults.conftest import ProxyProcess
from tests.tei_emulator import Fault

from .support import run_cli

KEYS = {"time", "level", "logger", "message"}


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line of ``stderr`` as a JSON object (fails on the first line that is not one)."""
    entries = [json.loads(line) for line in stderr.splitlines()]
    for entry in entries:
        assert KEYS <= set(entry), entry
    return entries


def test_lines_logged_for_a_request_carry_its_ids() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger("cached_tei.test_json_logs")
    logger.addHandler(handler)
    try:
        token = request_context.set(RequestContext(request_id="req-1", trace_id="0af7651916cd"))
        logger.warning("during %s", "the request")
        request_context.reset(token)
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("outside")
    finally:
        logger.removeHandler(handler)
    during, outside = json_lines(stream.getvalue())
    assert {k: during[k] for k in ("level", "message", "request_id", "trace_id")} == {
        "level": "WARNING",
        "message": "during the request",
        "request_id": "req-1",
        "trace_id": "0af7651916cd",
    }
    assert "request_id" not in outside and "trace_id" not in outside
    assert outside["exception"].endswith("ValueError: boom")


def test_embed_logs_json_lines(emu, tmp_path: Path) -> None:
    source = tmp_path / "c.txt"
    source.write_text("one\ntwo\n")
    result = run_cli(
        *("embed", str(source), "-o", str(tmp_path / "c.npy"), "-v"),
        *("--tei-url", emu.url, "--qdrant-path", str(tmp_path / "q")),
        env={
            "CACHED_TEI_LOG_FORMAT": "json",
            "CACHED_TEI_API_KEY": "tei-secret-key",
            "CACHED_TEI_NORMALISE": "false",
        },
    )
    assert result.returncode == 0, result.stderr
    entries = json_lines(result.stderr)
    assert {
        "level": "WARNING",
        "logger": "cached_tei.settings",
        "message": "CACHED_TEI_NORMALISE (in the environment) is not a cached-tei setting; "
        "did you mean CACHED_TEI_NORMALIZE?",
    }.items() <= entries[0].items()
    assert any(e["level"] == "INFO" and e["logger"].startswith("cached_tei.") for e in entries)
    summary = entries[-1]
    assert (summary["level"], summary["logger"]) == ("INFO", "cached_tei.cli")
    assert summary["message"].startswith("embedded 2 texts in ")
    assert summary["time"].endswith("+00:00")
    assert "tei-secret-key" not in result.stderr


def test_errors_are_json_lines_with_the_flag(emu, tmp_path: Path) -> None:
    emu.inject(Fault("status", status=503, count=10))
    result = run_cli(
        *("embed", "-", "--log-format", "json", "--max-retries", "1", "--retry-deadline", "5"),
        *("--tei-url", emu.url, "--qdrant-path", str(tmp_path / "q")),
        stdin=b"x\n",
    )
    assert result.returncode == 1
    entry = json_lines(result.stderr)[-1]
    assert (entry["level"], entry["logger"]) == ("ERROR", "cached_tei.cli")
    assert entry["message"].startswith(f"TEI at {emu.url} failed (HTTP 503")


def test_text_stays_the_default(emu, tmp_path: Path) -> None:
    result = run_cli(
        *("embed", "-", "--tei-url", emu.url, "--qdrant-path", str(tmp_path / "q")),
        env={"CACHED_TEI_NORMALISE": "false"},
        stdin=b"x\n",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    warning, summary = lines[0], lines[-1]  # the progress bar between them
    assert warning.endswith(
        " WARNING cached_tei.settings: CACHED_TEI_NORMALISE (in the environment) is not a "
        "cached-tei setting; did you mean CACHED_TEI_NORMALIZE?"
    )
    assert summary.startswith("embedded 1 text in ")


def test_the_proxy_logs_json_lines_with_request_ids(emu, tmp_path: Path) -> None:
    proxy = ProxyProcess(
        tmp_path,
        emu.url,
        CACHED_TEI_LOG_FORMAT="json",
        CACHED_TEI_PROXY_ACCESS_LOG="true",
        CACHED_TEI_PROXY_API_KEYS="client-secret-key",
        CACHED_TEI_API_KEY="tei-secret-key",
    ).start()
    try:
        auth = {"Authorization": "Bearer client-secret-key"}
        answer = httpx.post(f"{proxy.url}/embed", json={"inputs": ["hi"]}, headers=auth)
        assert answer.status_code == 200, answer.text
        assert httpx.post(f"{proxy.url}/embed", json={"inputs": ["hi"]}).status_code == 401
    finally:
        assert proxy.terminate() == 0
    log = proxy.log()
    entries = json_lines(log)
    loggers = {entry["logger"] for entry in entries}
    assert "uvicorn.error" in loggers and any(name.startswith("cached_tei.") for name in loggers)
    requests = [e for e in entries if "POST /embed" in e["message"]]
    assert [e["logger"] for e in requests] == ["uvicorn.access", "uvicorn.access"]
    assert all(e.get("request_id") for e in requests), requests
    assert requests[0]["request_id"] != requests[1]["request_id"]
    assert "client-secret-key" not in log and "tei-secret-key" not in log
