"""Settings: environment variables, arguments, secrets, and the README's table."""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

import cached_tei.settings
from cached_tei import CachedEmbedder, CachedTEISettings
from cached_tei.proxy import ProxySettings

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


def test_a_misspelled_argument_is_refused_with_the_closest_setting() -> None:
    with pytest.raises(ValidationError) as refused:
        CachedEmbedder(tei_ulr="http://127.0.0.1:9", normalise=False)
    assert [(error["loc"], error["type"], error["msg"]) for error in refused.value.errors()] == [
        (("tei_ulr",), "extra_forbidden", "'tei_ulr' is not a setting; did you mean 'tei_url'?"),
        (
            ("normalise",),
            "extra_forbidden",
            "'normalise' is not a setting; did you mean 'normalize'?",
        ),
    ]
    with pytest.raises(ValidationError, match="'qdrant_pth' is not a setting; did you mean"):
        CachedTEISettings(qdrant_pth="/tmp/x")
    with pytest.raises(ValidationError, match="'batchsize' is not a setting; did you mean"):
        CachedEmbedder(CachedTEISettings(), batchsize=8)
    with pytest.raises(ValidationError) as refused:
        CachedTEISettings(colour="blue")
    assert refused.value.errors()[0]["msg"] == "'colour' is not a setting"


def test_none_leaves_a_setting_to_the_environment_then_its_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    unset = dict.fromkeys(("qdrant_path", "ttl", "api_key", "batch_size", "truncate"))
    assert CachedEmbedder(**unset).settings == CachedTEISettings()
    monkeypatch.setenv("CACHED_TEI_QDRANT_PATH", str(tmp_path / "from-env"))
    assert CachedEmbedder(qdrant_path=None).settings.qdrant_path == tmp_path / "from-env"
    # pydantic-settings' own arguments keep their meaning: _env_file=None reads no .env
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("CACHED_TEI_NORMALIZE=false\n")
    assert CachedTEISettings().normalize is False
    assert CachedTEISettings(_env_file=None).normalize is True


@pytest.fixture
def warnings_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each unknown variable is reported once per process: forget the ones reported so far."""
    monkeypatch.setattr(cached_tei.settings, "_warned", set())


def test_the_engine_own_variables_are_checked_without_loading_the_proxy(tmp_path: Path) -> None:
    """Reading CACHED_TEI_URL and the like costs no import of the other settings classes
    (milliseconds of every new process's start)."""
    import subprocess
    import sys

    code = (
        "import sys; from cached_tei import CachedTEISettings; CachedTEISettings(); "
        "print('cached_tei.proxy.settings' in sys.modules)"
    )
    env = {"CACHED_TEI_URL": "http://127.0.0.1:9", "CACHED_TEI_QDRANT_PATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False", done.stderr


def test_unknown_variables_are_reported_once_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    warnings_again: None,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "CACHED_TEI_QDRANT_PTH=/elsewhere\n"
        "CACHED_TEI_NORMALIZE=false\n"
        "CACHED_TEI_PROXY_PORT=9000\n"
        "UNRELATED_VARIABLE=1\n"
    )
    monkeypatch.setenv("CACHED_TEI_TIMEOUTT", "3")
    monkeypatch.setenv("CACHED_TEI_LOG_FORMAT", "json")
    monkeypatch.setenv("CACHED_TEI_SOAK_SECONDS", "1")
    monkeypatch.setenv("CACHED_TEI_FAULTS_REPORT", "report.json")
    for name in ProxySettings.model_fields:  # the proxy's variables are known too
        monkeypatch.setenv(f"CACHED_TEI_PROXY_{name.upper()}", "1")
    caplog.set_level(logging.WARNING, logger="cached_tei")

    settings = CachedTEISettings()
    CachedTEISettings()
    CachedEmbedder(tei_url="http://127.0.0.1:9")

    assert settings.normalize is False  # .env is read
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "cached_tei.settings",
            "WARNING",
            "CACHED_TEI_TIMEOUTT (in the environment) is not a cached-tei setting; "
            "did you mean CACHED_TEI_TIMEOUT?",
        ),
        (
            "cached_tei.settings",
            "WARNING",
            "CACHED_TEI_QDRANT_PTH (in .env) is not a cached-tei setting; "
            "did you mean CACHED_TEI_QDRANT_PATH?",
        ),
    ]


def test_construction_touches_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args[1:] or kwargs)
        raise OSError("network used at construction")

    for owner, name in (
        (socket.socket, "connect"),
        (socket.socket, "connect_ex"),
        (socket, "create_connection"),
        (socket, "getaddrinfo"),
    ):
        monkeypatch.setattr(owner, name, refuse)
    embedder = CachedEmbedder(
        tei_url="http://tei.invalid:8080", qdrant_url="http://qdrant.invalid:6333"
    )
    repr(embedder)
    embedder.close()
    assert attempts == []


def test_the_readme_documents_every_setting() -> None:
    table = README.read_text()
    documented = set(re.findall(r"^\| `(CACHED_TEI_[A-Z_]+)` \| `([a-z_]+)`", table, re.MULTILINE))
    expected = {
        ("CACHED_TEI_URL" if name == "tei_url" else f"CACHED_TEI_{name.upper()}", name)
        for name in CachedTEISettings.model_fields
    }
    assert documented == expected


def test_every_setting_has_a_description_and_says_unset_not_none() -> None:
    for name, field in CachedTEISettings.model_fields.items():
        assert field.description, f"{name} has no description"
        assert "None" not in field.description, f"{name}: say 'unset', not None"


def test_settings_declare_their_scope_and_faces_share_engines_by_it() -> None:
    from cached_tei.runtime import FACE_SETTINGS, engine_key
    from cached_tei.settings import settings_of_scope

    assert settings_of_scope("call") == {"read_cache", "write_cache"}
    assert "query_prompt_name" in settings_of_scope("vector")
    assert FACE_SETTINGS == settings_of_scope("call", "vector")
    base = CachedTEISettings()
    per_face = CachedTEISettings(dimensions=64, document_instruction="passage: ", read_cache=False)
    assert engine_key(per_face) == engine_key(base)
    assert engine_key(CachedTEISettings(lru_bytes=0)) != engine_key(base)


def test_embed_options_come_from_the_vector_settings_of_their_kind() -> None:
    from cached_tei import EmbedOptions

    settings = CachedTEISettings(
        normalize=False,
        truncate=True,
        truncation_direction="left",
        dimensions=64,
        query_prompt_name="query",
        document_prompt_name="passage",
        query_instruction="q: ",
        document_instruction="d: ",
    )
    shared = {"normalize": False, "truncate": True, "truncation_direction": "Left"}
    assert EmbedOptions.from_settings(settings, "query") == EmbedOptions(
        **shared, dimensions=64, prompt_name="query", instruction="q: "
    )
    assert EmbedOptions.from_settings(settings, "document") == EmbedOptions(
        **shared, dimensions=64, prompt_name="passage", instruction="d: "
    )


def test_a_vector_setting_without_an_option_fails_at_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cached_tei.keys

    vector = cached_tei.settings.settings_of_scope("vector")
    monkeypatch.setattr(cached_tei.keys, "settings_of_scope", lambda *scopes: vector | {"pooling"})
    with pytest.raises(TypeError, match=r"EmbedOptions a field per vector setting"):
        cached_tei.keys._check_scopes()
