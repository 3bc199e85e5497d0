"""What a server's settings allow, checked wherever something is generated in that server.

Pure functions on a :class:`~storage.records.GuildSettingsRecord` (no Discord, no database), so
``/imagine``, ``/compare`` and every button that queues work apply the same rules:

* :func:`channel_allowed` / :func:`check_channel` — the channel allow-list set with
  ``/server settings channels`` (``channels["allowed"]``, channel ids as text; empty or absent =
  every channel).  A thread follows its parent channel.  Direct messages are no server's
  business: callers pass no record there.
* :func:`check_model` — ``allowed_models`` (``None`` = every model).
* :func:`guard_request` — :func:`check_model`, then, outside age-restricted channels, the
  server's safety policy (a banned word refuses the request; the forced negative prompt is
  added).

Every refusal is a :class:`~generation.errors.BrushworkError` whose text (``server.*`` in
``bot/locales``) says what the server allows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from generation.errors import BrushworkError, RequestError
from generation.safety import SafetyPolicy, apply_policy

if TYPE_CHECKING:
    from generation.request import Request
    from storage.records import GuildSettingsRecord

#: The key of the channel allow-list inside ``GuildSettingsRecord.channels``.
ALLOWED_CHANNELS_KEY = "allowed"
#: At most this many channels on the allow-list.
MAX_CHANNELS = 50


def allowed_channels(record: GuildSettingsRecord | None) -> tuple[int, ...]:
    """The channel allow-list (empty: generation is allowed in every channel)."""
    if record is None:
        return ()
    values = (record.channels or {}).get(ALLOWED_CHANNELS_KEY) or ()
    out: list[int] = []
    for value in values if isinstance(values, list | tuple) else ():
        try:
            out.append(int(value))
        except (TypeError, ValueError):
            continue  # a hand-edited row: ignore what is not an id
    return tuple(dict.fromkeys(out))


def channel_allowed(record: GuildSettingsRecord | None, channel_id: int | None, *,
                    parent_id: int | None = None) -> bool:
    """May images be made in ``channel_id`` (a thread: in its parent ``parent_id``)?

    ``record`` is the server's settings, ``None`` in direct messages (always allowed).
    """
    allowed = allowed_channels(record)
    if not allowed:
        return True
    return (channel_id is not None and channel_id in allowed) or (parent_id is not None and parent_id in allowed)


def check_channel(record: GuildSettingsRecord | None, channel_id: int | None, *,
                  parent_id: int | None = None) -> None:
    """:func:`channel_allowed`, or a ``server.channel_not_allowed`` error naming the allowed channels."""
    if not channel_allowed(record, channel_id, parent_id=parent_id):
        raise BrushworkError("server.channel_not_allowed", channels=channel_mentions(allowed_channels(record)))


def channel_mentions(ids: Iterable[int]) -> list[str]:
    return [f"<#{channel_id}>" for channel_id in ids]


def check_model(record: GuildSettingsRecord | None, model: str | None) -> None:
    """Refuse a model the server does not allow (``allowed_models`` None: every model is allowed)."""
    if record is None or record.allowed_models is None or model is None:
        return
    if model not in record.allowed_models:
        raise RequestError("server.model_not_allowed", model=model, allowed=sorted(record.allowed_models) or ["—"])


def safety_policy(record: GuildSettingsRecord | None) -> SafetyPolicy:
    return SafetyPolicy.from_dict(record.safety if record is not None else None)


def guard_request(record: GuildSettingsRecord | None, request: Request, *, age_restricted: bool) -> Request:
    """The request as the server allows it: its model checked, and outside age-restricted
    channels its prompt checked against the banned words and the forced negative prompt added."""
    check_model(record, request.model)
    if record is None or age_restricted:
        return request
    return apply_policy(request, safety_policy(record))


__all__ = [
    "ALLOWED_CHANNELS_KEY",
    "MAX_CHANNELS",
    "allowed_channels",
    "channel_allowed",
    "channel_mentions",
    "check_channel",
    "check_model",
    "guard_request",
    "safety_policy",
]
