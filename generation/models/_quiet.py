"""Silence library chatter that is noise for Brushwork users, only while we call in.

transformers warns that torchvision is missing (Brushwork never uses its image processors),
diffusers warns about scheduler configs of models built in code, and both draw progress
bars while loading.  Levels and progress-bar settings are restored on exit, so a host
application's logging stays its own.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

# (module, is-enabled, disable, enable) of each library's global progress-bar switch
_BARS = (
    ("diffusers.utils.logging", "is_progress_bar_enabled", "disable_progress_bar", "enable_progress_bar"),
    ("transformers.utils.logging", "is_progress_bar_enabled", "disable_progress_bar", "enable_progress_bar"),
    ("huggingface_hub.utils", "are_progress_bars_disabled", "disable_progress_bars", "enable_progress_bars"),
)


@contextmanager
def _bars_off() -> Iterator[None]:
    restore = []
    for module_name, query, disable, enable in _BARS:
        try:
            module = importlib.import_module(module_name)
            state = getattr(module, query)()
        except (ImportError, AttributeError):
            continue
        enabled = not state if query.startswith("are_") else bool(state)
        if enabled:
            getattr(module, disable)()
            restore.append(getattr(module, enable))
    try:
        yield
    finally:
        for enable in restore:
            enable()


def _library_logging() -> list:
    """The libraries' own logging modules: their verbosity setters configure the root logger
    first (done lazily, on first use, which would otherwise reset a level set beforehand)."""
    modules = []
    for name in ("diffusers.utils.logging", "transformers.utils.logging"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:  # pragma: no cover - both come with the engine's dependencies
            continue
    return modules


@contextmanager
def quiet_libraries() -> Iterator[None]:
    libraries = _library_logging()
    saved_verbosity = [(lib, lib.get_verbosity()) for lib in libraries]
    hub = logging.getLogger("huggingface_hub")
    saved_hub = hub.level
    try:
        for lib in libraries:
            lib.set_verbosity(logging.ERROR)
        hub.setLevel(logging.ERROR)
        with ExitStack() as stack:
            stack.enter_context(warnings.catch_warnings())
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*torchvision.*")
            stack.enter_context(_bars_off())
            yield
    finally:
        for lib, level in saved_verbosity:
            lib.set_verbosity(level)
        hub.setLevel(saved_hub)
