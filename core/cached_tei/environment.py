"""How every cached-tei settings class reads ``CACHED_TEI_*`` variables (and ``.env``).

A module of its own, below every settings class, so that ``settings`` can list the variables
the proxy's and the logs' settings read without an import circle.
"""

from __future__ import annotations

from pydantic import AliasChoices
from pydantic_settings import BaseSettings, SettingsConfigDict


def environment_settings(prefix: str, *, populate_by_name: bool = False) -> SettingsConfigDict:
    """The configuration every cached-tei settings class shares: variables named
    ``<prefix><FIELD>``, read from the environment and ``.env``, frozen once built."""
    return SettingsConfigDict(
        env_prefix=prefix,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=populate_by_name,
    )


def environment_variable(model: type[BaseSettings], name: str) -> str:
    """The variable a settings field reads (``tei_url``: ``CACHED_TEI_URL``)."""
    prefix = model.model_config.get("env_prefix", "")
    alias = model.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        for choice in alias.choices:
            if isinstance(choice, str) and choice.upper().startswith(prefix.upper()):
                return choice.upper()
    return f"{prefix}{name}".upper()
