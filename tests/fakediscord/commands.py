"""Application commands: the bulk overwrite the bot syncs, and building a command invocation's
data from a test's options, checked against the synced schema like Discord's client does."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from typing import Any

from . import payloads, permissions
from .control import ControlMixin
from .errors import APIError, FakeDiscordUsageError, invalid_form_body
from .messages import UploadLike, _as_upload
from .models import (
    FakeChannel,
    FakeGuild,
    FakeRole,
    FakeUser,
    SyncCall,
)
from .validation import check_commands

# Option types.
SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 3, 4, 5, 6, 7, 8, 9, 10, 11


class CommandsMixin(ControlMixin):
    """Synced commands and their options."""

    # -- application commands ------------------------------------------------------------------
    def _replace_commands(
        self, scope: int | None, commands: list[dict[str, Any]], *, record: bool = True
    ) -> list[dict[str, Any]]:
        """Bulk overwrite like Discord: same (type, name) keeps its id; changed ones get a new version."""
        problems = check_commands(commands)
        if problems:
            raise invalid_form_body(problems)
        volatile = ("id", "application_id", "version", "guild_id")
        old = {(c.get("type", 1), c["name"]): c for c in self._commands.get(scope, [])}
        result: list[dict[str, Any]] = []
        creates = 0
        for command in commands:
            key = (command.get("type", 1), command["name"])
            body = {k: v for k, v in command.items() if k not in volatile}
            normalized = {
                "type": 1,
                "description": "",
                "default_member_permissions": None,
                "nsfw": False,
                **body,
            }
            previous = old.get(key)
            if previous is None:
                creates += 1
                command_id = version = self.ids.new()
            else:
                command_id = int(previous["id"])
                same = {k: v for k, v in previous.items() if k not in volatile} == normalized
                version = int(previous["version"]) if same else self.ids.new()
            entry = {
                **normalized,
                "id": str(command_id),
                "application_id": str(self.app_id),
                "version": str(version),
            }
            if scope is not None:
                entry["guild_id"] = str(scope)
            result.append(entry)
        if self._command_creates.get(scope, 0) + creates > self.daily_command_creates:
            # No ``Via`` header, deliberately: real Discord sends one, and discord.py would then sleep
            # for retry_after (hours).  Here the bot gets an HTTPException(429) at once.
            raise APIError(
                429,
                30034,
                f"Max number of daily application command creates has been reached ({self.daily_command_creates})",
                extra={"retry_after": 3600.0, "global": False},
            )
        self._command_creates[scope] = self._command_creates.get(scope, 0) + creates
        self._commands[scope] = result
        if record:
            self.sync_calls.append(SyncCall(scope, copy.deepcopy(result), asyncio.get_running_loop().time()))
        self._notify()
        return copy.deepcopy(result)

    def _command_data(
        self,
        user: FakeUser,
        channel: FakeChannel,
        command: str,
        options: dict[str, Any],
        *,
        attachments: Sequence[UploadLike] = (),
        focused: str | None = None,
        bypass_visibility: bool = False,
    ) -> dict[str, Any]:
        path = command.strip().lstrip("/").split()
        if not path:
            raise FakeDiscordUsageError("empty command name")
        guild = self.guilds.get(channel.guild_id) if channel.guild_id else None
        schema = self.command(path[0], guild=guild)
        if schema is not None and not bypass_visibility:
            self._check_visible(user, channel, guild, schema)
        resolved: dict[str, dict[str, Any]] = {}
        top: list[dict[str, Any]] = []
        container = top
        level = schema.get("options", []) if schema else None
        for depth, part in enumerate(path[1:]):
            if level is not None:
                spec = next(
                    (o for o in level if o["name"] == part and o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)),
                    None,
                )
                if spec is None:
                    raise FakeDiscordUsageError(f"/{' '.join(path[: depth + 1])} has no subcommand {part!r}")
                kind, level = spec["type"], spec.get("options", [])
            else:
                kind = SUB_COMMAND_GROUP if depth < len(path) - 2 else SUB_COMMAND
            node: dict[str, Any] = {"type": kind, "name": part, "options": []}
            container.append(node)
            container = node["options"]
        if level is not None and any(o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP) for o in level):
            raise FakeDiscordUsageError(f"/{command} is a group: name a subcommand")
        pending = [u for u in (_as_upload(a) for a in attachments)]
        if None in pending:
            raise FakeDiscordUsageError(
                "attachments= takes (filename, bytes[, content_type]) tuples or Upload"
            )
        if pending:
            if level is None:
                raise FakeDiscordUsageError(
                    "attachments= needs the command's schema: sync the commands first"
                )
            for spec in level:
                if spec["type"] == ATTACHMENT and spec["name"] not in options and pending:
                    options[spec["name"]] = pending.pop(0)
            if pending:
                raise FakeDiscordUsageError(f"/{command} has fewer attachment options than attachments given")
        specs = {o["name"]: o for o in level} if level is not None else {}
        for name, value in options.items():
            spec = specs.get(name)
            if level is not None and spec is None:
                raise FakeDiscordUsageError(f"/{command} has no option {name!r}; it has {sorted(specs)}")
            container.append(
                self._option(user, name, value, spec, resolved, channel, focused=(name == focused))
            )
        if level is not None and focused is None:
            missing = [o["name"] for o in level if o.get("required") and o["name"] not in options]
            if missing:
                raise FakeDiscordUsageError(f"/{command}: required options missing: {missing}")
        if focused is not None and focused not in options:
            raise FakeDiscordUsageError(f"the focused option {focused!r} needs a (partial) value in options")
        data: dict[str, Any] = {
            "id": schema["id"] if schema else str(self._stable_id(f"cmd:{path[0]}")),
            "name": path[0],
            "type": 1,
            "options": top,
        }
        if schema is not None and schema.get("guild_id"):
            data["guild_id"] = schema["guild_id"]
        if resolved:
            data["resolved"] = resolved
        return data

    def _stable_id(self, key: str) -> int:
        """An id that stays the same for an unsynced command name (like a registered command's)."""
        if key not in self._stable_ids:
            self._stable_ids[key] = self.ids.new()
        return self._stable_ids[key]

    def _check_visible(
        self, user: FakeUser, channel: FakeChannel, guild: FakeGuild | None, schema: dict[str, Any]
    ) -> None:
        name = schema["name"]
        hint = " (pass bypass_visibility=True to simulate an admin's override)"
        perms = self.member_permissions(user, channel)
        if guild is not None and perms & permissions.USE_APPLICATION_COMMANDS == 0:
            raise FakeDiscordUsageError(
                f"{user.username} may not use application commands in #{channel.name}"
            )
        if schema.get("nsfw"):
            source = (
                self.channels.get(channel.parent_id) if channel.is_thread and channel.parent_id else channel
            )
            if guild is not None and not (source and source.nsfw):
                raise FakeDiscordUsageError(
                    f"/{name} is age-restricted: Discord hides it in #{channel.name}{hint}"
                )
        required = schema.get("default_member_permissions")
        if required is not None and guild is not None:
            required = int(required)
            base = permissions.base_permissions(guild, self._member(guild, user))
            if (required == 0 and not base & permissions.ADMINISTRATOR) or base & required != required:
                raise FakeDiscordUsageError(
                    f"{user.username} lacks default_member_permissions of /{name}{hint}"
                )
        if guild is None and schema.get("dm_permission") is False:
            raise FakeDiscordUsageError(f"/{name} has dm_permission=False: Discord hides it in DMs")
        contexts = schema.get("contexts")
        if contexts is not None and (0 if guild is not None else 1) not in contexts:
            raise FakeDiscordUsageError(f"/{name} is not available in this context (contexts={contexts})")

    def _option(
        self,
        user: FakeUser,
        name: str,
        value: Any,
        spec: dict[str, Any] | None,
        resolved: dict[str, dict[str, Any]],
        channel: FakeChannel,
        *,
        focused: bool,
    ) -> dict[str, Any]:
        kind = spec["type"] if spec is not None else self._infer_type(value)
        if focused:
            return {
                "name": name,
                "type": kind,
                "value": value if isinstance(value, str) else str(value),
                "focused": True,
            }
        if kind == STRING:
            if not isinstance(value, str):
                raise FakeDiscordUsageError(f"option {name!r} is a string option, got {value!r}")
            self._check_range(name, len(value), spec, "min_length", "max_length")
        elif kind == INTEGER:
            if isinstance(value, bool) or not isinstance(value, int):
                raise FakeDiscordUsageError(f"option {name!r} is an integer option, got {value!r}")
            self._check_range(name, value, spec, "min_value", "max_value")
        elif kind == NUMBER:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FakeDiscordUsageError(f"option {name!r} is a number option, got {value!r}")
            self._check_range(name, value, spec, "min_value", "max_value")
        elif kind == BOOLEAN:
            if not isinstance(value, bool):
                raise FakeDiscordUsageError(f"option {name!r} is a boolean option, got {value!r}")
        elif kind in (USER, MENTIONABLE) and isinstance(value, FakeUser):
            self._resolve_user(value, resolved, channel)
            value = str(value.id)
        elif kind in (ROLE, MENTIONABLE) and isinstance(value, FakeRole):
            resolved.setdefault("roles", {})[str(value.id)] = payloads.role_payload(value)
            value = str(value.id)
        elif kind == CHANNEL and isinstance(value, FakeChannel):
            allowed = (spec or {}).get("channel_types")
            if allowed and value.type not in allowed:
                raise FakeDiscordUsageError(
                    f"option {name!r} accepts channel types {allowed}, not {value.type}"
                )
            resolved.setdefault("channels", {})[str(value.id)] = payloads.channel_payload(
                value, permissions=self.member_permissions(user, value)
            )
            value = str(value.id)
        elif kind == ATTACHMENT:
            upload = _as_upload(value)
            if upload is None:
                raise FakeDiscordUsageError(
                    f"option {name!r} takes an upload (filename, bytes[, content_type])"
                )
            attachment = self._new_attachment(
                channel.id, upload.filename, upload.data, upload.content_type, ephemeral=True
            )
            resolved.setdefault("attachments", {})[str(attachment.id)] = payloads.attachment_payload(
                attachment
            )
            value = str(attachment.id)
        else:
            raise FakeDiscordUsageError(f"option {name!r} (type {kind}) cannot take {value!r}")
        choices = (spec or {}).get("choices")
        if choices and value not in [c["value"] for c in choices]:
            raise FakeDiscordUsageError(
                f"option {name!r} must be one of {[c['value'] for c in choices]}, got {value!r}"
            )
        return {"name": name, "type": kind, "value": value}

    @staticmethod
    def _infer_type(value: Any) -> int:
        if isinstance(value, bool):
            return BOOLEAN
        if isinstance(value, int):
            return INTEGER
        if isinstance(value, float):
            return NUMBER
        if isinstance(value, str):
            return STRING
        if isinstance(value, FakeUser):
            return USER
        if isinstance(value, FakeRole):
            return ROLE
        if isinstance(value, FakeChannel):
            return CHANNEL
        if _as_upload(value) is not None:
            return ATTACHMENT
        raise FakeDiscordUsageError(f"cannot send {value!r} as an option value")

    @staticmethod
    def _check_range(name: str, amount: float, spec: dict[str, Any] | None, low: str, high: str) -> None:
        if spec is None:
            return
        if spec.get(low) is not None and amount < spec[low]:
            raise FakeDiscordUsageError(f"option {name!r}: {amount} is below {low}={spec[low]}")
        if spec.get(high) is not None and amount > spec[high]:
            raise FakeDiscordUsageError(f"option {name!r}: {amount} is above {high}={spec[high]}")

    def _resolve_user(
        self, user: FakeUser, resolved: dict[str, dict[str, Any]], channel: FakeChannel
    ) -> None:
        resolved.setdefault("users", {})[str(user.id)] = payloads.user_payload(user)
        if channel.guild_id is not None:
            member = self.guilds[channel.guild_id].members.get(user.id)
            if member is not None:
                resolved.setdefault("members", {})[str(user.id)] = payloads.member_payload(
                    member, with_user=False, permissions=self.member_permissions(user, channel)
                )

    def _context_menu_data(
        self, name: str, kind: int, channel: FakeChannel, target_id: int, resolved: dict[str, Any]
    ) -> dict[str, Any]:
        guild = self.guilds.get(channel.guild_id) if channel.guild_id else None
        schema = self.command(name, guild=guild, type=kind)
        data: dict[str, Any] = {
            "id": schema["id"] if schema else str(self._stable_id(f"ctx{kind}:{name}")),
            "name": name,
            "type": kind,
            "target_id": str(target_id),
            "resolved": resolved,
        }
        if schema is not None and schema.get("guild_id"):
            data["guild_id"] = schema["guild_id"]
        return data
