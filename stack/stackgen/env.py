"""The .env file: a small dotenv parser and the error every bad setting raises."""

from __future__ import annotations

import re


class ConfigError(ValueError):
    """A setting in .env is missing or invalid."""


# --------------------------------------------------------------------------------------
# .env parsing
# --------------------------------------------------------------------------------------


def parse_dotenv(text: str) -> dict[str, str]:
    """A small dotenv parser: KEY=value, optional `export`, '#' comments, quotes.

    Unquoted values end at ` #` (inline comment) and are stripped. Single-quoted values are
    literal; double-quoted values understand \\n, \\t, \\" and \\\\. No ${VAR} expansion.
    """
    out: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        if "=" not in line:
            raise ConfigError(f".env line {lineno}: expected KEY=value, got {raw!r}")
        key, value = line.split("=", 1)
        key = key.strip()
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise ConfigError(f".env line {lineno}: bad variable name {key!r}")
        value = value.strip()
        if value[:1] in ("'", '"'):
            quote = value[0]
            end = value.find(quote, 1)
            while quote == '"' and end > 0 and value[end - 1] == "\\":
                end = value.find(quote, end + 1)
            if end < 0:
                raise ConfigError(f".env line {lineno}: unterminated quote")
            inner = value[1:end]
            if quote == '"':
                inner = (
                    inner.replace("\\\\", "\0")
                    .replace("\\n", "\n")
                    .replace("\\t", "\t")
                    .replace('\\"', '"')
                    .replace("\0", "\\")
                )
            value = inner
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        out[key] = value
    return out
