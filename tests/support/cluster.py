"""TEI emulator processes behind the real nginx running the stack's configuration."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.tei_emulator import EmulatorConfig, EmulatorProcess

from .nginx import Nginx, nginx_binary, stack_settings, start_nginx


class EmulatorCluster:
    """``replicas`` emulator processes and one nginx (its files under ``workdir``).

    ``stack_env`` overrides ``.env.example`` values (e.g. ``NGINX_FAIL_TIMEOUT="2s"``)."""

    def __init__(
        self,
        workdir: Path,
        replicas: int = 3,
        config: EmulatorConfig | None = None,
        **stack_env: str,
    ) -> None:
        self.workdir = workdir
        self.config = config or EmulatorConfig()
        self.replicas = [EmulatorProcess(self.config) for _ in range(replicas)]
        self.stack_env = stack_env
        self.nginx: Nginx | None = None

    def start(self) -> EmulatorCluster:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx not found: install Debian's nginx (apt-get install nginx)")
        try:
            for replica in self.replicas:
                replica.start()
            settings = stack_settings(len(self.replicas), **self.stack_env)
            upstreams = [f"127.0.0.1:{r.port}" for r in self.replicas]
            self.nginx = start_nginx(upstreams, self.workdir, settings, binary)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def url(self) -> str:
        assert self.nginx is not None, "start() the cluster first"
        return self.nginx.url

    def pids(self) -> list[int]:
        """The replicas' and nginx's process ids (for CPU accounting)."""
        pids = [r.pid for r in self.replicas if r.pid]
        if self.nginx is not None:
            pids.append(self.nginx.pid)
        return pids

    def served(self) -> list[int]:
        """Embed requests each replica answered with 200 (0 for a dead one)."""
        out = []
        for r in self.replicas:
            try:
                out.append(sum(1 for q in r.requests() if q.status == 200))
            except (httpx.HTTPError, AttributeError):
                out.append(0)
        return out

    def statuses(self) -> list[int]:
        """Every status the live replicas answered, replica by replica."""
        out: list[int] = []
        for r in self.replicas:
            try:
                out.extend(q.status for q in r.requests())
            except httpx.HTTPError:
                pass
        return out

    def texts_computed(self) -> int:
        return sum(r.embed_texts_computed for r in self.replicas)

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for r in self.replicas:
            r.kill()

    def __enter__(self) -> EmulatorCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
