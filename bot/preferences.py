"""A user's defaults (``/settings``) and a server's settings (``/server settings``): read, check, save.

Discord-free: the cogs call one method per command (through ``asyncio.to_thread``, these touch
the database) and reply with what was saved.  Every value is checked here and refused with a
:class:`~generation.errors.BrushworkError` whose text says what was wrong and what is allowed;
nothing is clamped silently.  Permission checks (Manage Server) are the caller's: this layer
only knows ids.

Stored shapes (``storage.records``):

* user / server ``defaults`` — a canonical flag string (``--steps 30 --sampler "Euler a"``), as
  :func:`generation.grammar.render` writes what :func:`~generation.grammar.parse_defaults` read;
  ``ImageService`` layers them under every request (server first, then the user's);
* ``allowed_models`` — registry names, ``None`` = every model;
* ``limits`` — ``queued_per_user``, ``queued_per_guild``, ``daily_images``, ``daily_gpu_seconds``:
  the keys :meth:`generation.queue.QueueLimits.merged` reads (``Container.limits_for``).  A
  server may only tighten the operator's limits, never loosen them;
* ``channels`` — ``{"allowed": ["<channel id>", …]}`` (:mod:`bot.guild_policy`);
* ``safety`` — :meth:`generation.safety.SafetyPolicy.to_dict`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.guild_policy import ALLOWED_CHANNELS_KEY, MAX_CHANNELS, allowed_channels, safety_policy
from generation.errors import BrushworkError, RequestError
from generation.grammar import parse_defaults, render
from generation.request import Request, resolve
from generation.safety import SafetyPolicy
from storage.records import GuildSettingsRecord, UserSettingsRecord
from storage.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from generation.models import ModelRegistry
    from generation.queue import QueueLimits

MAX_DEFAULTS_LENGTH = 500
MAX_FORCED_NEGATIVE_LENGTH = 500
#: What clears a text setting (the option cannot be left empty in Discord).
CLEAR_WORDS = frozenset({"none", "off", "clear", "reset", "-", "无", "清除", "清空", "重置"})
#: Words that mean "every model" for ``/server settings models``.
ALL_MODELS_WORDS = frozenset({"all", "*", "any", "全部", "所有"})
_LIST_SEPARATORS = re.compile(r"[,，、;；\n]+")

#: Limit keys as stored, in the order they are shown.
LIMIT_KEYS = ("queued_per_user", "queued_per_guild", "daily_images", "daily_gpu_seconds")
#: Upper bounds when the operator sets no limit of that kind.
_UNBOUNDED = {"queued_per_user": 1_000, "queued_per_guild": 10_000, "daily_images": 1_000_000,
              "daily_gpu_seconds": 10_000_000}
_OPERATOR_FIELD = {"queued_per_user": "per_user", "queued_per_guild": "per_guild", "daily_images": "daily_images",
                   "daily_gpu_seconds": "daily_gpu_seconds"}
#: How each limit is named in ``/server settings limits`` (the option names).
LIMIT_OPTIONS = {"queued_per_user": "per_user", "queued_per_guild": "per_server", "daily_images": "daily_images",
                 "daily_gpu_seconds": "daily_gpu_seconds"}


def is_clear_word(text: str | None) -> bool:
    return text is not None and text.strip().casefold() in CLEAR_WORDS


def split_list(text: str) -> list[str]:
    """``"a, b，c、d"`` → ``["a", "b", "c", "d"]`` (ASCII and Chinese commas, semicolons, lines)."""
    return [item.strip() for item in _LIST_SEPARATORS.split(text or "") if item.strip()]


@dataclass(frozen=True, slots=True)
class LimitValue:
    """One queue limit as it applies to a server: the server's own value, the operator's, the result."""

    key: str
    own: int | float | None  # the server's setting (None: not set)
    operator: int | float | None  # the operator's default (None: no limit)

    @property
    def effective(self) -> int | float | None:
        return self.own if self.own is not None else self.operator


class PreferencesService:
    def __init__(
        self,
        *,
        uow_factory: Callable[[], UnitOfWork],
        registry: ModelRegistry,
        operator_limits: Callable[[], QueueLimits],
        limits_changed: Callable[[int], None] | None = None,
        classifier_configured: Callable[[], bool] | None = None,
    ) -> None:
        self._uow = uow_factory
        self._registry = registry
        self._operator_limits = operator_limits
        self._limits_changed = limits_changed or (lambda _guild: None)
        self._classifier_configured = classifier_configured or (lambda: False)

    # ================================================================== checking
    def check_defaults(self, text: str, *, allowed_models: Sequence[str] | None = None) -> Request:
        """Stored defaults, checked as they will be used: flags only, each value in range, the
        model known (and allowed by the server), the size possible for that model."""
        text = (text or "").strip()
        if len(text) > MAX_DEFAULTS_LENGTH:
            raise RequestError("settings.defaults_too_long", count=len(text), limit=MAX_DEFAULTS_LENGTH)
        layer = parse_defaults(text)
        if layer.image is not None:  # a picture starts one image; as a default it would start them all
            raise RequestError("settings.no_image_default")
        model = layer.model or self._registry.default
        self._registry.get(model)  # ModelError naming the known models
        if layer.model is not None and allowed_models is not None and layer.model not in allowed_models:
            raise RequestError("server.model_not_allowed", model=layer.model, allowed=sorted(allowed_models) or ["—"])
        resolve(Request(prompt="defaults"), self._registry.profile(model), model=model, defaults=[layer],
                seed_source=lambda: 0)
        return layer

    # ================================================================== a user's defaults
    def user_settings(self, user_id: int) -> UserSettingsRecord:
        with self._uow() as uow:
            return uow.settings.get_user(user_id)

    def set_user_defaults(self, user_id: int, text: str) -> UserSettingsRecord:
        if not (text or "").strip() or is_clear_word(text):
            raise RequestError("settings.defaults_empty")
        canonical = render(self.check_defaults(text))
        with self._uow() as uow:
            record = uow.settings.set_user(user_id, defaults=canonical)
            uow.commit()
        return record

    def reset_user_defaults(self, user_id: int) -> UserSettingsRecord:
        with self._uow() as uow:
            record = uow.settings.set_user(user_id, defaults="")
            uow.commit()
        return record

    # ================================================================== a server's settings
    def guild_settings(self, guild_id: int) -> GuildSettingsRecord:
        with self._uow() as uow:
            return uow.settings.get_guild(guild_id)

    def _save_guild(self, guild_id: int, **fields: Any) -> GuildSettingsRecord:
        with self._uow() as uow:
            record = uow.settings.set_guild(guild_id, **fields)
            uow.commit()
        return record

    def set_guild_defaults(self, guild_id: int, text: str) -> GuildSettingsRecord:
        """The server's defaults (under every member's own); a clear word removes them."""
        if not (text or "").strip():
            raise RequestError("server.defaults_empty")
        if is_clear_word(text):
            return self._save_guild(guild_id, defaults="")
        current = self.guild_settings(guild_id)
        canonical = render(self.check_defaults(text, allowed_models=current.allowed_models))
        return self._save_guild(guild_id, defaults=canonical)

    def set_guild_models(self, guild_id: int, text: str) -> GuildSettingsRecord:
        """Allowed models, comma-separated registry names; ``all`` allows every model again."""
        value = (text or "").strip()
        if not value:
            raise RequestError("server.models_empty", known=self._registry.names())
        if value.casefold() in ALL_MODELS_WORDS or is_clear_word(value):
            return self._save_guild(guild_id, allowed_models=None)
        known = {name.casefold(): name for name in self._registry.names()}
        chosen: list[str] = []
        unknown: list[str] = []
        for item in split_list(value):
            name = known.get(item.casefold())
            if name is None:
                unknown.append(item[:64])
            elif name not in chosen:
                chosen.append(name)
        if unknown:
            raise RequestError("server.unknown_models", names=unknown, known=sorted(known.values()))
        current = self.guild_settings(guild_id)
        if current.defaults:
            default_model = parse_defaults(current.defaults).model
            if default_model is not None and default_model not in chosen:
                raise RequestError("server.models_exclude_default", model=default_model)
        return self._save_guild(guild_id, allowed_models=chosen)

    # -- limits --------------------------------------------------------------------
    def limit_values(self, record: GuildSettingsRecord) -> list[LimitValue]:
        operator = self._operator_limits()
        return [LimitValue(key, record.limits.get(key), getattr(operator, _OPERATOR_FIELD[key]))
                for key in LIMIT_KEYS]

    def set_guild_limits(self, guild_id: int, *, queued_per_user: int | None = None,
                         queued_per_guild: int | None = None, daily_images: int | None = None,
                         daily_gpu_seconds: int | None = None, reset: bool = False) -> GuildSettingsRecord:
        """The server's own queue limits, each within the operator's (a server may tighten, never
        loosen them).  A daily quota of 0 removes the server's own quota; ``reset`` removes all."""
        given = {"queued_per_user": queued_per_user, "queued_per_guild": queued_per_guild,
                 "daily_images": daily_images, "daily_gpu_seconds": daily_gpu_seconds}
        given = {key: value for key, value in given.items() if value is not None}
        if not given and not reset:
            raise RequestError("server.limits_nothing")
        limits = {} if reset else dict(self.guild_settings(guild_id).limits)
        operator = self._operator_limits()
        for key, value in given.items():
            name = LIMIT_OPTIONS[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise RequestError("server.limit_not_integer", name=name, value=value)
            quota = key.startswith("daily_")
            if quota and value == 0:
                limits.pop(key, None)
                continue
            ceiling = getattr(operator, _OPERATOR_FIELD[key])
            if not 1 <= value <= _UNBOUNDED[key]:
                raise RequestError("server.limit_out_of_range", name=name, value=value,
                                   low=0 if quota else 1, high=_UNBOUNDED[key])
            if ceiling is not None and value > ceiling:
                raise RequestError("server.limit_above_operator", name=name, value=value, high=_number(ceiling))
            limits[key] = value
        record = self._save_guild(guild_id, limits=limits)
        self._limits_changed(guild_id)
        return record

    # -- channels ------------------------------------------------------------------
    def set_guild_channels(self, guild_id: int, *, add: Iterable[int] = (), remove: Iterable[int] = (),
                           clear: bool = False) -> GuildSettingsRecord:
        """Change the channel allow-list (empty: every channel)."""
        add, remove = list(add), list(remove)
        if not add and not remove and not clear:
            raise RequestError("server.channels_nothing")
        current = [] if clear else list(allowed_channels(self.guild_settings(guild_id)))
        for channel_id in remove:
            if channel_id not in current and not clear:
                raise RequestError("server.channel_not_listed", channel=f"<#{channel_id}>")
            if channel_id in current:
                current.remove(channel_id)
        for channel_id in add:
            if channel_id not in current:
                current.append(channel_id)
        if len(current) > MAX_CHANNELS:
            raise RequestError("server.too_many_channels", count=len(current), limit=MAX_CHANNELS)
        record = self.guild_settings(guild_id)
        channels = dict(record.channels)
        channels[ALLOWED_CHANNELS_KEY] = [str(channel_id) for channel_id in current]
        return self._save_guild(guild_id, channels=channels)

    # -- safety --------------------------------------------------------------------
    @property
    def classifier_configured(self) -> bool:
        return bool(self._classifier_configured())

    def set_guild_safety(self, guild_id: int, *, add_words: str | None = None, remove_words: str | None = None,
                         forced_negative: str | None = None, classifier: bool | None = None,
                         clear_words: bool = False) -> GuildSettingsRecord:
        """Banned words (added or removed, comma-separated; ``clear_words`` empties the list), the
        forced negative prompt (a clear word removes it), the image classifier on or off."""
        if add_words is None and remove_words is None and forced_negative is None and classifier is None \
                and not clear_words:
            raise RequestError("server.safety_nothing")
        policy = safety_policy(self.guild_settings(guild_id))
        words = [] if clear_words else list(policy.banned_words)
        if remove_words is not None:
            targets = SafetyPolicy(banned_words=tuple(split_list(remove_words))).banned_words  # normalised alike
            if not targets:
                raise RequestError("server.words_empty")
            missing = [word for word in targets if word not in words]
            if missing and not clear_words:
                raise RequestError("server.words_not_listed", words=missing)
            words = [word for word in words if word not in targets]
        if add_words is not None:
            new = split_list(add_words)
            if not new:
                raise RequestError("server.words_empty")
            words.extend(new)
        negative = policy.forced_negative
        if forced_negative is not None:
            value = forced_negative.strip()
            if is_clear_word(value):
                negative = ""
            elif len(value) > MAX_FORCED_NEGATIVE_LENGTH:
                raise RequestError("server.negative_too_long", count=len(value), limit=MAX_FORCED_NEGATIVE_LENGTH)
            elif "--" in value:
                raise RequestError("server.negative_has_flags")
            else:
                negative = value
        updated = SafetyPolicy(banned_words=tuple(words), forced_negative=negative,
                               classify_images=policy.classify_images if classifier is None else classifier,
                               blocked_labels=policy.blocked_labels, threshold=policy.threshold)
        return self._save_guild(guild_id, safety=updated.to_dict())


def _number(value: int | float) -> int | float:
    return int(value) if float(value).is_integer() else value


def check_manage_guild(has_permission: bool, guild_id: int | None) -> int:
    """The server id, if the caller may change this server's settings; else the error to show."""
    if guild_id is None:
        raise BrushworkError("server.guild_only")
    if not has_permission:
        raise BrushworkError("server.need_manage")
    return guild_id


__all__ = ["CLEAR_WORDS", "LIMIT_KEYS", "LIMIT_OPTIONS", "LimitValue", "PreferencesService", "check_manage_guild",
           "is_clear_word", "split_list"]
