"""Errors: the JSON errors the fake answers with, and the errors a test sees when it misuses the fake."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class APIError(Exception):
    """Raised inside a route handler; the server turns it into a Discord-shaped JSON error."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        errors: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = dict(errors) if errors else None
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


def invalid_form_body(problems: Mapping[str, tuple[str, str]]) -> APIError:
    """A 400 / 50035 "Invalid Form Body" with Discord's nested ``errors`` tree.

    ``problems`` maps a dotted path (``"data.components.0.custom_id"``) to ``(CODE, message)``.
    discord.py flattens the tree back into ``"In data.components.0.custom_id: message"``.
    """
    tree: dict[str, Any] = {}
    for path, (code, message) in problems.items():
        node = tree
        for part in path.split("."):
            node = node.setdefault(part, {})
        node.setdefault("_errors", []).append({"code": code, "message": message})
    return APIError(400, 50035, "Invalid Form Body", errors=tree)


# The handful of Discord JSON errors the fake answers with, by name.
def unauthorized() -> APIError:
    return APIError(401, 0, "401: Unauthorized")


def missing_access() -> APIError:
    return APIError(403, 50001, "Missing Access")


def missing_permissions() -> APIError:
    return APIError(403, 50013, "Missing Permissions")


def unknown_channel() -> APIError:
    return APIError(404, 10003, "Unknown Channel")


def unknown_message() -> APIError:
    return APIError(404, 10008, "Unknown Message")


def unknown_webhook() -> APIError:
    return APIError(404, 10015, "Unknown Webhook")


def unknown_interaction() -> APIError:
    return APIError(404, 10062, "Unknown interaction")


def invalid_webhook_token() -> APIError:
    return APIError(401, 50027, "Invalid Webhook Token")


def already_acknowledged() -> APIError:
    return APIError(400, 40060, "Interaction has already been acknowledged.")


def empty_message() -> APIError:
    return APIError(400, 50006, "Cannot send an empty message")


def entity_too_large() -> APIError:
    return APIError(413, 40005, "Request entity too large")


class FakeDiscordUsageError(ValueError):
    """A test asked the fake for something a real Discord user could not do (or the fake cannot)."""


class WaitTimeout(AssertionError):
    """A ``wait_for_*`` helper gave up; the message says what was awaited and what happened instead."""
