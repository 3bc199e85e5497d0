"""JSON payloads in the shapes Discord sends (the fields discord.py 2.7 reads, required ones included)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .models import (
    DM,
    FakeAttachment,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeMessage,
    FakeRole,
    FakeUser,
)


def iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat()


def user_payload(user: FakeUser) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": str(user.id),
        "username": user.username,
        "discriminator": "0",
        "global_name": user.global_name,
        "avatar": user.avatar,
        "public_flags": 0,
        "flags": 0,
        "banner": None,
        "accent_color": None,
        "avatar_decoration_data": None,
    }
    if user.bot:
        payload["bot"] = True
    return payload


def role_payload(role: FakeRole) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": str(role.id),
        "name": role.name,
        "color": role.color,
        "colors": {"primary_color": role.color, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": role.position,
        "permissions": str(role.permissions),
        "managed": role.managed,
        "mentionable": False,
        "flags": 0,
    }
    if role.bot_id is not None:
        payload["tags"] = {"bot_id": str(role.bot_id)}
    return payload


def member_payload(
    member: FakeMember, *, with_user: bool = True, permissions: int | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "roles": [str(r) for r in member.role_ids],
        "nick": member.nick,
        "avatar": None,
        "banner": None,
        "joined_at": iso(member.joined_at),
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,  # discord.py reads data['flags']
        "communication_disabled_until": None,
    }
    if with_user:
        payload["user"] = user_payload(member.user)
    if permissions is not None:
        payload["permissions"] = str(permissions)
    return payload


def channel_payload(
    channel: FakeChannel,
    *,
    guild_id: bool = True,
    permissions: int | None = None,
    recipients: list[FakeUser] | None = None,
) -> dict[str, Any]:
    if channel.type == DM:
        payload: dict[str, Any] = {
            "id": str(channel.id),
            "type": DM,
            "last_message_id": None,
            "flags": 0,
            "recipients": [user_payload(u) for u in recipients or []],
        }
    elif channel.is_thread:
        payload = {
            "id": str(channel.id),
            "type": channel.type,
            "name": channel.name,
            "parent_id": str(channel.parent_id),
            "owner_id": str(channel.owner_id),
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": iso(0),
                "locked": False,
                "invitable": True,
            },
        }
    else:
        payload = {
            "id": str(channel.id),
            "type": channel.type,
            "name": channel.name,
            "position": channel.position,
            "parent_id": str(channel.parent_id) if channel.parent_id else None,
            "topic": channel.topic,
            "nsfw": channel.nsfw,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
            "permission_overwrites": [
                {"id": str(o.id), "type": o.kind, "allow": str(o.allow), "deny": str(o.deny)}
                for o in channel.overwrites.values()
            ],
        }
    if guild_id and channel.guild_id is not None:
        payload["guild_id"] = str(channel.guild_id)
    if permissions is not None:
        payload["permissions"] = str(permissions)
    return payload


def guild_payload(guild: FakeGuild, *, full: bool, members: list[FakeMember] | None = None) -> dict[str, Any]:
    """A guild; ``full`` adds what GUILD_CREATE carries (channels, threads, members, ...)."""
    payload: dict[str, Any] = {
        "id": str(guild.id),
        "name": guild.name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(guild.owner_id),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "roles": [role_payload(r) for r in guild.roles.values()],
        "emojis": [],
        "stickers": [],
        "features": list(guild.features),
        "mfa_level": 0,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "vanity_url_code": None,
        "premium_tier": guild.premium_tier,
        "premium_subscription_count": 0,
        "preferred_locale": guild.preferred_locale,
        "nsfw_level": 0,
        "premium_progress_bar_enabled": False,
        "max_members": 500000,
    }
    if full:
        payload.update(
            {
                "unavailable": False,
                "large": False,
                "member_count": len(guild.members),
                "channels": [
                    channel_payload(c, guild_id=False) for c in guild.channels.values() if not c.is_thread
                ],
                "threads": [channel_payload(c) for c in guild.channels.values() if c.is_thread],
                "members": [member_payload(m) for m in members or []],
                "presences": [],
                "voice_states": [],
                "stage_instances": [],
                "guild_scheduled_events": [],
                "soundboard_sounds": [],
            }
        )
    return payload


def attachment_payload(attachment: FakeAttachment) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": str(attachment.id),
        "filename": attachment.filename,
        "size": attachment.size,
        "url": attachment.url,
        "proxy_url": attachment.url,
        "content_type": attachment.content_type,
        "flags": 0,
    }
    if attachment.description is not None:
        payload["description"] = attachment.description
    if attachment.ephemeral:
        payload["ephemeral"] = True
    if attachment.width is not None:
        payload["width"] = attachment.width
        payload["height"] = attachment.height
    return payload


def message_payload(
    message: FakeMessage, *, me_id: int | None = None, member: dict[str, Any] | None = None
) -> dict[str, Any]:
    current = message.current
    payload: dict[str, Any] = {
        "id": str(message.id),
        "channel_id": str(message.channel_id),
        "type": message.type,
        "author": user_payload(message.author),
        "content": current.content,
        "timestamp": iso(message.created_at),
        "edited_timestamp": iso(message.edited_at) if message.edited_at is not None else None,
        "tts": message.tts,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [attachment_payload(a) for a in current.attachments],
        "embeds": current.embeds,
        "components": current.components,
        "reactions": [
            {
                "emoji": emoji_payload(emoji),
                "count": len(users),
                "count_details": {"burst": 0, "normal": len(users)},
                "me": me_id in users,
                "me_burst": False,
                "burst_colors": [],
            }
            for emoji, users in message.reactions.items()
            if users
        ],
        "pinned": False,
        "flags": current.flags,
    }
    if message.guild_id is not None:
        payload["guild_id"] = str(message.guild_id)
    if member is not None:
        payload["member"] = member
    if message.webhook_id is not None:
        payload["webhook_id"] = str(message.webhook_id)
    if message.application_id is not None:
        payload["application_id"] = str(message.application_id)
    if message.message_reference is not None:
        payload["message_reference"] = message.message_reference
    interaction = message.interaction
    if interaction is not None:
        metadata: dict[str, Any] = {
            "id": str(interaction.id),
            "type": interaction.type,
            "user": user_payload(interaction.user),
            "authorizing_integration_owners": interaction.payload.get("authorizing_integration_owners", {}),
        }
        if interaction.original is not None and interaction.original is not message:
            metadata["original_response_message_id"] = str(interaction.original.id)
        if interaction.message is not None:
            metadata["interacted_message_id"] = str(interaction.message.id)
        payload["interaction_metadata"] = metadata
    return payload


def emoji_payload(emoji: str) -> dict[str, Any]:
    """``"🔁"`` -> unicode emoji; ``"name:123"`` (the URL form) -> custom emoji."""
    name, _, emoji_id = emoji.partition(":")
    if emoji_id.isdigit():
        return {"id": emoji_id, "name": name, "animated": False}
    return {"id": None, "name": emoji}


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG header (Discord reports them for images)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None
