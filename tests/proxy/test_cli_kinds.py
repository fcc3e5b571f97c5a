"""``cached-tei embed --sparse`` and ``cache stats`` listing each collection's kind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from cached_tei import CachedReranker
from cached_tei.cli import main
from tests.tei_emulator import EmulatorServer, expected_sparse

from .support import FAST

pytestmark = pytest.mark.usefixtures("logging_restored")

SPLADE = replace(FAST, model_id="emulator/splade", model_type="splade")
RERANKER = replace(FAST, model_id="emulator/reranker", model_type="reranker")


@pytest.fixture
def splade() -> Iterator[EmulatorServer]:
    with EmulatorServer(SPLADE) as server:
        yield server


def test_embed_sparse_writes_exact_sparse_vectors_then_reads_the_cache(splade, tmp_path, capsys):
    texts = [f"sparse line {i}" for i in range(7)]
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(texts) + "\n")
    out = tmp_path / "sparse.jsonl"
    store = ["--qdrant-path", str(tmp_path / "q"), "--sparse-url", splade.url]
    for _ in range(2):
        assert main(["embed", "--sparse", str(source), "-o", str(out), *store]) == 0
    assert splade.sparse_texts_computed == len(texts)  # the second run read the cache
    assert "7 cache hits, 0 computed by TEI" in capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["text"] for row in rows] == texts
    for row, text in zip(rows, texts, strict=True):
        indices, values = expected_sparse(SPLADE, text)
        assert row["embedding"]["indices"] == indices
        assert np.array_equal(np.asarray(row["embedding"]["values"], np.float32), values)


def test_embed_sparse_refuses_npy_and_an_unset_url(tmp_path, capsys):
    source = tmp_path / "c.txt"
    source.write_text("a\n")
    store = ["--qdrant-path", str(tmp_path / "q")]
    assert main(["embed", "--sparse", str(source), "-o", str(tmp_path / "v.npy"), *store]) == 1
    assert "sparse vectors have no .npy form" in capsys.readouterr().err
    assert main(["embed", "--sparse", str(source), "-q", *store]) == 1
    assert "CACHED_TEI_SPARSE_URL is not set" in capsys.readouterr().err


def test_cache_stats_lists_the_kind_of_each_collection(emu, splade, tmp_path, capsys):
    store = tmp_path / "q"
    source = tmp_path / "c.txt"
    source.write_text("one\ntwo\n")
    common = ["--qdrant-path", str(store)]
    assert (
        main(
            [
                "embed",
                str(source),
                "-q",
                "--tei-url",
                emu.url,
                "-o",
                str(tmp_path / "d.npy"),
                *common,
            ]
        )
        == 0
    )
    assert main(["embed", "--sparse", str(source), "-q", "--sparse-url", splade.url, *common]) == 0
    capsys.readouterr()
    with EmulatorServer(RERANKER) as reranker:
        with CachedReranker(rerank_url=reranker.url, qdrant_path=store) as ranker:
            ranker.rerank("q", ["one", "two", "three"], raw_scores=True)
    assert main(["cache", "stats", "--json", *common]) == 0
    body = json.loads(capsys.readouterr().out)
    kinds = sorted((c["kind"], c["count"]) for c in body["collections"])
    assert kinds == [("embedding", 2), ("rerank", 3), ("sparse", 2)]
    assert main(["cache", "stats", *common]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(" sparse  emulator/splade  " in line for line in lines)
    assert any(
        " rerank  emulator/reranker  scores  " in line and "raw_scores=True" in line
        for line in lines
    )
