"""Input checks happen before any I/O and name the offending index."""

from __future__ import annotations

import pytest

from cached_tei import InputError
from tests.tei_emulator import EmulatorServer


def test_empty_list_gives_empty_list_without_io(make_embedder, tei: EmulatorServer) -> None:
    embedder = make_embedder()
    assert embedder.embed_documents([]) == []
    assert tei.requests == []


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["ok", ""], "index 1 is empty"),
        (["ok", "fine", 3], "index 2 is int, not str"),
        (["ok", None], "index 1 is NoneType"),
        (["ok", ["nested"]], "index 1 is list"),
        (["a", "bad \ud800 surrogate"], "index 1 is not valid Unicode"),
        ("a single string", "got a single string"),
        (b"bytes", "got a single string"),
    ],
)
def test_bad_texts_are_refused_before_any_request(
    make_embedder, tei: EmulatorServer, texts: object, message: str
) -> None:
    embedder = make_embedder()
    with pytest.raises(InputError, match=message):
        embedder.embed_documents(texts)  # type: ignore[arg-type]
    assert tei.requests == []


def test_query_must_be_one_string(make_embedder, tei: EmulatorServer) -> None:
    embedder = make_embedder()
    with pytest.raises(InputError, match="expected one string, got list"):
        embedder.embed_query(["a list"])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="index 0 is empty"):
        embedder.embed_query("")
    assert tei.requests == []


def test_input_error_is_a_value_error(make_embedder) -> None:
    with pytest.raises(ValueError):
        make_embedder().embed_documents([1])  # type: ignore[list-item]


def test_whitespace_only_and_nul_texts_are_embedded(make_embedder, tei: EmulatorServer) -> None:
    vectors = make_embedder().embed_documents(["   ", "nul\x00byte"])
    assert len(vectors) == 2
    assert [r.texts for r in tei.requests] == [["   ", "nul\x00byte"]]
