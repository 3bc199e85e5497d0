"""The fake REST API under ``/api/v10``, plus the attachment CDN.

One middleware does what every route shares: parse the body once (JSON or multipart with
``payload_json`` + ``files[n]``), log the request, answer injected faults, check the bot token,
and turn :class:`~.errors.APIError` into Discord's JSON errors with ``Content-Type: application/json``
exactly (discord.py treats anything else as text).
"""

from __future__ import annotations

import asyncio
import json
import math
import mimetypes
import time
import traceback
import zlib
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from . import errors, payloads, permissions
from .errors import APIError, invalid_form_body
from .models import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    AUTOCOMPLETE_RESULT,
    CHANNEL_MESSAGE,
    DEFERRED_CHANNEL_MESSAGE,
    DEFERRED_UPDATE_MESSAGE,
    DM,
    FLAG_EPHEMERAL,
    FLAG_IS_COMPONENTS_V2,
    FLAG_LOADING,
    FLAG_SUPPRESS_EMBEDS,
    FLAG_SUPPRESS_NOTIFICATIONS,
    MESSAGE_COMPONENT,
    MODAL,
    MODAL_SUBMIT,
    UPDATE_MESSAGE,
    FakeAttachment,
    FakeChannel,
    FakeInteraction,
    FakeMessage,
    Fault,
    InteractionResponse,
    MessageRevision,
    RequestRecord,
)
from .validation import MAX_FILES, check_autocomplete, check_message, check_modal

if TYPE_CHECKING:
    from .server import FakeDiscord

API_PREFIX = "/api/v10"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Flags a bot may set when creating a message (others are Discord-controlled and ignored).
CREATE_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_EPHEMERAL | FLAG_SUPPRESS_NOTIFICATIONS | FLAG_IS_COMPONENTS_V2


@dataclass(frozen=True)
class UploadedFile:
    index: int
    filename: str
    data: bytes
    content_type: str | None


@dataclass(frozen=True)
class ParsedBody:
    json: Any  # whatever the JSON was (a list for bulk command overwrites)
    body: dict[str, Any]  # the JSON object, or {} (the message/callback body)
    files: list[UploadedFile]


# The middleware parses each body once; handlers run in the same task and read it here.
_parsed: ContextVar[ParsedBody] = ContextVar("fakediscord_parsed_body")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps(data, ensure_ascii=False).encode()
    return web.Response(
        body=body, status=status, headers={"Content-Type": "application/json", **(headers or {})}
    )


def no_content() -> web.Response:
    return web.Response(status=204)


def tiny_png() -> bytes:
    """A 1x1 transparent PNG, served for any CDN asset (avatars, icons)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 6, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0\0\0\0\0"))
        + chunk(b"IEND", b"")
    )


class RestApi:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.routes: dict[tuple[str, str], bool] = {}  # (method, template) -> needs the bot token

    # -- registration ------------------------------------------------------------------------
    def install(self, app: web.Application) -> None:
        bot = True
        token_auth = False  # interaction callbacks and webhook-token routes carry no Authorization
        table: list[tuple[str, str, Handler, bool]] = [
            ("GET", "/users/@me", self.get_me, bot),
            ("GET", "/users/{user_id}", self.get_user, bot),
            ("POST", "/users/@me/channels", self.create_dm, bot),
            ("GET", "/oauth2/applications/@me", self.get_application, bot),
            ("GET", "/applications/@me", self.get_application, bot),
            ("GET", "/gateway", self.get_gateway, token_auth),
            ("GET", "/gateway/bot", self.get_gateway_bot, bot),
            ("GET", "/applications/{application_id}/commands", self.get_commands, bot),
            ("PUT", "/applications/{application_id}/commands", self.put_commands, bot),
            ("POST", "/applications/{application_id}/commands", self.post_command, bot),
            ("GET", "/applications/{application_id}/commands/{command_id}", self.get_command, bot),
            ("PATCH", "/applications/{application_id}/commands/{command_id}", self.patch_command, bot),
            ("DELETE", "/applications/{application_id}/commands/{command_id}", self.delete_command, bot),
            ("GET", "/applications/{application_id}/guilds/{guild_id}/commands", self.get_commands, bot),
            ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", self.put_commands, bot),
            ("POST", "/applications/{application_id}/guilds/{guild_id}/commands", self.post_command, bot),
            (
                "GET",
                "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}",
                self.get_command,
                bot,
            ),
            (
                "PATCH",
                "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}",
                self.patch_command,
                bot,
            ),
            (
                "DELETE",
                "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}",
                self.delete_command,
                bot,
            ),
            (
                "POST",
                "/interactions/{interaction_id}/{interaction_token}/callback",
                self.interaction_callback,
                token_auth,
            ),
            ("POST", "/webhooks/{webhook_id}/{webhook_token}", self.execute_webhook, token_auth),
            (
                "GET",
                "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
                self.get_webhook_message,
                token_auth,
            ),
            (
                "PATCH",
                "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
                self.edit_webhook_message,
                token_auth,
            ),
            (
                "DELETE",
                "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
                self.delete_webhook_message,
                token_auth,
            ),
            ("GET", "/channels/{channel_id}", self.get_channel, bot),
            ("POST", "/channels/{channel_id}/typing", self.typing, bot),
            ("GET", "/channels/{channel_id}/messages", self.list_messages, bot),
            ("POST", "/channels/{channel_id}/messages", self.create_message, bot),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self.get_message, bot),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self.edit_message, bot),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self.delete_message, bot),
            (
                "PUT",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self.add_own_reaction,
                bot,
            ),
            (
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self.remove_own_reaction,
                bot,
            ),
            (
                "GET",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}",
                self.list_reactions,
                bot,
            ),
            (
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/{user_id}",
                self.remove_reaction,
                bot,
            ),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions", self.clear_reactions, bot),
            ("GET", "/guilds/{guild_id}", self.get_guild, bot),
            ("GET", "/guilds/{guild_id}/channels", self.get_guild_channels, bot),
            ("GET", "/guilds/{guild_id}/roles", self.get_guild_roles, bot),
            ("GET", "/guilds/{guild_id}/members", self.list_members, bot),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self.get_member, bot),
        ]
        for method, template, handler, needs_token in table:
            app.router.add_route(method, API_PREFIX + template, handler)
            self.routes[(method, template)] = needs_token
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self.cdn_attachment)
        app.router.add_get("/cdn/{tail:.*}", self.cdn_asset)

    def known_route(self, method: str | None, route: str) -> bool:
        return any(route == t and method in (None, m) for m, t in self.routes)

    # -- the shared middleware ---------------------------------------------------------------
    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else None
        if template in ("/gateway", "/gateway-resume") or (template or "").startswith(
            ("/cdn", "/attachments")
        ):
            return await handler(request)
        fake = self.fake
        loop = asyncio.get_running_loop()
        started = loop.time()
        params = dict(request.match_info)
        route = template[len(API_PREFIX) :] if template and template.startswith(API_PREFIX) else None
        if route and params.get("message_id") == "@original":
            route = route.replace("{message_id}", "@original")
        faulted = False
        body: Any = None
        files: list[UploadedFile] = []
        try:
            body, files = await self._read_body(request)
            _parsed.set(ParsedBody(body, body if isinstance(body, dict) else {}, files))
            if request.match_info.http_exception is not None or route is None:
                raise APIError(404, 0, "404: Not Found")
            fault = fake._take_fault(request.method, route, params)
            if fault is not None:
                faulted = True
                response = self._fault_response(fault, route)
            else:
                needs_token = self.routes.get((request.method, template[len(API_PREFIX) :]), True)
                if needs_token and request.headers.get("Authorization") != f"Bot {fake.token}":
                    raise errors.unauthorized()
                response = await handler(request)
        except APIError as exc:
            response = json_response(exc.body(), exc.status, exc.headers)
        except Exception as exc:  # a bug in the fake (or a payload it does not understand)
            fake._internal_error(f"{request.method} {request.path}: {exc!r}\n{traceback.format_exc()}")
            # 400, not 500: discord.py would retry a 5xx for ~25 s before failing.
            response = json_response({"message": f"fakediscord internal error: {exc!r}", "code": 0}, 400)
        record = RequestRecord(
            method=request.method,
            path=request.path,
            route=route,
            params=params,
            query=dict(request.query),
            status=response.status,
            at=started,
            json=body,
            filenames=tuple(f.filename for f in files),
            fault=faulted,
        )
        fake.requests.append(record)
        if route is None or request.match_info.http_exception is not None:
            fake.unhandled_requests.append(record)
        fake._notify()
        return response

    async def _read_body(self, request: web.Request) -> tuple[Any, list[UploadedFile]]:
        if request.method in ("GET", "HEAD") or not request.can_read_body:
            return None, []
        if request.content_type.startswith("multipart/"):
            body: Any = {}
            files: list[UploadedFile] = []
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    continue  # a nested multipart: Discord does not use them
                name = part.name or ""
                if name == "payload_json":
                    body = self._parse_json(await part.read(decode=True))
                elif name.startswith("files[") and name.endswith("]"):
                    data = bytes(await part.read(decode=False))
                    files.append(
                        UploadedFile(
                            index=int(name[6:-1]),
                            filename=part.filename or f"file{name[6:-1]}",
                            data=data,
                            content_type=part.headers.get("Content-Type"),
                        )
                    )
                else:
                    body[name] = (await part.read(decode=True)).decode()
            return body, files
        raw = await request.read()
        if not raw:
            return None, []
        return self._parse_json(raw), []

    @staticmethod
    def _parse_json(raw: bytes | bytearray) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            raise APIError(400, 50109, "The request body contains invalid JSON.") from None

    def _fault_response(self, fault: Fault, route: str) -> web.Response:
        if fault.status == 429:
            retry = fault.retry_after
            headers = {
                "Via": "1.1 google",
                "Retry-After": str(max(1, math.ceil(retry))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + retry:.3f}",
                "X-RateLimit-Reset-After": f"{retry:.3f}",
                "X-RateLimit-Bucket": f"fake{zlib.crc32(route.encode()):08x}",
                "X-RateLimit-Scope": "global" if fault.is_global else "user",
            }
            body: dict[str, Any] = {"message": fault.message, "retry_after": retry, "global": fault.is_global}
            if fault.is_global:
                headers["X-RateLimit-Global"] = "true"
            if fault.code:
                body["code"] = fault.code
            return json_response(body, 429, headers)
        if fault.status in (502, 504):
            # What Cloudflare answers: HTML, not JSON.
            text = f"<html><head><title>{fault.status} {fault.message}</title></head><body></body></html>"
            return web.Response(text=text, status=fault.status, content_type="text/html")
        return json_response({"message": fault.message, "code": fault.code}, fault.status)

    # -- helpers shared by handlers -------------------------------------------------------------
    def _channel(self, request: web.Request) -> FakeChannel:
        channel = self.fake.channels.get(int(request.match_info["channel_id"]))
        if channel is None:
            raise errors.unknown_channel()
        return channel

    def _bot_permissions(self, channel: FakeChannel) -> int:
        return self.fake.bot_permissions(channel)

    def _require(self, channel: FakeChannel, *needed: int) -> None:
        if channel.type == DM:
            return
        value = self._bot_permissions(channel)
        if not value & permissions.VIEW_CHANNEL:
            raise errors.missing_access()
        for bit in needed:
            if not value & bit:
                raise errors.missing_permissions()

    def _channel_message(self, request: web.Request, channel: FakeChannel) -> FakeMessage:
        message = self.fake.messages_by_id.get(int(request.match_info["message_id"]))
        if message is None or message.channel_id != channel.id or message.deleted or message.ephemeral:
            raise errors.unknown_message()
        return message

    def _check_application(self, request: web.Request) -> None:
        if int(request.match_info["application_id"]) != self.fake.app_id:
            raise errors.missing_access()

    def _message_json(self, message: FakeMessage) -> dict[str, Any]:
        return self.fake._message_json(message)

    def _attachments_for(
        self,
        body: dict[str, Any],
        files: list[UploadedFile],
        *,
        existing: list[FakeAttachment],
        channel_id: int,
        limit: int,
        ephemeral: bool,
        prefix: str = "",
    ) -> list[FakeAttachment]:
        """Discord's rule: ``attachments`` lists what to keep (existing ids) and describes new files (by index)."""
        if len(files) > MAX_FILES:
            raise invalid_form_body(
                {prefix + "attachments": ("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_FILES} or fewer in length.")}
            )
        for upload in files:
            if len(upload.data) > limit:
                raise errors.entity_too_large()
        by_index = {f.index: f for f in files}
        described: dict[int, dict[str, Any]] = {}
        kept: list[FakeAttachment] = []
        listed = body.get("attachments")
        if listed is None:
            kept = list(existing)
        else:
            known = {a.id: a for a in existing}
            for i, entry in enumerate(listed):
                entry_id = int(entry.get("id"))
                if entry_id in known:
                    kept.append(known[entry_id])
                elif entry_id in by_index:
                    described[entry_id] = entry
                else:
                    raise invalid_form_body(
                        {
                            f"{prefix}attachments.{i}.id": (
                                "ATTACHMENT_NOT_FOUND",
                                f"Unknown attachment {entry_id}",
                            )
                        }
                    )
        new = [
            self.fake._new_attachment(
                channel_id,
                upload.filename,
                upload.data,
                upload.content_type,
                description=described.get(upload.index, {}).get("description"),
                ephemeral=ephemeral,
            )
            for upload in sorted(files, key=lambda f: f.index)
        ]
        result = kept + new
        if len(result) > MAX_FILES:
            raise invalid_form_body(
                {prefix + "attachments": ("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_FILES} or fewer in length.")}
            )
        return result

    def _validate(self, body: dict[str, Any], prefix: str = "") -> None:
        problems = check_message(body, prefix=prefix)
        if problems:
            raise invalid_form_body(problems)

    @staticmethod
    def _ensure_not_empty(revision: MessageRevision, body: dict[str, Any]) -> None:
        if not (
            revision.content
            or revision.embeds
            or revision.components
            or revision.attachments
            or body.get("sticker_ids")
            or body.get("poll")
        ):
            raise errors.empty_message()

    def _new_revision(
        self,
        body: dict[str, Any],
        files: list[UploadedFile],
        *,
        channel_id: int,
        limit: int,
        flags: int,
        via: str,
        prefix: str = "",
    ) -> MessageRevision:
        revision = MessageRevision(
            content=str(body.get("content") or ""),
            embeds=list(body.get("embeds") or []),
            components=list(body.get("components") or []),
            attachments=self._attachments_for(
                body,
                files,
                existing=[],
                channel_id=channel_id,
                limit=limit,
                ephemeral=bool(flags & FLAG_EPHEMERAL),
                prefix=prefix,
            ),
            flags=flags,
            at=asyncio.get_running_loop().time(),
            via=via,
        )
        self._ensure_not_empty(revision, body)
        return revision

    def _apply_edit(
        self,
        message: FakeMessage,
        body: dict[str, Any],
        files: list[UploadedFile],
        *,
        limit: int,
        via: str,
        prefix: str = "",
    ) -> FakeMessage:
        """PATCH semantics: keys present replace, keys absent keep; the loading flag goes away."""
        self._validate(body, prefix)
        old = message.current
        flags = old.flags & ~FLAG_LOADING
        if "flags" in body and body["flags"] is not None:
            requested = int(body["flags"])
            flags = (flags & ~(FLAG_SUPPRESS_EMBEDS | FLAG_IS_COMPONENTS_V2)) | (
                requested & (FLAG_SUPPRESS_EMBEDS | FLAG_IS_COMPONENTS_V2)
            )
        revision = MessageRevision(
            content=str(body["content"] or "") if "content" in body else old.content,
            embeds=list(body["embeds"] or []) if "embeds" in body else old.embeds,
            components=list(body["components"] or []) if "components" in body else old.components,
            attachments=self._attachments_for(
                body,
                files,
                existing=old.attachments,
                channel_id=message.channel_id,
                limit=limit,
                ephemeral=message.ephemeral,
                prefix=prefix,
            ),
            flags=flags,
            at=asyncio.get_running_loop().time(),
            via=via,
        )
        self._ensure_not_empty(revision, body)
        message.revisions.append(revision)
        message.edited_at = time.time()
        self.fake._dispatch_message_event("MESSAGE_UPDATE", message)
        return message

    # -- users, application, gateway ----------------------------------------------------------
    async def get_me(self, request: web.Request) -> web.Response:
        fake = self.fake
        return json_response(
            {
                **payloads.user_payload(fake.bot),
                "verified": True,
                "mfa_enabled": False,
                "email": None,
                "locale": "en-US",
            }
        )

    async def get_user(self, request: web.Request) -> web.Response:
        user = self.fake.users.get(int(request.match_info["user_id"]))
        if user is None:
            raise APIError(404, 10013, "Unknown User")
        return json_response(payloads.user_payload(user))

    async def create_dm(self, request: web.Request) -> web.Response:
        body = _parsed.get().body
        user = self.fake.users.get(int(body.get("recipient_id") or 0))
        if user is None:
            raise invalid_form_body({"recipient_id": ("USER_NOT_FOUND", "Unknown user")})
        channel = self.fake.dm_channel(user)
        return json_response(payloads.channel_payload(channel, recipients=[user]))

    async def get_application(self, request: web.Request) -> web.Response:
        fake = self.fake
        return json_response(
            {
                "id": str(fake.app_id),
                "name": fake.bot.username,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "rpc_origins": [],
                "bot_public": True,
                "bot_require_code_grant": False,
                "bot": payloads.user_payload(fake.bot),
                "owner": payloads.user_payload(fake.owner),
                "team": None,
                "verify_key": "0" * 64,
                "flags": fake.application_flags,
                "tags": [],
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "approximate_guild_count": len(fake.bot_guilds()),
                "integration_types_config": {"0": {}},
            }
        )

    async def get_gateway(self, request: web.Request) -> web.Response:
        return json_response({"url": self.fake.gateway_url})

    async def get_gateway_bot(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "url": self.fake.gateway_url,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        )

    # -- application commands -------------------------------------------------------------------
    def _command_scope(self, request: web.Request) -> int | None:
        self._check_application(request)
        guild_id = request.match_info.get("guild_id")
        if guild_id is None:
            return None
        guild = self.fake.guilds.get(int(guild_id))
        if guild is None or self.fake.bot.id not in guild.members:
            raise errors.missing_access()
        return guild.id

    async def get_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        return json_response(self.fake.commands_for(scope))

    async def put_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        body = _parsed.get().json
        if not isinstance(body, list):
            raise invalid_form_body({"_": ("LIST_TYPE_CONVERT", "Must be an array.")})
        return json_response(self.fake._replace_commands(scope, body))

    async def post_command(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        body = _parsed.get().body
        existing = [
            c
            for c in self.fake.commands_for(scope)
            if (c.get("type", 1), c["name"]) != (body.get("type", 1), body.get("name"))
        ]
        result = self.fake._replace_commands(scope, [*existing, body], record=False)
        created = next(
            c for c in result if (c.get("type", 1), c["name"]) == (body.get("type", 1), body.get("name"))
        )
        return json_response(created, 201)

    def _find_command(self, request: web.Request) -> tuple[int | None, dict[str, Any]]:
        scope = self._command_scope(request)
        command_id = request.match_info["command_id"]
        for command in self.fake.commands_for(scope):
            if command["id"] == command_id:
                return scope, command
        raise APIError(404, 10063, "Unknown application command")

    async def get_command(self, request: web.Request) -> web.Response:
        return json_response(self._find_command(request)[1])

    async def patch_command(self, request: web.Request) -> web.Response:
        scope, command = self._find_command(request)
        updated = {**command, **_parsed.get().body}
        others = [c for c in self.fake.commands_for(scope) if c["id"] != command["id"]]
        result = self.fake._replace_commands(scope, [*others, updated], record=False)
        return json_response(next(c for c in result if c["name"] == updated["name"]))

    async def delete_command(self, request: web.Request) -> web.Response:
        scope, command = self._find_command(request)
        others = [c for c in self.fake.commands_for(scope) if c["id"] != command["id"]]
        self.fake._replace_commands(scope, others, record=False)
        return no_content()

    # -- interactions -----------------------------------------------------------------------------
    async def interaction_callback(self, request: web.Request) -> web.Response:
        fake = self.fake
        interaction = fake._interactions_by_id.get(int(request.match_info["interaction_id"]))
        if interaction is None or interaction.token != request.match_info["interaction_token"]:
            raise errors.unknown_interaction()
        body, files = _parsed.get().body, _parsed.get().files
        kind = int(body.get("type") or 0)
        data = body.get("data")
        now = asyncio.get_running_loop().time()
        delay = None if interaction.dispatched_at is None else now - interaction.dispatched_at
        record = InteractionResponse(type=kind, data=data, files=[], at=now, delay=delay, status=0)
        already = interaction.acknowledged
        interaction.responses.append(record)
        try:
            if already:
                raise errors.already_acknowledged()
            if delay is None or delay > fake.ack_deadline:
                raise errors.unknown_interaction()
            message = self._apply_callback(interaction, kind, data or {}, files, record)
        except APIError as exc:
            record.status, record.error = exc.status, exc.body()
            raise
        with_response = request.query.get("with_response", "").lower() in ("1", "true")
        record.status = 200 if with_response else 204
        fake._notify()
        if not with_response:
            return no_content()
        summary: dict[str, Any] = {
            "id": str(interaction.id),
            "type": interaction.type,
            "activity_instance_id": None,
            "response_message_id": str(message.id) if message is not None else None,
            "response_message_loading": kind == DEFERRED_CHANNEL_MESSAGE,
            "response_message_ephemeral": bool(message is not None and message.ephemeral),
        }
        resource: dict[str, Any] = {"type": kind}
        if message is not None and kind in (CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, UPDATE_MESSAGE):
            resource["message"] = self._message_json(message)
        return json_response({"interaction": summary, "resource": resource})

    def _apply_callback(
        self,
        interaction: FakeInteraction,
        kind: int,
        data: dict[str, Any],
        files: list[UploadedFile],
        record: InteractionResponse,
    ) -> FakeMessage | None:
        fake = self.fake
        allowed = {
            CHANNEL_MESSAGE: (APPLICATION_COMMAND, MESSAGE_COMPONENT, MODAL_SUBMIT),
            DEFERRED_CHANNEL_MESSAGE: (APPLICATION_COMMAND, MESSAGE_COMPONENT, MODAL_SUBMIT),
            DEFERRED_UPDATE_MESSAGE: (MESSAGE_COMPONENT, MODAL_SUBMIT),
            UPDATE_MESSAGE: (MESSAGE_COMPONENT, MODAL_SUBMIT),
            AUTOCOMPLETE_RESULT: (AUTOCOMPLETE,),
            MODAL: (APPLICATION_COMMAND, MESSAGE_COMPONENT),
        }
        if kind not in allowed:
            raise invalid_form_body(
                {"type": ("BASE_TYPE_CHOICES", "Value must be one of {4, 5, 6, 7, 8, 9}.")}
            )
        if interaction.type not in allowed[kind] or (kind in (6, 7) and interaction.message is None):
            raise invalid_form_body(
                {
                    "type": (
                        "INTERACTION_RESPONSE_TYPE_INVALID",
                        f"Response type {kind} is not valid for this interaction",
                    )
                }
            )
        limit = int(interaction.payload["attachment_size_limit"])
        if kind == CHANNEL_MESSAGE:
            self._validate(data, "data.")
            flags = int(data.get("flags") or 0) & CREATE_FLAGS
            revision = self._new_revision(
                data,
                files,
                channel_id=interaction.channel_id or 0,
                limit=limit,
                flags=flags,
                via="callback 4",
                prefix="data.",
            )
            record.files = revision.attachments
            message = fake._interaction_message(interaction, revision)
            interaction.original = message
            return message
        if kind == DEFERRED_CHANNEL_MESSAGE:
            flags = FLAG_LOADING | (int(data.get("flags") or 0) & FLAG_EPHEMERAL)
            revision = MessageRevision("", [], [], [], flags, record.at, "callback 5")
            message = fake._interaction_message(interaction, revision)
            interaction.original = message
            return message
        if kind == DEFERRED_UPDATE_MESSAGE:
            interaction.original = interaction.message
            return interaction.message
        if kind == UPDATE_MESSAGE:
            assert interaction.message is not None
            message = self._apply_edit(
                interaction.message, data, files, limit=limit, via="callback 7", prefix="data."
            )
            record.files = message.attachments
            interaction.original = message
            return message
        if kind == AUTOCOMPLETE_RESULT:
            problems = check_autocomplete(data)
            if problems:
                raise invalid_form_body(problems)
            return None
        problems = check_modal(data)
        if problems:
            raise invalid_form_body(problems)
        return None

    def _interaction_for_token(self, request: web.Request) -> FakeInteraction:
        if int(request.match_info["webhook_id"]) != self.fake.app_id:
            raise errors.unknown_webhook()
        interaction = self.fake._interactions_by_token.get(request.match_info["webhook_token"])
        if interaction is None or interaction.token_expired():
            raise errors.invalid_webhook_token()
        return interaction

    def _webhook_message(self, request: web.Request, interaction: FakeInteraction) -> FakeMessage:
        message_id = request.match_info["message_id"]
        if message_id == "@original":
            if not interaction.acknowledged:
                raise errors.unknown_webhook()
            message = interaction.original
        else:
            message = self.fake.messages_by_id.get(int(message_id))
            if (
                message is not None
                and message is not interaction.original
                and message not in interaction.followups
            ):
                message = None
        if message is None or message.deleted:
            raise errors.unknown_message()
        return message

    async def execute_webhook(self, request: web.Request) -> web.Response:
        fake = self.fake
        interaction = self._interaction_for_token(request)
        if not interaction.acknowledged:
            raise errors.unknown_webhook()
        body, files = _parsed.get().body, _parsed.get().files
        self._validate(body)
        limit = int(interaction.payload["attachment_size_limit"])
        original = interaction.original
        response = interaction.response
        assert response is not None
        if (
            fake.first_followup_edits_deferred
            and response.type == DEFERRED_CHANNEL_MESSAGE
            and original is not None
            and original.loading
        ):
            # Discord: the first followup after a "thinking" defer replaces the loading message,
            # keeping the defer's ephemerality whatever the followup's flags say -- and when the
            # loading message was deleted first, there is nothing to replace: 404 Unknown Message.
            if original.deleted:
                raise errors.unknown_message()
            message = self._apply_edit(
                original, {"attachments": [], **body}, files, limit=limit, via="followup"
            )
        else:
            flags = int(body.get("flags") or 0) & CREATE_FLAGS
            revision = self._new_revision(
                body, files, channel_id=interaction.channel_id or 0, limit=limit, flags=flags, via="followup"
            )
            message = fake._interaction_message(interaction, revision)
        interaction.followups.append(message)
        fake._notify()
        if request.query.get("wait", "").lower() in ("1", "true"):
            return json_response(self._message_json(message))
        return no_content()

    async def get_webhook_message(self, request: web.Request) -> web.Response:
        interaction = self._interaction_for_token(request)
        return json_response(self._message_json(self._webhook_message(request, interaction)))

    async def edit_webhook_message(self, request: web.Request) -> web.Response:
        interaction = self._interaction_for_token(request)
        message = self._webhook_message(request, interaction)
        limit = int(interaction.payload["attachment_size_limit"])
        via = f"PATCH {request.match_info['message_id'] if request.match_info['message_id'] == '@original' else 'webhook message'}"
        self._apply_edit(message, _parsed.get().body, _parsed.get().files, limit=limit, via=via)
        return json_response(self._message_json(message))

    async def delete_webhook_message(self, request: web.Request) -> web.Response:
        interaction = self._interaction_for_token(request)
        message = self._webhook_message(request, interaction)
        self.fake._delete_message(message)
        return no_content()

    # -- channels and messages ----------------------------------------------------------------------
    async def get_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        self._require(channel)
        recipients = [self.fake.users[u] for u in channel.recipient_ids if u in self.fake.users]
        return json_response(payloads.channel_payload(channel, recipients=recipients))

    async def typing(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        self._require(
            channel, permissions.SEND_MESSAGES_IN_THREADS if channel.is_thread else permissions.SEND_MESSAGES
        )
        self.fake.typing.append((channel.id, asyncio.get_running_loop().time()))
        return no_content()

    async def create_message(self, request: web.Request) -> web.Response:
        fake = self.fake
        channel = self._channel(request)
        body, files = _parsed.get().body, _parsed.get().files
        send = permissions.SEND_MESSAGES_IN_THREADS if channel.is_thread else permissions.SEND_MESSAGES
        needed = [send]
        if files:
            needed.append(permissions.ATTACH_FILES)
        reference = body.get("message_reference")
        if reference:
            needed.append(permissions.READ_MESSAGE_HISTORY)
        self._require(channel, *needed)
        self._validate(body)
        kind = 0
        if reference:
            target = fake.messages_by_id.get(int(reference.get("message_id") or 0))
            if target is None or target.deleted or target.ephemeral:
                if reference.get("fail_if_not_exists", True):
                    raise invalid_form_body(
                        {"message_reference": ("MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")}
                    )
                reference = None
            else:
                kind = 19
                reference = {
                    "type": 0,
                    "message_id": str(target.id),
                    "channel_id": str(target.channel_id),
                    **({"guild_id": str(target.guild_id)} if target.guild_id else {}),
                }
        flags = int(body.get("flags") or 0) & CREATE_FLAGS & ~FLAG_EPHEMERAL
        revision = self._new_revision(
            body,
            files,
            channel_id=channel.id,
            limit=fake.filesize_limit(channel),
            flags=flags,
            via="POST /channels/{channel_id}/messages",
        )
        message = fake._store_message(
            FakeMessage(
                id=fake.ids.new(),
                channel_id=channel.id,
                guild_id=channel.guild_id,
                author=fake.bot,
                revisions=[revision],
                type=kind,
                tts=bool(body.get("tts")),
                message_reference=reference,
            )
        )
        return json_response(self._message_json(message))

    async def list_messages(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        self._require(channel, permissions.READ_MESSAGE_HISTORY)
        query = request.query
        limit = max(1, min(100, int(query.get("limit", 50))))
        visible = [
            m for m in self.fake.messages if m.channel_id == channel.id and not m.deleted and not m.ephemeral
        ]
        if "before" in query:
            visible = [m for m in visible if m.id < int(query["before"])]
        if "after" in query:
            visible = [m for m in visible if m.id > int(query["after"])]
            visible = visible[:limit]
        if "around" in query:
            pivot = int(query["around"])
            visible.sort(key=lambda m: abs(m.id - pivot))
            visible = sorted(visible[:limit], key=lambda m: m.id)
        newest_first = sorted(visible, key=lambda m: m.id, reverse=True)[:limit]
        return json_response([self._message_json(m) for m in newest_first])

    async def get_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        self._require(channel, permissions.READ_MESSAGE_HISTORY)
        return json_response(self._message_json(self._channel_message(request, channel)))

    async def edit_message(self, request: web.Request) -> web.Response:
        fake = self.fake
        channel = self._channel(request)
        self._require(channel)
        message = self._channel_message(request, channel)
        if message.author is not fake.bot:
            raise APIError(403, 50005, "Cannot edit a message authored by another user")
        self._apply_edit(
            message,
            _parsed.get().body,
            _parsed.get().files,
            limit=fake.filesize_limit(channel),
            via="PATCH /channels/{channel_id}/messages/{message_id}",
        )
        return json_response(self._message_json(message))

    async def delete_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message = self._channel_message(request, channel)
        if message.author is not self.fake.bot:
            self._require(channel, permissions.MANAGE_MESSAGES)
        else:
            self._require(channel)
        self.fake._delete_message(message)
        return no_content()

    async def add_own_reaction(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message = self._channel_message(request, channel)
        emoji = request.match_info["emoji"]
        needed = [permissions.READ_MESSAGE_HISTORY]
        if not message.reactions.get(emoji):
            needed.append(permissions.ADD_REACTIONS)
        self._require(channel, *needed)
        self.fake._add_reaction(self.fake.bot, message, emoji)
        return no_content()

    async def remove_own_reaction(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message = self._channel_message(request, channel)
        self._require(channel)
        self.fake._remove_reaction(self.fake.bot, message, request.match_info["emoji"])
        return no_content()

    async def remove_reaction(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message = self._channel_message(request, channel)
        self._require(channel, permissions.MANAGE_MESSAGES)
        user = self.fake.users.get(int(request.match_info["user_id"]))
        if user is not None:
            self.fake._remove_reaction(user, message, request.match_info["emoji"])
        return no_content()

    async def clear_reactions(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message = self._channel_message(request, channel)
        self._require(channel, permissions.MANAGE_MESSAGES)
        message.reactions.clear()
        return no_content()

    async def list_reactions(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message = self._channel_message(request, channel)
        self._require(channel, permissions.READ_MESSAGE_HISTORY)
        users = message.reactions.get(request.match_info["emoji"], [])
        return json_response(
            [payloads.user_payload(self.fake.users[u]) for u in users if u in self.fake.users]
        )

    # -- guilds ----------------------------------------------------------------------------
    def _guild(self, request: web.Request):
        guild = self.fake.guilds.get(int(request.match_info["guild_id"]))
        if guild is None or self.fake.bot.id not in guild.members:
            raise APIError(404, 10004, "Unknown Guild")
        return guild

    async def get_guild(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        payload = payloads.guild_payload(guild, full=False)
        if request.query.get("with_counts", "").lower() in ("1", "true"):
            payload["approximate_member_count"] = len(guild.members)
            payload["approximate_presence_count"] = 0
        return json_response(payload)

    async def get_guild_channels(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        return json_response(
            [payloads.channel_payload(c) for c in guild.channels.values() if not c.is_thread]
        )

    async def get_guild_roles(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        return json_response([payloads.role_payload(r) for r in guild.roles.values()])

    async def list_members(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        if "members" not in self.fake.privileged_intents:
            raise errors.missing_access()
        limit = max(1, min(1000, int(request.query.get("limit", 1))))
        after = int(request.query.get("after", 0))
        members = sorted((m for m in guild.members.values() if m.user.id > after), key=lambda m: m.user.id)
        return json_response([payloads.member_payload(m) for m in members[:limit]])

    async def get_member(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        member = guild.members.get(int(request.match_info["user_id"]))
        if member is None:
            raise APIError(404, 10007, "Unknown Member")
        return json_response(payloads.member_payload(member))

    # -- CDN -------------------------------------------------------------------------------------
    async def cdn_attachment(self, request: web.Request) -> web.Response:
        attachment = self.fake.attachments.get(int(request.match_info["attachment_id"]))
        if attachment is None:
            return web.Response(status=404, text="Not Found")
        content_type = attachment.content_type or "application/octet-stream"
        self.fake.cdn_downloads.append(attachment.id)
        return web.Response(body=attachment.data, headers={"Content-Type": content_type})

    async def cdn_asset(self, request: web.Request) -> web.Response:
        return web.Response(body=tiny_png(), headers={"Content-Type": "image/png"})


def guess_content_type(filename: str, declared: str | None) -> str | None:
    """Discord infers the type from the name; discord.py declares every file application/octet-stream."""
    guessed, _ = mimetypes.guess_type(filename)
    if guessed:
        return guessed
    if declared and declared != "application/octet-stream":
        return declared
    return None
