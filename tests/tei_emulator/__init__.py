"""A TEI 1.9.3 emulator for tests and benchmarks (no GPU, no Docker, no network).

from tests.tei_emulator import (
    EmulatorConfig, EmulatorServer, EmulatorProcess, Fault, RecordedRequest, expected_vector,
    expected_sparse, expected_score
)
"""

from ._core import (
    EmulatorConfig,
    Fault,
    RecordedRequest,
    TEIError,
    expected_score,
    expected_sparse,
    expected_vector,
)
from .process import EmulatorProcess
from .server import EmulatorServer, build_app, nginx_html

__all__ = [
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorProcess",
    "Fault",
    "RecordedRequest",
    "TEIError",
    "expected_score",
    "expected_sparse",
    "expected_vector",
    "build_app",
    "nginx_html",
]
