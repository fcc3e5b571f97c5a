"""The ``cached-tei`` command line end to end: embed files, cache stats|prune|clear, help,
errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import numpy as np
import pytest

import cached_tei
from cached_tei.cli import main
from tests.tei_emulator import Fault, expected_vector

from .support import FAST, REPO, run_cli, texts_sent

pytestmark = pytest.mark.usefixtures("logging_restored")


@pytest.fixture
def store(tmp_path):
    return tmp_path / "qdrant"


@pytest.fixture
def cli(emu, store, capsys):
    """Run ``main`` in-process against the emulator and this test's store."""

    def run(*args: str) -> tuple[int, str, str]:
        extra = ["--qdrant-path", str(store)]
        if args[0] == "embed" and "--tei-url" not in args:
            extra += ["--tei-url", emu.url]
        code = main([*args, *extra])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def summary(stderr: str) -> str:
    return [line for line in stderr.splitlines() if line.startswith("embedded ")][-1]


def test_text_file_to_jsonl_then_from_the_cache(cli, emu, tmp_path):
    lines = [
        "first line",
        "",
        "second\tline with tab",
        "crlf line\r",
        "unicode: é 日本 🙂",
        "first line",
    ]
    source = tmp_path / "corpus.txt"
    source.write_bytes("\n".join(lines).encode() + b"\n")
    texts = ["first line", "second\tline with tab", "crlf line", "unicode: é 日本 🙂", "first line"]
    out = tmp_path / "vectors.jsonl"

    code, _, stderr = cli("embed", str(source), "-o", str(out), "--chunk-size", "2")
    assert code == 0, stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["text"] for row in rows] == texts
    for row in rows:
        assert np.array_equal(
            np.asarray(row["embedding"], np.float32), expected_vector(FAST, row["text"])
        )
    assert "embedding" in stderr  # the progress bar
    assert summary(stderr).startswith("embedded 5 texts in ")
    assert "1 cache hit, 4 computed by TEI, 0 repeated" in summary(stderr)  # the repeat: next chunk
    assert sorted(texts_sent(emu)) == sorted(set(texts))

    emu.reset_log()
    code, _, stderr = cli("embed", str(source), "-o", str(out))
    assert code == 0
    assert "4 cache hits, 0 computed by TEI, 1 repeated" in summary(stderr)
    assert texts_sent(emu) == []

    code, _, stderr = cli("embed", str(source), "-o", str(out), "--quiet")
    assert (code, stderr) == (0, "")  # no progress bar, no summary


def test_jsonl_to_npy_exact_vectors(cli, emu, tmp_path):
    records = [
        {"id": i, "body": f"record number {i}"} for i in range(2 * FAST.max_client_batch_size + 7)
    ]
    source = tmp_path / "docs.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    out = tmp_path / "docs.npy"
    code, _, stderr = cli(
        "embed", str(source), "-o", str(out), "--field", "body", "--chunk-size", "10"
    )
    assert code == 0, stderr
    vectors = np.load(out)
    assert vectors.dtype == np.float32 and vectors.shape == (len(records), FAST.dim)
    assert np.array_equal(vectors, np.stack([expected_vector(FAST, r["body"]) for r in records]))
    assert max(len(r.texts) for r in emu.requests) <= FAST.max_client_batch_size
    assert f"0 cache hits, {len(records)} computed by TEI" in summary(stderr)
    assert not list(tmp_path.glob("*.partial"))


def test_jsonl_output_keeps_the_input_objects(cli, tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text('{"id": "a", "text": "keep me", "meta": {"n": 1}}\n')
    out = tmp_path / "out.jsonl"
    assert cli("embed", str(source), "-o", str(out))[0] == 0
    row = json.loads(out.read_text())
    assert row["id"] == "a" and row["meta"] == {"n": 1} and row["text"] == "keep me"
    assert np.array_equal(
        np.asarray(row["embedding"], np.float32), expected_vector(FAST, "keep me")
    )


def test_stdin_to_npy_and_query_kind(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from stdin\nanother\n")))
    out = tmp_path / "stdin.npy"
    code, _, stderr = cli(
        "embed", "-", "-o", str(out), "--kind", "query", "--query-instruction", "query: "
    )
    assert code == 0, stderr
    expected = np.stack(
        [expected_vector(FAST, "query: from stdin"), expected_vector(FAST, "query: another")]
    )
    assert np.array_equal(np.load(out), expected)


def test_embed_stdin_to_stdout_through_the_entry_point(emu, store):
    result = run_cli(
        "embed", "-", "--tei-url", emu.url, "--qdrant-path", str(store), "-q", stdin=b"piped text\n"
    )
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["text"] == "piped text"
    assert np.array_equal(
        np.asarray(row["embedding"], np.float32), expected_vector(FAST, "piped text")
    )
    assert result.stderr == ""


def test_a_cached_tei_proxy_as_tei_url_is_reported_apart(cli, emu, proxy, tmp_path):
    """A client whose TEI URL is a cached-tei proxy counts what the proxy's cache served
    (its x-cache-hits header) apart from what TEI computed, in Stats and in the summary."""
    texts = [f"through the proxy {i}" for i in range(7)]
    source = tmp_path / "t.txt"
    source.write_text("\n".join(texts) + "\n")
    via_proxy = ("--tei-url", proxy.url, "--qdrant-url", ":memory:")
    code, _, stderr = cli("embed", str(source), "-o", str(tmp_path / "1.npy"), *via_proxy)
    assert code == 0, stderr
    assert "0 cache hits, 7 computed by TEI, 0 repeated" in summary(stderr)
    assert sorted(texts_sent(emu)) == sorted(texts)

    emu.reset_log()
    code, _, stderr = cli("embed", str(source), "-o", str(tmp_path / "2.npy"), *via_proxy)
    assert code == 0, stderr
    assert (
        "0 cache hits, 7 from the cache of the cached-tei proxy at the TEI URL, "
        "0 computed by TEI, 0 repeated"
    ) in summary(stderr)
    assert texts_sent(emu) == []
    expected = np.stack([expected_vector(FAST, text) for text in texts])
    assert np.array_equal(np.load(tmp_path / "2.npy"), expected)

    with cached_tei.CachedEmbedder(tei_url=proxy.url, qdrant_url=":memory:") as embedder:
        embedder.embed_documents([*texts[:3], "new to both caches"])
        stats = embedder.stats
    assert (stats.misses, stats.tei_texts, stats.upstream_hits) == (4, 4, 3)
    assert texts_sent(emu) == ["new to both caches"]


def test_embed_takes_the_cache_flags(cli, emu, tmp_path):
    source = tmp_path / "t.txt"
    source.write_text("kept apart\nrecomputed\n")
    out = str(tmp_path / "t.npy")
    assert cli("embed", str(source), "-o", out, "-q", "--write-cache", "false")[0] == 0
    assert cli("embed", str(source), "-o", out, "-q")[0] == 0
    assert texts_sent(emu) == ["kept apart", "recomputed"] * 2
    emu.reset_log()
    assert cli("embed", str(source), "-o", out, "-q", "--read-cache", "false")[0] == 0
    assert texts_sent(emu) == ["kept apart", "recomputed"]


def test_cache_stats_prune_clear(cli, tmp_path):
    source = tmp_path / "c.txt"
    source.write_text("\n".join(f"cached {i}" for i in range(12)))
    assert cli("embed", str(source), "-o", str(tmp_path / "c.npy"), "-q")[0] == 0

    code, stdout, _ = cli("cache", "stats")
    assert code == 0
    assert stdout.splitlines()[-1].startswith("1 collection, 12 entries under prefix 'cached_tei'")
    assert FAST.model_id in stdout and f"{FAST.dim} dims" in stdout
    code, stdout, _ = cli("cache", "stats", "--json")
    stats = json.loads(stdout)
    assert stats["entries"] == 12 and stats["collections"][0]["dimension"] == FAST.dim
    assert stats["collections"][0]["namespace"]["model_id"] == FAST.model_id

    code, stdout, _ = cli("cache", "prune", "--ttl", "3600")
    assert (code, stdout.split(" from ")[0]) == (0, "removed 0 entries older than 3600 s")
    time.sleep(1.2)  # entries carry whole-second creation times: 1 s + the TTL + a margin
    code, stdout, _ = cli("cache", "prune", "--ttl", "0.1")
    assert code == 0 and stdout.startswith("removed 12 entries older than 0.1 s"), stdout
    assert json.loads(cli("cache", "stats", "--json")[1])["entries"] == 0

    assert cli("embed", str(source), "-o", str(tmp_path / "c.npy"), "-q")[0] == 0
    code, stdout, _ = cli("cache", "clear", "--yes")
    assert code == 0 and stdout.startswith("removed 12 entries")
    assert json.loads(cli("cache", "stats", "--json")[1])["collections"] == []


def test_cache_commands_on_a_qdrant_server(cli, tmp_path):
    from tests.faults.fake_qdrant import FakeQdrant

    source = tmp_path / "c.txt"
    source.write_text("\n".join(f"served {i}" for i in range(5)))
    with FakeQdrant() as qdrant:
        server = ("--qdrant-url", qdrant.url)
        assert cli("embed", str(source), "-o", str(tmp_path / "c.npy"), "-q", *server)[0] == 0
        stats = json.loads(cli("cache", "stats", "--json", *server)[1])
        assert (stats["store"], stats["entries"], stats["held_by"]) == (qdrant.url, 5, None)
        assert stats["collections"][0]["namespace"]["model_id"] == FAST.model_id
        code, stdout, _ = cli("cache", "clear", "--yes", *server)
        assert (code, stdout) == (0, f"removed 5 entries from {qdrant.url}\n")
        assert json.loads(cli("cache", "stats", "--json", *server)[1])["collections"] == []


HOLDER = """
import sys
from cached_tei import CachedEmbedder
embedder = CachedEmbedder(tei_url=sys.argv[1], qdrant_path=sys.argv[2])
embedder.embed(["held one", "held two"])
embedder.flush()
print("ready", flush=True)
sys.stdin.readline()
embedder.close()
"""


def test_cache_stats_while_another_process_holds_the_folder(emu, store):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, emu.url, str(store)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(REPO),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        stats = run_cli("cache", "stats", "--qdrant-path", str(store))
        assert stats.returncode == 0, stats.stderr
        collection, total, held = stats.stdout.splitlines()
        assert FAST.model_id in collection and collection.endswith("? entries")
        assert total.startswith("1 collection, ? entries under prefix 'cached_tei'")
        assert held.startswith(f"{store} is held by ") and str(holder.pid) in held

        stats = run_cli("cache", "stats", "--json", "--qdrant-path", str(store))
        body = json.loads(stats.stdout)
        assert body["entries"] is None and str(holder.pid) in body["held_by"]
        [info] = body["collections"]
        assert info["count"] is None and info["dimension"] == FAST.dim
        assert info["namespace"]["model_id"] == FAST.model_id

        for maintenance in (["prune", "--ttl", "60"], ["clear", "--yes"]):
            refused = run_cli("cache", *maintenance, "--qdrant-path", str(store))
            assert refused.returncode == 1
            [line] = refused.stderr.splitlines()
            assert line.startswith(f"cached-tei: error: the embedded cache at {store} is held by ")
            assert f"stop PID {holder.pid} " in line and "then run the command again" in line
    finally:
        holder.communicate("\n", timeout=30)
    assert holder.returncode == 0

    body = json.loads(run_cli("cache", "stats", "--json", "--qdrant-path", str(store)).stdout)
    assert (body["entries"], body["held_by"]) == (2, None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["embed", "missing.txt"], "no such file: missing.txt"),
        (
            ["embed", "{jsonl}", "-o", "{npy}"],
            "line 2 has no field 'text' (choose the field with --field)",
        ),
        (["embed", "{jsonl}", "-o", "{npy}", "--field", "text"], "line 2 has no field 'text'"),
        (["embed", "{fields}", "-o", "{npy}"], "line 2: field 'text' is empty; remove the line"),
        (["embed", "{fields}", "-o", "{npy}", "--field", "n"], "line 1: field 'n' is a number,"),
        (["embed", "{txt}", "--format", "npy"], "a .npy output needs a file name"),
        (
            [
                "embed",
                "{txt}",
                "--tei-url",
                "http://127.0.0.1:1",
                "--retry-deadline",
                "0.3",
                "--max-retries",
                "0",
            ],
            "TEI at http://127.0.0.1:1 failed (no response, Unavailable)",
        ),
        (["cache", "prune"], "cache prune removes entries older than the TTL"),
        (["cache", "clear"], "pass --yes to confirm"),
    ],
)
def test_errors_are_one_line_and_fail(cli, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    (tmp_path / "a.txt").write_text("fine\n")
    (tmp_path / "b.jsonl").write_text('{"text": "ok"}\n{"other": "x"}\n')
    (tmp_path / "c.jsonl").write_text('{"text": "ok", "n": 3}\n{"text": ""}\n')
    paths = {
        "txt": str(tmp_path / "a.txt"),
        "jsonl": str(tmp_path / "b.jsonl"),
        "fields": str(tmp_path / "c.jsonl"),
        "npy": str(tmp_path / "o.npy"),
    }
    code, _, err = cli(*[a.format(**paths) for a in args])
    assert code == 1
    # what a terminal shows: each line as its last carriage return left it
    lines = [line.rsplit("\r", 1)[-1] for line in err.split("\n")]
    lines = [line for line in lines if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cached-tei: error: "), err
    assert message in lines[0], lines[0]
    assert not (tmp_path / "o.npy").exists() and not list(tmp_path.glob("*.partial"))


def test_tei_down_is_one_line_with_retries_and_quiet(store):
    result = run_cli(
        *("embed", "-", "--tei-url", "http://127.0.0.1:1", "--qdrant-path", str(store)),
        *("--retry-deadline", "5", "--max-retries", "3", "-q"),
        stdin=b"x\n",
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()  # the retries log at debug level
    assert line.startswith(
        "cached-tei: error: TEI at http://127.0.0.1:1 failed (no response, Unavailable)"
    )
    assert "Gave up after 4 attempts" in line


def test_tei_failing_is_one_line_with_retries_and_quiet(emu, store, tmp_path):
    emu.inject(Fault("status", status=503, count=10))
    out = tmp_path / "out.jsonl"
    result = run_cli(
        *("embed", "-", "-o", str(out), "--tei-url", emu.url, "--qdrant-path", str(store)),
        *("--retry-deadline", "5", "--max-retries", "2", "-q"),
        stdin=b"x\n",
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"cached-tei: error: TEI at {emu.url} failed (HTTP 503"), line
    assert [r.status for r in emu.requests if r.texts] == [503, 503, 503]
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_the_final_progress_bar_is_drawn_once(emu, store, tmp_path):
    # Each chunk slower than tqdm's refresh interval (0.1 s): every update draws the bar.
    emu.inject(Fault("delay", seconds=0.15, count=3))
    source = tmp_path / "c.txt"
    source.write_text("\n".join(f"line {i}" for i in range(12)) + "\n")
    result = run_cli(
        *("embed", str(source), "-o", str(tmp_path / "c.npy"), "--chunk-size", "4"),
        *("--tei-url", emu.url, "--qdrant-path", str(store)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("4/12") == 1, result.stderr
    assert result.stderr.count("12/12") == 1, result.stderr
    assert result.stderr.splitlines()[-1].startswith("embedded 12 texts in ")


@pytest.mark.parametrize("name", ["out.jsonl", "out.npy"])
def test_a_missing_output_folder_is_named(cli, emu, tmp_path, name):
    source = tmp_path / "a.txt"
    source.write_text("fine\n")
    code, _, err = cli("embed", str(source), "-o", str(tmp_path / "missing" / name))
    assert code == 1
    missing = tmp_path / "missing"
    assert err == f"cached-tei: error: no such folder: {missing} (for {missing / name})\n"
    assert texts_sent(emu) == []  # found out before any work


@pytest.mark.parametrize(
    ("lines", "chunk_size"),
    [
        (['{"text": "ok"}', '{"other": "x"}'], "1"),  # the first chunk is written, then a failure
        (['{"text": "ok"}', "not json"], "10"),
    ],
)
def test_a_failed_run_leaves_the_existing_output_untouched(cli, tmp_path, lines, chunk_size):
    source = tmp_path / "docs.jsonl"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    out.write_text('{"precious": "output of an earlier run"}\n')
    code, _, err = cli("embed", str(source), "-o", str(out), "--chunk-size", chunk_size, "-q")
    assert code == 1 and "line 2" in err
    assert out.read_text() == '{"precious": "output of an earlier run"}\n'
    assert not list(tmp_path.glob("*.partial"))


def test_usage_errors_exit_2_with_one_line():
    result = run_cli("embed", "--no-such-flag", "x")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "cached-tei: error: unrecognized arguments: --no-such-flag (see cached-tei --help)"
    ]
    result = run_cli("embed", "x", "--chunk-size", "many")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        (
            "cached-tei embed: error: argument --chunk-size: invalid int value: 'many' "
            "(see cached-tei embed --help)"
        )
    ]
    assert run_cli().returncode == 2


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["cache", "prune", "--ttl", "abc"],
            "cached-tei cache prune: error: argument --ttl: Input should be a valid number, "
            "unable to parse string as a number (see cached-tei cache prune --help)",
        ),
        (
            ["embed", "x", "--timeout", "-1"],
            "cached-tei embed: error: argument --timeout: Input should be greater than 0 "
            "(see cached-tei embed --help)",
        ),
    ],
)
def test_a_bad_setting_flag_is_a_usage_error(store, args, line):
    result = run_cli(*args, "--qdrant-path", str(store))
    assert (result.returncode, result.stderr.strip().splitlines()) == (2, [line])


def test_a_bad_setting_from_the_environment_is_not_a_usage_error(store):
    result = run_cli("cache", "prune", "--qdrant-path", str(store), env={"CACHED_TEI_TTL": "abc"})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "cached-tei: error: invalid setting: ttl: Input should be a valid number, "
        "unable to parse string as a number"
    )


def test_one_entry_is_singular(cli, tmp_path):
    source = tmp_path / "one.txt"
    source.write_text("alone\n")
    assert cli("embed", str(source), "-o", str(tmp_path / "one.npy"), "-q")[0] == 0
    code, stdout, _ = cli("cache", "stats")
    [collection, total] = stdout.splitlines()
    assert collection.endswith("  1 entry") and total.startswith("1 collection, 1 entry under")
    code, stdout, _ = cli("cache", "clear", "--yes")
    assert (code, stdout.split(" from ")[0]) == (0, "removed 1 entry")


def test_help_through_the_entry_point():
    result = run_cli("--help")
    assert result.returncode == 0 and "serve" in result.stdout and "embed" in result.stdout
    assert run_cli("--version").stdout.strip() == f"cached-tei {cached_tei.__version__}"


BLOCK_PROXY_EXTRA = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("uvicorn", "httptools", "prometheus_client", "starlette"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from cached_tei.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_embed_and_cache_work_without_the_proxy_extra(emu, store, tmp_path):
    source = tmp_path / "t.txt"
    source.write_text("no extra needed\n")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", BLOCK_PROXY_EXTRA, *args],
            capture_output=True,
            text=True,
            cwd=str(REPO),
            timeout=60,
            check=False,
        )

    settings = ["--tei-url", emu.url, "--qdrant-path", str(store)]
    embedded = run("embed", str(source), "-o", str(tmp_path / "t.npy"), "-q", *settings)
    assert embedded.returncode == 0, embedded.stderr
    stats = run("cache", "stats", "--json", "--qdrant-path", str(store))
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["entries"] == 1
    serve = run("serve", *settings)
    assert serve.returncode == 1
    assert serve.stderr.strip() == (
        "cached-tei: error: cached-tei serve needs the proxy extra (starlette, uvicorn, "
        "httptools, prometheus_client not installed): pip install 'cached-tei[proxy]'"
    )
