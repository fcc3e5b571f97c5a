"""python -m tests.tei_emulator --port P [--host H] [--config-json '{...}']"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from ._core import EmulatorConfig
from .server import EmulatorState, serve


async def _main(config: EmulatorConfig, host: str, port: int) -> None:
    state = EmulatorState(config)
    runner, bound = await serve(state, host, port)
    print(f"tei-emulator listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tests.tei_emulator")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--config-json", default="", help="EmulatorConfig fields as a JSON object")
    args = ap.parse_args(argv)
    config = EmulatorConfig.from_json(args.config_json)
    asyncio.run(_main(config, args.host, args.port))


if __name__ == "__main__":
    main(sys.argv[1:])
