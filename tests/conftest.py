"""Fixtures shared across the test tree.

``tiny_engine``: an :class:`~generation.engine.Engine` on the built-in tiny model (random
weights, built in code, no download), on the CPU, built once per session.  Tests that
change an engine's state (LoRAs, tiling) must leave it as they found it, which the engine
itself guarantees and the engine tests check.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_engine():
    from generation.engine import Engine
    from generation.models import ModelRegistry

    return Engine(ModelRegistry(), device="cpu")
