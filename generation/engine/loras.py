"""LoRAs: finding them by name, and applying them to one call only.

The engine asks a :class:`LoraResolver` for each ``--lora name:weight``; the resolver
decides what a name means (a server's own LoRAs, a shared folder…) and gives the file and
its A1111 short hash.  :class:`FolderLoraResolver` is the simple one: every
``*.safetensors`` in a folder, by file name.

:func:`check_lora` reads a LoRA's header before anything is loaded, so a kind the engine
cannot apply is refused before the base model is.  :class:`LoraVerdicts` then judges a file
as an import is judged — every weight a finite number, every key a layer of the base model
with a shape that fits it — once per file content (sha256) and base model, remembered in
the cache folder, so a bad file in the operator's folder is refused with one line (at
planning, when the verdict is known or the model is loaded there) instead of failing inside
diffusers.  :func:`applied_loras` loads each LoRA as
a named PEFT adapter, sets the weights, and *always* unloads everything in ``finally``: the
pipelines are shared by every request, and a LoRA left behind would silently change the
next user's images.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from generation.errors import BrushworkError, ModelError
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


VERDICTS_FILE = "lora-verdicts.json"
VERDICTS_VERSION = 1
_ACCEPTED = "ok"
_NOT_REMEMBERED = frozenset({"lora.unreadable"})  # the file could not be read this time: not a verdict on it


class LoraVerdicts:
    """What was decided about LoRA files, by the sha256 of the file (and the base model's hash).

    Two verdicts per file: its own (a sound header, a kind the engine applies, finite
    weights: :func:`~generation.training.lora_files.check_lora_values`) and, per base model,
    whether its keys and shapes fit that model
    (:func:`~generation.training.lora_files.inspect_lora`).  A refusal is kept as its error's
    code and parameters and raised again as the same one-line error, without reading the file
    again.  ``cache_dir=None``: this process only; otherwise a JSON file any process reads
    (a file is named by its content, so a verdict never goes stale).
    """

    def __init__(self, cache_dir: Path | str | None = None) -> None:
        self._file = Path(cache_dir).expanduser() / VERDICTS_FILE if cache_dir is not None else None
        self._lock = threading.Lock()
        self._entries: dict[str, Any] = {}
        self.judged = 0  # how many verdicts were really computed (the tests read it)

    def check_file(self, path: Path, sha256: str, *, name: str) -> None:
        """The verdict on the file alone (raises its refusal)."""
        def judge() -> None:
            from generation.training.lora_files import check_lora_file, check_lora_values

            header = check_lora_file(path, name=name, max_bytes=None)
            check_lora_values(path, name=name, header=header)

        self._verdict(sha256, name, judge)

    def check_model(self, path: Path, sha256: str, *, name: str, model_hash: str, model: Any) -> None:
        """The verdict on the file against a loaded base model (raises its refusal)."""
        def judge() -> None:
            from generation.training.lora_files import inspect_lora

            inspect_lora(path, model, max_bytes=1 << 62, name=name)

        self._verdict(f"{sha256}@{model_hash}", name, judge)

    def known_model_verdict(self, sha256: str, *, name: str, model_hash: str) -> bool:
        """Raise a refusal remembered for this file and model; True when it was accepted."""
        return self._remembered(f"{sha256}@{model_hash}", name)

    def has_model_verdicts(self, sha256: str) -> bool:
        """Whether this file was judged against some model (then its hash is worth computing)."""
        prefix = f"{sha256}@"
        with self._lock:
            if any(key.startswith(prefix) for key in self._entries):
                return True
            return any(key.startswith(prefix) for key in self._read())

    # -- internals ------------------------------------------------------------------------
    def _verdict(self, key: str, name: str, judge: Callable[[], None]) -> None:
        if self._remembered(key, name):
            return
        try:
            judge()
        except BrushworkError as error:
            if error.code not in _NOT_REMEMBERED:
                self._store(key, {"code": error.code, "params": _json_params(error.params),
                                  "type": type(error).__name__})
            raise
        self._store(key, _ACCEPTED)

    def _remembered(self, key: str, name: str) -> bool:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._read().get(key)
                if entry is not None:
                    self._entries[key] = entry
        if entry == _ACCEPTED:
            return True
        if not isinstance(entry, dict) or not isinstance(entry.get("code"), str):
            return False  # none, or a damaged entry: judged again
        raise _refusal(entry, name)

    def _store(self, key: str, entry: Any) -> None:
        with self._lock:
            self.judged += 1
            self._entries[key] = entry
            if self._file is None:
                return
            entries = self._read()
            entries[key] = entry
            try:
                self._file.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".lora-verdicts-", suffix=".json", dir=self._file.parent)
                try:
                    with os.fdopen(fd, "w", encoding="utf-8") as handle:
                        json.dump({"version": VERDICTS_VERSION, "entries": entries}, handle, sort_keys=True)
                    os.replace(tmp, self._file)  # atomic: other processes read a whole file or the old one
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
            except OSError:
                pass  # a read-only cache folder only costs a second look at the file

    def _read(self) -> dict[str, Any]:
        if self._file is None or not self._file.is_file():
            return {}
        try:
            data = json.loads(self._file.read_text("utf-8"))
        except (OSError, ValueError):
            return {}  # a damaged cache only costs a second look
        entries = data.get("entries") if isinstance(data, dict) and data.get("version") == VERDICTS_VERSION else None
        return dict(entries) if isinstance(entries, dict) else {}


def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    """An error's parameters as JSON keeps them (lists stay lists: the message renders them alike)."""
    def plain(value: Any) -> Any:
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        return str(value)

    return {key: plain(value) for key, value in params.items()}


def _refusal(entry: dict[str, Any], name: str) -> BrushworkError:
    """A remembered refusal, as the error it was (named as this request names the LoRA)."""
    from generation.training.errors import LoraFileError

    params = dict(entry.get("params") or {})
    if "name" in params:
        params["name"] = name
    cls = LoraFileError if entry.get("type") == "LoraFileError" else ModelError
    return cls(entry["code"], **params)


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
            raise ModelError("model.lora_load_failed", name=lora.name, detail=_one_line(exc)) from None
        with self._lock:
            self._items[key] = state
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return state


def _one_line(error: BaseException, limit: int = 300) -> str:
    """A library's message as one line of at most ``limit`` characters (torch's span dozens)."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
                raise ModelError("model.lora_load_failed", name=lora.name, detail=_one_line(exc)) from None
            adapters.append(adapter)
        if adapters:
            try:
                pipe.set_adapters(adapters, adapter_weights=[float(w) for _, w in loras])
            except (ValueError, KeyError, RuntimeError, TypeError) as exc:  # a file none of whose keys applied
                names = ", ".join(lora.name for lora, _ in loras)
                raise ModelError("model.lora_load_failed", name=names, detail=_one_line(exc)) from None
        yield
    finally:
        if touched:
            with quiet_libraries():
                pipe.unload_lora_weights()
