"""A script or notebook that uses a running proxy as its cache: TEI's URL pointed at the proxy,
an in-memory store of its own, and every text the proxy has cached costs TEI nothing."""

from __future__ import annotations

import numpy as np

from cached_tei import CachedEmbedder
from tests.tei_emulator import EmulatorServer, expected_vector

from .support import FAST, ProxyServer, post, texts_sent


def test_a_script_uses_a_running_proxy_as_its_cache(
    proxy: ProxyServer, emu: EmulatorServer
) -> None:
    assert post(proxy.url + "/embed", {"inputs": ["shared one", "shared two"]}).status_code == 200
    emu.reset_log()

    texts = ["shared one", "shared two", "new"]
    with CachedEmbedder(tei_url=proxy.url, qdrant_url=":memory:") as notebook:
        result = notebook.embed(texts)
    assert texts_sent(emu) == ["new"]  # only the new text reached TEI, through the proxy
    for text, vector in zip(texts, result.vectors, strict=True):
        assert np.array_equal(vector, expected_vector(FAST, text))

    emu.reset_log()  # and the proxy now serves "new" to everyone
    again = post(proxy.url + "/embed", {"inputs": ["new"]})
    assert again.status_code == 200 and texts_sent(emu) == []
    assert np.array_equal(np.asarray(again.json()[0], np.float32), expected_vector(FAST, "new"))
