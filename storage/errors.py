"""Storage errors with a stable ``code`` and the ``params`` that explain them.

The English text is for logs and the command line; the bot localizes from ``code`` and
``params`` (the same shape as ``generation.errors.BrushworkError``, without importing it).
"""

from __future__ import annotations

from typing import Any


class StorageError(Exception):
    """Base class for every error raised on purpose by :mod:`storage`."""

    code: str = "storage.error"

    def __init__(self, message: str, /, **params: Any) -> None:
        self.params = params
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self)

    def __reduce__(self):  # keeps subclasses with other signatures picklable
        return (_rebuild, (type(self), str(self), self.params))


def _rebuild(cls: type[StorageError], message: str, params: dict[str, Any]) -> StorageError:
    error = cls.__new__(cls)
    error.params = params
    Exception.__init__(error, message)
    for key, value in params.items():
        setattr(error, key, value)
    return error


class NotFound(StorageError, LookupError):
    """The thing does not exist, or the caller may not know that it exists.

    Raised identically in both cases, so that an id from another server reveals nothing.
    """

    code = "storage.not_found"

    def __init__(self, kind: str, ident: object) -> None:
        self.kind = kind
        self.ident = ident
        super().__init__(f"No {kind} {ident!r}.", kind=kind, ident=ident)


class PermissionDenied(StorageError, PermissionError):
    """The caller can see the thing but may not do this to it."""

    code = "storage.permission_denied"

    def __init__(self, kind: str, ident: object, action: str) -> None:
        self.kind = kind
        self.ident = ident
        self.action = action
        super().__init__(
            f"You may not {action} {kind} {ident!r}: only its owner or a manager can.",
            kind=kind,
            ident=ident,
            action=action,
        )


class InvalidValue(StorageError, ValueError):
    """An argument is outside what storage accepts (unknown status, bad limit…)."""

    code = "storage.invalid_value"

    def __init__(self, name: str, value: object, allowed: str) -> None:
        self.name = name
        self.value = value
        self.allowed = allowed
        super().__init__(
            f"{name} {value!r} is not valid; allowed: {allowed}.", name=name, value=value, allowed=allowed
        )


class NameTaken(StorageError):
    """A dataset or LoRA of that name already exists where the caller names things."""

    code = "storage.name_taken"

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"A {kind} named {name!r} already exists here.", kind=kind, name=name)


class StaleState(StorageError):
    """A conditional update found the row in another state than expected (another writer won)."""

    code = "storage.stale_state"

    def __init__(self, kind: str, ident: object, expected: str, actual: str) -> None:
        self.kind = kind
        self.ident = ident
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{kind} {ident!r} is {actual}, not {expected}.",
            kind=kind,
            ident=ident,
            expected=expected,
            actual=actual,
        )


class UnsafePath(StorageError, ValueError):
    """A relative file path would leave the storage root, or is not a plain relative path."""

    code = "storage.unsafe_path"

    def __init__(self, path: object) -> None:
        self.path = path
        super().__init__(f"Refusing path {path!r}: it must be a relative path inside the store.", path=path)


class FileExists(StorageError, FileExistsError):
    """The target of a write already exists; stored files are never overwritten."""

    code = "storage.file_exists"

    def __init__(self, path: object) -> None:
        self.path = path
        super().__init__(f"A stored file already exists at {path!r}.", path=path)


class IdsExhausted(StorageError):
    """No free public id was found after several tries (practically impossible unless ids are forced)."""

    code = "storage.ids_exhausted"

    def __init__(self, kind: str, attempts: int) -> None:
        self.kind = kind
        self.attempts = attempts
        super().__init__(
            f"No free public id for a new {kind} after {attempts} tries.", kind=kind, attempts=attempts
        )


class SchemaError(StorageError):
    """The database schema cannot be found, read or upgraded."""

    code = "storage.schema"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"Database schema problem: {reason}", reason=reason)
