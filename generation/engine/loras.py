"""LoRAs: finding them by name, and applying them to one call only.

The engine asks a :class:`LoraResolver` for each ``--lora name:weight``; the resolver
decides what a name means (a server's own LoRAs, a shared folder…) and gives the file and
its A1111 short hash.  :class:`FolderLoraResolver` is the simple one: every
``*.safetensors`` in a folder, by file name.

:func:`check_lora` reads a LoRA's header before anything is loaded, so a kind the engine
cannot apply is refused before the base model is.  :func:`applied_loras` loads each LoRA as
a named PEFT adapter, sets the weights, and *always* unloads everything in ``finally``: the
pipelines are shared by every request, and a LoRA left behind would silently change the
next user's images.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from generation.errors import ModelError
from generation.models._quiet import quiet_libraries
from generation.models.hashing import FileHasher

LORA_SUFFIX = ".safetensors"  # pickled LoRAs (.pt/.ckpt) can run code: never loaded


@dataclass(frozen=True, slots=True)
class ResolvedLora:
    name: str
    path: Path
    short_hash: str  # A1111 "Lora hashes" value (12 hex digits)


@runtime_checkable
class LoraResolver(Protocol):
    """What the engine needs to know about LoRAs: which exist, and where one is."""

    def resolve(self, name: str) -> ResolvedLora | tuple[Path | str, str]:
        """The LoRA's file and short hash; an unknown name raises ModelError listing the known ones."""
        ...

    def names(self) -> list[str]: ...


LoraResolverLike = LoraResolver | Callable[[str], ResolvedLora | tuple[Path | str, str]]


def unknown_lora(name: str, known: Sequence[str]) -> ModelError:
    known = sorted(known)
    close = get_close_matches(name.lower(), [k.lower() for k in known], n=1, cutoff=0.5)
    suggestion = next((k for k in known if close and k.lower() == close[0]), "")
    if not known:
        return ModelError("model.no_loras", name=name)
    return ModelError("model.unknown_lora_suggest" if suggestion else "model.unknown_lora",
                      name=name, known=known, suggestion=suggestion)


class FolderLoraResolver:
    """Every ``*.safetensors`` file in ``folder`` is a LoRA named after its file (case-insensitive)."""

    def __init__(self, folder: Path | str, *, cache_dir: Path | str | None = None,
                 hasher: FileHasher | None = None) -> None:
        self.folder = Path(folder).expanduser()
        self.hasher = hasher or FileHasher(cache_dir)

    def _files(self) -> dict[str, Path]:
        if not self.folder.is_dir():
            return {}
        return {p.stem: p for p in sorted(self.folder.iterdir())
                if p.is_file() and p.name.lower().endswith(LORA_SUFFIX)}

    def names(self) -> list[str]:
        return sorted(self._files())

    def resolve(self, name: str) -> ResolvedLora:
        files = self._files()
        path = files.get(name) or next((p for stem, p in files.items() if stem.casefold() == name.casefold()), None)
        if path is None:
            raise unknown_lora(name, list(files))
        return ResolvedLora(name=name, path=path, short_hash=self.hasher.lora_hash(path))


def resolve_lora(resolver: LoraResolverLike | None, name: str) -> ResolvedLora:
    """Ask a resolver (object with ``resolve`` or a plain callable) and normalise the answer."""
    if resolver is None:
        raise ModelError("model.no_loras", name=name)
    lookup: Callable[[str], ResolvedLora | tuple[Path | str, str]] = (
        resolver.resolve if isinstance(resolver, LoraResolver) else resolver)
    try:
        found = lookup(name)
    except ModelError:
        raise
    except (KeyError, LookupError, FileNotFoundError):
        names = list(resolver.names()) if hasattr(resolver, "names") else []
        raise unknown_lora(name, names) from None
    if isinstance(found, ResolvedLora):
        return found
    path, short_hash = found
    return ResolvedLora(name=name, path=Path(path), short_hash=str(short_hash))


def check_lora(lora: ResolvedLora) -> None:
    """What can be refused from the file's header alone, before the base model is loaded: a
    pickle, a missing file, a LoRA kind the engine cannot apply (LyCORIS LoHa/LoKr, DoRA…:
    :class:`~generation.training.errors.LoraFileError` ``lora.unsupported_kind``)."""
    from generation.training.lora_files import check_lora_file

    if lora.path.suffix.lower() != LORA_SUFFIX:
        raise ModelError("model.pickle_refused", name=lora.name, path=str(lora.path))
    if not lora.path.is_file():
        raise ModelError("model.lora_missing", name=lora.name, path=str(lora.path))
    check_lora_file(lora.path, name=lora.name, max_bytes=None)


class LoraStateCache:
    """The last few LoRA files read into memory, so a popular LoRA is not re-read per image."""

    def __init__(self, max_items: int = 4) -> None:
        self.max_items = max_items
        self._items: OrderedDict[tuple[str, int, int], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, lora: ResolvedLora) -> dict[str, Any]:
        path = lora.path
        if path.suffix.lower() != LORA_SUFFIX:
            raise ModelError("model.pickle_refused", name=lora.name, path=str(path))
        try:
            stat = path.stat()
        except OSError:
            raise ModelError("model.lora_missing", name=lora.name, path=str(path)) from None
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # a damaged file: say which one
            raise ModelError("model.lora_load_failed", name=lora.name, detail=str(exc)[:300]) from None
        with self._lock:
            self._items[key] = state
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return state


@contextmanager
def applied_loras(pipe: Any, loras: Sequence[tuple[ResolvedLora, float]], states: LoraStateCache
                  ) -> Iterator[None]:
    """Load ``loras`` (with weights) into ``pipe`` for the duration of the block, then remove them."""
    adapters: list[str] = []
    touched = False
    try:
        for index, (lora, _weight) in enumerate(loras):
            adapter = f"brushwork_{index}"  # user names may hold dots, which PEFT adapters cannot
            state = states.load(lora)
            touched = True
            try:
                with quiet_libraries():
                    pipe.load_lora_weights(dict(state), adapter_name=adapter)
            except (ValueError, KeyError, RuntimeError, TypeError) as exc:
                raise ModelError("model.lora_load_failed", name=lora.name, detail=str(exc)[:300]) from None
            adapters.append(adapter)
        if adapters:
            pipe.set_adapters(adapters, adapter_weights=[float(w) for _, w in loras])
        yield
    finally:
        if touched:
            with quiet_libraries():
                pipe.unload_lora_weights()
