"""Keys: point ids and namespaces."""

from __future__ import annotations

import hashlib
import uuid

from cached_tei import EmbedOptions, Namespace, TEIInfo, point_id

INFO = TEIInfo.from_json({"model_id": "org/model", "model_sha": "abc123", "auto_truncate": True})


def test_point_ids_are_the_uuid_of_the_sha256_of_the_text() -> None:
    for text in ("hello", "passage: é ü 中文", "x" * 10_000):
        expected = uuid.UUID(bytes=hashlib.sha256(text.encode("utf-8")).digest()[:16])
        assert point_id(text) == str(expected)


def test_the_namespace_holds_the_effective_truncation() -> None:
    server_default = Namespace.of(INFO, EmbedOptions(truncate=None))
    explicit = Namespace.of(INFO, EmbedOptions(truncate=True))
    assert server_default == explicit
    assert server_default.collection("p") == explicit.collection("p")
    assert Namespace.of(INFO, EmbedOptions(truncate=False)).collection("p") != explicit.collection(
        "p"
    )


def test_the_instruction_is_part_of_the_text_not_the_namespace() -> None:
    plain = Namespace.of(INFO, EmbedOptions())
    instructed = Namespace.of(INFO, EmbedOptions(instruction="query: "))
    assert plain == instructed


def test_every_vector_option_and_the_model_change_the_collection() -> None:
    base = Namespace.of(INFO, EmbedOptions()).collection("cached_tei")
    variants = [
        Namespace.of(INFO, EmbedOptions(normalize=False)),
        Namespace.of(INFO, EmbedOptions(dimensions=256)),
        Namespace.of(INFO, EmbedOptions(prompt_name="query")),
        Namespace.of(INFO, EmbedOptions(truncation_direction="Left")),
        Namespace.of(TEIInfo.from_json({"model_id": "org/other"}), EmbedOptions(truncate=True)),
        Namespace.of(
            TEIInfo.from_json({"model_id": "org/model", "model_sha": "def456"}),
            EmbedOptions(truncate=True),
        ),
    ]
    collections = {variant.collection("cached_tei") for variant in variants}
    assert base not in collections and len(collections) == len(variants)
    assert base.startswith("cached_tei_")
