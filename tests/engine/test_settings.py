"""Settings: environment variables, arguments, secrets, and the README's table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from cached_tei import CachedEmbedder, CachedTEISettings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_zero_arguments_mean_local_tei_and_an_embedded_store(tmp_path: Path) -> None:
    settings = CachedTEISettings()
    assert settings.tei_url == "http://localhost:8080"
    assert settings.qdrant_url is None
    assert settings.qdrant_path == tmp_path / "xdg-cache" / "cached-tei" / "qdrant"


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHED_TEI_URL", "http://nginx:80/")
    monkeypatch.setenv("CACHED_TEI_API_KEY", "tei-secret")
    monkeypatch.setenv("CACHED_TEI_TTL", "3600")
    monkeypatch.setenv("CACHED_TEI_TRUNCATE", "")
    monkeypatch.setenv("CACHED_TEI_TRUNCATION_DIRECTION", "left")
    monkeypatch.setenv("CACHED_TEI_QDRANT_URL", "http://qdrant:6333")
    settings = CachedTEISettings()
    assert settings.tei_url == "http://nginx:80"
    assert settings.api_key == SecretStr("tei-secret")
    assert settings.ttl == 3600
    assert settings.truncate is None
    assert settings.truncation_direction == "Left"
    assert settings.qdrant_url == "http://qdrant:6333"


def test_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHED_TEI_URL", "http://from-env:80")
    embedder = CachedEmbedder(tei_url="http://from-argument:80", normalize=False)
    assert embedder.settings.tei_url == "http://from-argument:80"
    assert embedder.settings.normalize is False
    overridden = CachedEmbedder(embedder.settings, batch_size=8)
    assert overridden.settings.tei_url == "http://from-argument:80"
    assert overridden.settings.batch_size == 8


def test_secrets_stay_out_of_reprs() -> None:
    settings = CachedTEISettings(api_key="tei-secret", qdrant_api_key="qdrant-secret")
    for text in (repr(settings), str(settings), repr(CachedEmbedder(settings))):
        assert "tei-secret" not in text and "qdrant-secret" not in text


def test_bad_values_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValidationError, match="tei_url must start with http"):
        CachedTEISettings(tei_url="localhost:8080")
    with pytest.raises(ValidationError, match="max_concurrency"):
        CachedTEISettings(max_concurrency=0)


def test_construction_touches_no_network() -> None:
    # Nothing listens on port 9; construction must not notice.
    embedder = CachedEmbedder(tei_url="http://127.0.0.1:9", qdrant_url="http://127.0.0.1:9")
    assert embedder._lease.engine is None


def test_the_readme_documents_every_setting() -> None:
    table = README.read_text()
    documented = set(re.findall(r"^\| `(CACHED_TEI_[A-Z_]+)` \| `([a-z_]+)`", table, re.MULTILINE))
    expected = {
        ("CACHED_TEI_URL" if name == "tei_url" else f"CACHED_TEI_{name.upper()}", name)
        for name in CachedTEISettings.model_fields
    }
    assert documented == expected
