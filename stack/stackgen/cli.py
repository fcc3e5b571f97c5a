"""The command line: write the generated files, or check that they are up to date."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .compose import render_compose
from .constants import STACK_DIR
from .env import ConfigError
from .kubernetes import render_kubernetes
from .nginx import render_nginx_conf
from .prometheus import render_prometheus_config
from .safety import refusal
from .settings import Settings, load_settings


def generate(settings: Settings) -> dict[str, str]:
    """File name -> content."""
    return {
        "compose.yml": render_compose(settings),
        "nginx.conf": render_nginx_conf(settings),
        "prometheus.yml": render_prometheus_config(settings),
        **render_kubernetes(settings),
    }


def _stale(files: dict[str, str], out: Path) -> list[str]:
    """The generated files under `out` that are missing or differ from `files`."""
    stale = []
    for name, content in files.items():
        path = out / name
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            stale.append(str(path))
    return stale


def _write(files: dict[str, str], out: Path) -> None:
    for name, content in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    """`python stack/generate.py [--env stack/.env] [--out stack/] [--check]`."""
    ap = argparse.ArgumentParser(
        description="Generate the stack's files (compose, nginx, Prometheus, Kubernetes) from .env."
    )
    ap.add_argument("--env", help="env file (default: stack/.env, else stack/.env.example)")
    ap.add_argument("--out", default=str(STACK_DIR), help="output folder (default: stack/)")
    ap.add_argument("--check", action="store_true", help="exit 1 if the files in --out differ")
    args = ap.parse_args(argv)
    try:
        settings = load_settings(args.env)
    except (ConfigError, OSError) as exc:
        print(f"generate.py: {exc}", file=sys.stderr)
        return 2
    refused = refusal(settings)
    if refused:
        print(f"generate.py: refused: {refused}", file=sys.stderr)
        return 1
    files, out = generate(settings), Path(args.out)
    if not args.check:
        _write(files, out)
        return 0
    stale = _stale(files, out)
    if stale:
        print("out of date (run python stack/generate.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0
