"""A separate process that embeds through the engine, for the multi-process and crash tests.

    python -m tests.faults._worker TEI_URL STORE PREFIX CALLS PER_CALL [--forever]

STORE is a folder (embedded store) or an http:// URL (server store). Texts are
``f"{PREFIX} {i}"`` for overlapping windows, so several workers share some of them. Prints
``ready`` once, then ``done N`` after each call; with --forever it loops until killed.
"""

from __future__ import annotations

import sys

from cached_tei import CachedEmbedder


def main(argv: list[str]) -> int:
    tei_url, store, prefix, calls, per_call = argv[:5]
    forever = "--forever" in argv
    options: dict[str, object] = {"tei_url": tei_url, "write_batch_size": 64}
    if store.startswith("http"):
        options["qdrant_url"] = store
    else:
        options["qdrant_path"] = store
    embedder = CachedEmbedder(**options)
    print("ready", flush=True)
    i = 0
    while forever or i < int(calls):
        start = (i * int(per_call)) // 2  # windows overlap by half
        texts = [f"{prefix} {start + j}" for j in range(int(per_call))]
        embedder.embed(texts)
        i += 1
        print(f"done {i}", flush=True)
    embedder.close()
    print("closed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
