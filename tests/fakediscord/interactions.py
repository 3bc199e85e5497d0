"""Acting as users through interactions: slash commands, autocomplete, buttons, selects, modals,
context menus; building and dispatching INTERACTION_CREATE."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from . import payloads
from .commands import CommandsMixin
from .errors import FakeDiscordUsageError
from .messages import UploadLike, _as_upload
from .models import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    TOKEN_LIFETIME,
    FakeChannel,
    FakeInteraction,
    FakeMessage,
    FakeRole,
    FakeUser,
)


class InteractionsMixin(CommandsMixin):
    """What users do through interactions."""

    # ==== acting as users =======================================================================
    async def slash(
        self,
        user: FakeUser,
        channel: FakeChannel,
        command: str,
        options: Mapping[str, Any] | None = None,
        *,
        attachments: Sequence[UploadLike] = (),
        locale: str | None = None,
        expired: bool = False,
        bypass_visibility: bool = False,
    ) -> FakeInteraction:
        """``/command`` as ``user`` in ``channel``; ``command`` may be a path (``"lora dataset add"``).

        Option values: str/int/float/bool, FakeUser, FakeChannel, FakeRole, or an upload
        ``(filename, bytes[, content_type])`` for attachment options; ``attachments=`` fills the
        command's attachment options in order.  With the command registered (synced), values are
        checked and typed from its schema like Discord's client does; otherwise types are inferred.
        ``expired=True`` backdates the interaction id by 16 minutes: the bot can still ack it
        within ``ack_deadline`` (simulating a job that outlived the token), but followups and
        @original edits then answer 401 / 50027.  ``bypass_visibility`` simulates an admin
        override of ``default_member_permissions``/``nsfw`` hiding.
        """
        data = self._command_data(
            user,
            channel,
            command,
            dict(options or {}),
            attachments=attachments,
            bypass_visibility=bypass_visibility,
        )
        return await self._interact(APPLICATION_COMMAND, user, channel, data, locale=locale, expired=expired)

    async def autocomplete(
        self,
        user: FakeUser,
        channel: FakeChannel,
        command: str,
        options: Mapping[str, Any],
        *,
        focused: str,
        locale: str | None = None,
        timeout: float = 5.0,
    ) -> list[dict[str, Any]]:
        """Type into option ``focused`` (its current text is ``options[focused]``); returns the bot's choices."""
        data = self._command_data(
            user, channel, command, dict(options), focused=focused, bypass_visibility=True
        )
        interaction = await self._interact(AUTOCOMPLETE, user, channel, data, locale=locale)
        response = await self.wait_for_response(interaction, timeout=timeout)
        if response.type != 8:
            raise AssertionError(f"autocomplete answered with callback type {response.type}, not 8")
        return list((response.data or {}).get("choices", []))

    async def click(
        self, user: FakeUser, message: FakeMessage, custom_id: str, *, locale: str | None = None
    ) -> FakeInteraction:
        """Press the button ``custom_id`` on ``message`` (it must be there, enabled, and not a link)."""
        component = self._component(message, custom_id)
        if component.get("type") != 2:
            raise FakeDiscordUsageError(
                f"{custom_id!r} is a component of type {component.get('type')}, not a button"
            )
        data = {"custom_id": custom_id, "component_type": 2}
        if component.get("id") is not None:
            data["id"] = component["id"]
        return await self._interact(
            MESSAGE_COMPONENT, user, self._channel_of(message), data, message=message, locale=locale
        )

    async def select(
        self,
        user: FakeUser,
        message: FakeMessage,
        custom_id: str,
        values: Sequence[Any],
        *,
        locale: str | None = None,
    ) -> FakeInteraction:
        """Pick ``values`` in the select menu ``custom_id`` (strings, or users/roles/channels for entity selects)."""
        component = self._component(message, custom_id)
        kind = component.get("type")
        if kind not in (3, 5, 6, 7, 8):
            raise FakeDiscordUsageError(f"{custom_id!r} is a component of type {kind}, not a select menu")
        channel = self._channel_of(message)
        resolved: dict[str, dict[str, Any]] = {}
        data: dict[str, Any] = {
            "custom_id": custom_id,
            "component_type": kind,
            "values": self._select_values(component, values, resolved, channel),
        }
        if resolved:
            data["resolved"] = resolved
        return await self._interact(MESSAGE_COMPONENT, user, channel, data, message=message, locale=locale)

    async def submit_modal(
        self,
        origin: FakeInteraction,
        values: Mapping[str, Any],
        *,
        user: FakeUser | None = None,
        locale: str | None = None,
    ) -> FakeInteraction:
        """Fill and submit the modal the bot answered ``origin`` with: ``{custom_id: value}``.

        Text inputs take strings (checked against ``required``/``min_length``/``max_length``),
        selects take lists, file uploads take uploads.  Unset text inputs keep their prefilled value.
        """
        modal = origin.modal
        if modal is None:
            raise FakeDiscordUsageError(f"{origin!r} was not answered with a modal (callback type 9)")
        channel = self.channels[origin.channel_id] if origin.channel_id else None
        if channel is None:
            raise FakeDiscordUsageError("modals outside channels are not simulated")
        resolved: dict[str, dict[str, Any]] = {}
        components = self._modal_answers(modal, dict(values), resolved, channel)
        data: dict[str, Any] = {"custom_id": modal["custom_id"], "components": components}
        if resolved:
            data["resolved"] = resolved
        return await self._interact(
            MODAL_SUBMIT,
            user or origin.user,
            channel,
            data,
            message=origin.message,
            origin=origin,
            locale=locale,
        )

    async def user_command(
        self, user: FakeUser, channel: FakeChannel, name: str, target: FakeUser, *, locale: str | None = None
    ) -> FakeInteraction:
        """The user context-menu command ``name`` on ``target``."""
        resolved: dict[str, dict[str, Any]] = {}
        self._resolve_user(target, resolved, channel)
        data = self._context_menu_data(name, 2, channel, target.id, resolved)
        return await self._interact(APPLICATION_COMMAND, user, channel, data, locale=locale)

    async def message_command(
        self,
        user: FakeUser,
        channel: FakeChannel,
        name: str,
        target: FakeMessage,
        *,
        locale: str | None = None,
    ) -> FakeInteraction:
        """The message context-menu command ``name`` on ``target``."""
        resolved = {"messages": {str(target.id): self._message_json(target)}}
        data = self._context_menu_data(name, 3, channel, target.id, resolved)
        return await self._interact(APPLICATION_COMMAND, user, channel, data, locale=locale)

    # -- components and modals ---------------------------------------------------------------------
    def _component(self, message: FakeMessage, custom_id: str) -> dict[str, Any]:
        if message.deleted:
            raise FakeDiscordUsageError(f"{message!r} was deleted")
        component = message.find_component(custom_id)
        if component is None:
            raise FakeDiscordUsageError(
                f"{message!r} has no component {custom_id!r}; it has {message.custom_ids}"
            )
        if component.get("disabled"):
            raise FakeDiscordUsageError(f"component {custom_id!r} is disabled")
        return component

    def _select_values(
        self,
        component: dict[str, Any],
        values: Sequence[Any],
        resolved: dict[str, dict[str, Any]],
        channel: FakeChannel,
    ) -> list[str]:
        kind = component.get("type")
        low, high = component.get("min_values", 1), component.get("max_values", 1)
        if not low <= len(values) <= high:
            raise FakeDiscordUsageError(
                f"{component.get('custom_id')!r} takes {low}..{high} values, got {len(values)}"
            )
        out: list[str] = []
        for value in values:
            if kind == 3:
                allowed = [o["value"] for o in component.get("options", [])]
                if value not in allowed:
                    raise FakeDiscordUsageError(
                        f"{value!r} is not an option of {component.get('custom_id')!r}: {allowed}"
                    )
                out.append(str(value))
            elif isinstance(value, FakeUser):
                self._resolve_user(value, resolved, channel)
                out.append(str(value.id))
            elif isinstance(value, FakeRole):
                resolved.setdefault("roles", {})[str(value.id)] = payloads.role_payload(value)
                out.append(str(value.id))
            elif isinstance(value, FakeChannel):
                resolved.setdefault("channels", {})[str(value.id)] = payloads.channel_payload(
                    value, permissions=0
                )
                out.append(str(value.id))
            else:
                raise FakeDiscordUsageError(f"select {component.get('custom_id')!r} cannot take {value!r}")
        return out

    def _modal_answers(
        self,
        modal: dict[str, Any],
        values: dict[str, Any],
        resolved: dict[str, dict[str, Any]],
        channel: FakeChannel,
    ) -> list[dict[str, Any]]:
        def answer(component: dict[str, Any]) -> dict[str, Any]:
            kind = component.get("type")
            custom_id = component.get("custom_id")
            out: dict[str, Any] = {"type": kind}
            if component.get("id") is not None:
                out["id"] = component["id"]
            if kind == 4:
                text = values.pop(custom_id, component.get("value") or "")
                if not isinstance(text, str):
                    raise FakeDiscordUsageError(f"text input {custom_id!r} takes a string")
                if component.get("required", True) and not text:
                    raise FakeDiscordUsageError(f"text input {custom_id!r} is required")
                if text:
                    low, high = component.get("min_length") or 0, component.get("max_length") or 4000
                    if not low <= len(text) <= high:
                        raise FakeDiscordUsageError(
                            f"text input {custom_id!r} takes {low}..{high} characters"
                        )
                out.update(custom_id=custom_id, value=text)
            elif kind in (3, 5, 6, 7, 8):
                chosen = values.pop(custom_id, [])
                out.update(
                    custom_id=custom_id, values=self._select_values(component, chosen, resolved, channel)
                )
            elif kind == 19:
                items = list(values.pop(custom_id, []))
                low = component.get("min_values") or (1 if component.get("required", True) else 0)
                high = component.get("max_values") or 10
                if not low <= len(items) <= high:
                    raise FakeDiscordUsageError(
                        f"file upload {custom_id!r} takes {low}..{high} files, got {len(items)}"
                    )
                ids = []
                for item in items:
                    upload = _as_upload(item)
                    if upload is None:
                        raise FakeDiscordUsageError(f"file upload {custom_id!r} takes uploads")
                    attachment = self._new_attachment(
                        channel.id, upload.filename, upload.data, upload.content_type, ephemeral=True
                    )
                    resolved.setdefault("attachments", {})[str(attachment.id)] = payloads.attachment_payload(
                        attachment
                    )
                    ids.append(str(attachment.id))
                out.update(custom_id=custom_id, values=ids)
            return out

        answers: list[dict[str, Any]] = []
        for top in modal.get("components", []):
            if top.get("type") == 1:
                row: dict[str, Any] = {
                    "type": 1,
                    "components": [answer(c) for c in top.get("components", [])],
                }
                if top.get("id") is not None:
                    row["id"] = top["id"]
                answers.append(row)
            elif top.get("type") == 18:
                label: dict[str, Any] = {"type": 18, "component": answer(top["component"])}
                if top.get("id") is not None:
                    label["id"] = top["id"]
                answers.append(label)
            else:
                answers.append(answer(top))
        if values:
            raise FakeDiscordUsageError(f"the modal has no inputs {sorted(values)}")
        return answers

    # -- interactions ----------------------------------------------------------------------------
    async def _interact(
        self,
        kind: int,
        user: FakeUser,
        channel: FakeChannel,
        data: dict[str, Any],
        *,
        message: FakeMessage | None = None,
        origin: FakeInteraction | None = None,
        locale: str | None = None,
        expired: bool = False,
    ) -> FakeInteraction:
        interaction = self._new_interaction(
            kind, user, channel, data, message=message, locale=locale, expired=expired
        )
        interaction.origin = origin
        loop = asyncio.get_running_loop()
        sent: asyncio.Future[None] = loop.create_future()

        def on_sent() -> None:
            if interaction.dispatched_at is None:
                interaction.dispatched_at = loop.time()
            if not sent.done():
                sent.set_result(None)
            self._notify()

        interaction.sent = sent
        reached, live = self.gateway.dispatch("INTERACTION_CREATE", interaction.payload, on_sent)
        if not reached:
            raise FakeDiscordUsageError(
                "no bot is connected to the fake gateway (start the client and wait for READY)"
            )
        if live:
            await asyncio.wait_for(asyncio.shield(sent), 5.0)
        return interaction

    def _new_interaction(
        self,
        kind: int,
        user: FakeUser,
        channel: FakeChannel,
        data: dict[str, Any],
        *,
        message: FakeMessage | None,
        locale: str | None,
        expired: bool,
    ) -> FakeInteraction:
        created = time.time() - (TOKEN_LIFETIME + 60 if expired else 0)
        interaction_id = self.ids.new(at=created)
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)
        guild = self.guilds.get(channel.guild_id) if channel.guild_id else None
        user_permissions = self.member_permissions(user, channel)
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.app_id),
            "type": kind,
            "data": data,
            "token": token,
            "version": 1,
            "locale": locale or user.locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": self.filesize_limit(channel),
            "app_permissions": str(self.bot_permissions(channel)),
            "channel_id": str(channel.id),
            "channel": payloads.channel_payload(
                channel,
                permissions=user_permissions,
                recipients=[self.users[u] for u in channel.recipient_ids if u in self.users],
            ),
        }
        if guild is not None:
            member = self._member(guild, user)
            payload.update(
                guild_id=str(guild.id),
                guild={
                    "id": str(guild.id),
                    "locale": guild.preferred_locale,
                    "features": list(guild.features),
                },
                guild_locale=guild.preferred_locale,
                member=payloads.member_payload(member, permissions=user_permissions),
                authorizing_integration_owners={"0": str(guild.id)},
                context=0,
            )
        else:
            payload.update(
                user=payloads.user_payload(user), authorizing_integration_owners={"0": "0"}, context=1
            )
        if message is not None:
            payload["message"] = self._message_json(message)
        interaction = FakeInteraction(
            id=interaction_id,
            token=token,
            type=kind,
            user=user,
            guild_id=guild.id if guild else None,
            channel_id=channel.id,
            payload=payload,
            message=message,
        )
        self.interactions.append(interaction)
        self._interactions_by_id[interaction.id] = interaction
        self._interactions_by_token[token] = interaction
        return interaction
