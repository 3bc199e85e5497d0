"""Channels' messages: storing and dispatching messages, attachments and reactions, and the users'
side of it (``post_message``, ``react``, ``unreact``)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from . import payloads, permissions
from .errors import FakeDiscordUsageError
from .models import (
    APPLICATION_COMMAND,
    FakeAttachment,
    FakeChannel,
    FakeInteraction,
    FakeMessage,
    FakeUser,
    MessageRevision,
    Upload,
)
from .rest import guess_content_type
from .world import WorldMixin

UploadLike = Upload | tuple[str, bytes] | tuple[str, bytes, str | None]


def _as_upload(value: Any) -> Upload | None:
    if isinstance(value, Upload):
        return value
    if isinstance(value, tuple) and len(value) in (2, 3) and isinstance(value[1], bytes | bytearray):
        return Upload(value[0], bytes(value[1]), value[2] if len(value) == 3 else None)
    return None


class MessagesMixin(WorldMixin):
    """Messages, attachments and reactions in channels."""

    # ==== users' messages and reactions ==========================================================
    async def react(self, user: FakeUser, message: FakeMessage, emoji: str) -> None:
        """``user`` adds ``emoji`` ("🔁", or "name:id" for a custom one): MESSAGE_REACTION_ADD."""
        channel = self._channel_of(message)
        if message.ephemeral or message.deleted:
            raise FakeDiscordUsageError("nobody can react to an ephemeral or deleted message")
        needed = permissions.VIEW_CHANNEL | permissions.READ_MESSAGE_HISTORY
        if not message.reactions.get(emoji):
            needed |= permissions.ADD_REACTIONS
        if self.member_permissions(user, channel) & needed != needed:
            raise FakeDiscordUsageError(f"{user.username} may not add reactions in #{channel.name}")
        self._add_reaction(user, message, emoji)

    async def unreact(self, user: FakeUser, message: FakeMessage, emoji: str) -> None:
        self._remove_reaction(user, message, emoji)

    async def post_message(
        self,
        user: FakeUser,
        channel: FakeChannel,
        content: str = "",
        *,
        attachments: Sequence[UploadLike] = (),
        reply_to: FakeMessage | None = None,
    ) -> FakeMessage:
        """A plain message by ``user`` (MESSAGE_CREATE).  A bot without the Message Content
        intent receives it with empty content and attachments, unless it is mentioned."""
        if self.member_permissions(user, channel) & permissions.SEND_MESSAGES == 0:
            raise FakeDiscordUsageError(f"{user.username} may not send messages in #{channel.name}")
        files = []
        for item in attachments:
            upload = _as_upload(item)
            if upload is None:
                raise FakeDiscordUsageError(f"not an upload: {item!r}")
            files.append(self._new_attachment(channel.id, upload.filename, upload.data, upload.content_type))
        loop = asyncio.get_running_loop()
        mentions = [self.users[int(i)] for i in re.findall(r"<@!?(\d+)>", content) if int(i) in self.users]
        message = FakeMessage(
            id=self.ids.new(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=user,
            revisions=[MessageRevision(content, [], [], files, 0, loop.time(), "user")],
            type=19 if reply_to else 0,
            mentions=mentions,
            message_reference=(
                {"type": 0, "message_id": str(reply_to.id), "channel_id": str(reply_to.channel_id)}
                if reply_to
                else None
            ),
        )
        return self._store_message(message)

    # ==== internals shared with rest.py ========================================================
    def _channel_of(self, message: FakeMessage) -> FakeChannel:
        return self.channels[message.channel_id]

    def _message_json(self, message: FakeMessage, *, with_member: bool = False) -> dict[str, Any]:
        member = None
        if with_member and message.guild_id is not None and message.webhook_id is None:
            guild_member = self.guilds[message.guild_id].members.get(message.author.id)
            if guild_member is not None:
                member = payloads.member_payload(guild_member, with_user=False)
        payload = payloads.message_payload(message, me_id=self.bot.id, member=member)
        payload["mentions"] = [payloads.user_payload(u) for u in message.mentions]
        return payload

    def _new_attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None,
        *,
        description: str | None = None,
        ephemeral: bool = False,
    ) -> FakeAttachment:
        attachment_id = self.ids.new()
        size = payloads.png_size(data)
        attachment = FakeAttachment(
            id=attachment_id,
            filename=filename,
            data=data,
            content_type=guess_content_type(filename, content_type),
            url=f"{self.base_url}/attachments/{channel_id}/{attachment_id}/{quote(filename)}",
            description=description,
            ephemeral=ephemeral,
            width=size[0] if size else None,
            height=size[1] if size else None,
        )
        self.attachments[attachment_id] = attachment
        return attachment

    def _store_message(self, message: FakeMessage) -> FakeMessage:
        self.messages.append(message)
        self.messages_by_id[message.id] = message
        self._dispatch_message_event("MESSAGE_CREATE", message)
        self._notify()
        return message

    def _interaction_message(self, interaction: FakeInteraction, revision: MessageRevision) -> FakeMessage:
        if interaction.type == APPLICATION_COMMAND:
            kind = 20 if interaction.data.get("type", 1) == 1 else 23
        else:
            kind = 0
        return self._store_message(
            FakeMessage(
                id=self.ids.new(),
                channel_id=interaction.channel_id or 0,
                guild_id=interaction.guild_id,
                author=self.bot,
                revisions=[revision],
                type=kind,
                webhook_id=self.app_id,
                application_id=self.app_id,
                interaction=interaction,
            )
        )

    def _dispatch_message_event(self, event: str, message: FakeMessage) -> None:
        if message.ephemeral or not self._gateway_up():
            return
        self.gateway.dispatch(event, self._message_json(message, with_member=True))

    def _delete_message(self, message: FakeMessage) -> None:
        message.deleted = True
        if not message.ephemeral and self._gateway_up():
            data = {"id": str(message.id), "channel_id": str(message.channel_id)}
            if message.guild_id is not None:
                data["guild_id"] = str(message.guild_id)
            self.gateway.dispatch("MESSAGE_DELETE", data)
        self._notify()

    def _reaction_event(self, user: FakeUser, message: FakeMessage, emoji: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "user_id": str(user.id),
            "channel_id": str(message.channel_id),
            "message_id": str(message.id),
            "emoji": payloads.emoji_payload(emoji),
            "burst": False,
            "burst_colors": [],
            "type": 0,
        }
        if message.guild_id is not None:
            data["guild_id"] = str(message.guild_id)
            member = self.guilds[message.guild_id].members.get(user.id)
            if member is not None:
                data["member"] = payloads.member_payload(member)
        return data

    def _add_reaction(self, user: FakeUser, message: FakeMessage, emoji: str) -> None:
        users = message.reactions.setdefault(emoji, [])
        if user.id in users:
            return
        users.append(user.id)
        if self._gateway_up():
            data = self._reaction_event(user, message, emoji)
            data["message_author_id"] = str(message.author.id)
            self.gateway.dispatch("MESSAGE_REACTION_ADD", data)
        self._notify()

    def _remove_reaction(self, user: FakeUser, message: FakeMessage, emoji: str) -> None:
        users = message.reactions.get(emoji, [])
        if user.id not in users:
            return
        users.remove(user.id)
        if self._gateway_up():
            data = self._reaction_event(user, message, emoji)
            data.pop("member", None)
            self.gateway.dispatch("MESSAGE_REACTION_REMOVE", data)
        self._notify()
