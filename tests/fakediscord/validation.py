"""Discord's documented limits, checked where cheap, so a bot that breaks one fails in tests as it would live.

Each ``check_*`` returns ``{dotted.path: (CODE, message)}``; the caller raises
:func:`errors.invalid_form_body` when it is not empty (a 400 / 50035 like Discord's).
"""

from __future__ import annotations

import re
from typing import Any

from .models import FLAG_IS_COMPONENTS_V2

Problems = dict[str, tuple[str, str]]

MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_EMBED_TOTAL = 6000
MAX_FILES = 10
MAX_CUSTOM_ID = 100
MAX_ACTION_ROWS = 5
MAX_ROW_BUTTONS = 5
MAX_BUTTON_LABEL = 80
MAX_SELECT_OPTIONS = 25
MAX_V2_COMPONENTS = 40
MAX_AUTOCOMPLETE_CHOICES = 25
MAX_CHOICE_NAME = 100
MAX_MODAL_TITLE = 45
MAX_MODAL_COMPONENTS = 5
MAX_TEXT_INPUT = 4000
MAX_LABEL = 45
MAX_COMMANDS = 100
MAX_OPTIONS = 25
MAX_DESCRIPTION = 100

COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$")


def _too_long(limit: int) -> tuple[str, str]:
    return ("BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")


def _bad_length(low: int, high: int) -> tuple[str, str]:
    return ("BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")


def check_message(body: dict[str, Any], *, prefix: str = "") -> Problems:
    """Content, embeds and components of a message create/edit body (JSON or ``payload_json``)."""
    problems: Problems = {}
    content = body.get("content")
    if content is not None and len(str(content)) > MAX_CONTENT:
        problems[prefix + "content"] = _too_long(MAX_CONTENT)
    embeds = body.get("embeds") or []
    if len(embeds) > MAX_EMBEDS:
        problems[prefix + "embeds"] = _too_long(MAX_EMBEDS)
    problems.update(_check_embeds(embeds, prefix + "embeds"))
    flags = int(body.get("flags") or 0)
    components = body.get("components") or []
    if flags & FLAG_IS_COMPONENTS_V2:
        if content or embeds:
            problems[prefix + "content"] = (
                "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
                "The 'content' and 'embeds' fields cannot be used when using MessageFlags.IS_COMPONENTS_V2",
            )
        if _count(components) > MAX_V2_COMPONENTS:
            problems[prefix + "components"] = _too_long(MAX_V2_COMPONENTS)
    elif components:
        problems.update(_check_legacy_components(components, prefix + "components"))
    problems.update(_check_custom_ids(components, prefix + "components"))
    return problems


def _count(components: list[dict[str, Any]]) -> int:
    total = 0
    for component in components:
        total += 1 + _count(component.get("components") or [])
        if isinstance(component.get("accessory"), dict):
            total += 1
    return total


def _check_embeds(embeds: list[dict[str, Any]], path: str) -> Problems:
    problems: Problems = {}
    total = 0
    for i, embed in enumerate(embeds):
        here = f"{path}.{i}"
        for key, limit in (("title", 256), ("description", 4096)):
            text = embed.get(key) or ""
            total += len(text)
            if len(text) > limit:
                problems[f"{here}.{key}"] = _too_long(limit)
        fields = embed.get("fields") or []
        if len(fields) > 25:
            problems[f"{here}.fields"] = _too_long(25)
        for j, fld in enumerate(fields):
            name, value = str(fld.get("name", "")), str(fld.get("value", ""))
            total += len(name) + len(value)
            if not 1 <= len(name) <= 256:
                problems[f"{here}.fields.{j}.name"] = _bad_length(1, 256)
            if not 1 <= len(value) <= 1024:
                problems[f"{here}.fields.{j}.value"] = _bad_length(1, 1024)
        footer = (embed.get("footer") or {}).get("text") or ""
        author = (embed.get("author") or {}).get("name") or ""
        total += len(footer) + len(author)
        if len(footer) > 2048:
            problems[f"{here}.footer.text"] = _too_long(2048)
        if len(author) > 256:
            problems[f"{here}.author.name"] = _too_long(256)
    if total > MAX_EMBED_TOTAL:
        problems[path] = ("MAX_EMBED_SIZE_EXCEEDED", f"Embed size exceeds maximum size of {MAX_EMBED_TOTAL}")
    return problems


def _check_legacy_components(rows: list[dict[str, Any]], path: str) -> Problems:
    problems: Problems = {}
    if len(rows) > MAX_ACTION_ROWS:
        problems[path] = _too_long(MAX_ACTION_ROWS)
    for i, row in enumerate(rows):
        here = f"{path}.{i}"
        if row.get("type") != 1:
            problems[f"{here}.type"] = (
                "UNION_TYPE_CHOICES",
                'Value of field "type" must be one of (1,) without MessageFlags.IS_COMPONENTS_V2.',
            )
            continue
        children = row.get("components") or []
        buttons = [c for c in children if c.get("type") == 2]
        if (
            not children
            or len(children) > MAX_ROW_BUTTONS
            or (len(buttons) != len(children) and len(children) != 1)
        ):
            problems[f"{here}.components"] = (
                "BASE_TYPE_BAD_LENGTH",
                "An action row holds 1 to 5 buttons or exactly one select menu.",
            )
        for j, child in enumerate(children):
            problems.update(_check_interactive(child, f"{here}.components.{j}"))
    return problems


def _check_interactive(component: dict[str, Any], path: str) -> Problems:
    problems: Problems = {}
    kind = component.get("type")
    if kind == 2:
        style = component.get("style")
        if len(component.get("label") or "") > MAX_BUTTON_LABEL:
            problems[f"{path}.label"] = _too_long(MAX_BUTTON_LABEL)
        if style == 5 and not component.get("url"):
            problems[f"{path}.url"] = ("BASE_TYPE_REQUIRED", "This field is required")
        if style in (1, 2, 3, 4) and not component.get("custom_id"):
            problems[f"{path}.custom_id"] = ("BASE_TYPE_REQUIRED", "This field is required")
    elif kind in (3, 5, 6, 7, 8):
        options = component.get("options") or []
        if kind == 3 and not 1 <= len(options) <= MAX_SELECT_OPTIONS:
            problems[f"{path}.options"] = _bad_length(1, MAX_SELECT_OPTIONS)
    return problems


def _check_custom_ids(components: list[dict[str, Any]], path: str) -> Problems:
    problems: Problems = {}
    seen: set[str] = set()

    def visit(items: list[dict[str, Any]], where: str) -> None:
        for i, item in enumerate(items):
            here = f"{where}.{i}"
            custom_id = item.get("custom_id")
            if custom_id is not None:
                if len(custom_id) > MAX_CUSTOM_ID:
                    problems[f"{here}.custom_id"] = _too_long(MAX_CUSTOM_ID)
                if custom_id in seen:
                    problems[f"{here}.custom_id"] = (
                        "COMPONENT_CUSTOM_ID_DUPLICATED",
                        "Component custom id cannot be duplicated",
                    )
                seen.add(custom_id)
            visit(item.get("components") or [], f"{here}.components")
            for key in ("accessory", "component"):
                if isinstance(item.get(key), dict):
                    visit([item[key]], f"{here}.{key}")

    visit(components, path)
    return problems


def check_modal(data: dict[str, Any]) -> Problems:
    problems: Problems = {}
    title = data.get("title") or ""
    if not 1 <= len(title) <= MAX_MODAL_TITLE:
        problems["data.title"] = _bad_length(1, MAX_MODAL_TITLE)
    custom_id = data.get("custom_id") or ""
    if not 1 <= len(custom_id) <= MAX_CUSTOM_ID:
        problems["data.custom_id"] = _bad_length(1, MAX_CUSTOM_ID)
    components = data.get("components") or []
    if not 1 <= len(components) <= MAX_MODAL_COMPONENTS:
        problems["data.components"] = _bad_length(1, MAX_MODAL_COMPONENTS)
    for i, top in enumerate(components):
        here = f"data.components.{i}"
        if top.get("type") == 1:
            inner = top.get("components") or []
            if len(inner) != 1:
                problems[f"{here}.components"] = _bad_length(1, 1)
            items = [(f"{here}.components.{j}", c) for j, c in enumerate(inner)]
            label_limit = MAX_LABEL
        elif top.get("type") == 18:
            if len(top.get("label") or "") > MAX_LABEL:
                problems[f"{here}.label"] = _too_long(MAX_LABEL)
            items = [(f"{here}.component", top.get("component") or {})]
            label_limit = None
        else:
            continue
        for where, item in items:
            if item.get("type") != 4:
                continue
            if label_limit is not None and len(item.get("label") or "") > label_limit:
                problems[f"{where}.label"] = _too_long(label_limit)
            for key in ("max_length", "min_length"):
                if item.get(key) is not None and not 0 <= int(item[key]) <= MAX_TEXT_INPUT:
                    problems[f"{where}.{key}"] = (
                        "NUMBER_TYPE_MAX",
                        f"int value should be <= {MAX_TEXT_INPUT}.",
                    )
            if len(item.get("value") or "") > MAX_TEXT_INPUT:
                problems[f"{where}.value"] = _too_long(MAX_TEXT_INPUT)
    problems.update(_check_custom_ids(components, "data.components"))
    return problems


def check_autocomplete(data: dict[str, Any]) -> Problems:
    problems: Problems = {}
    choices = data.get("choices") or []
    if len(choices) > MAX_AUTOCOMPLETE_CHOICES:
        problems["data.choices"] = _too_long(MAX_AUTOCOMPLETE_CHOICES)
    for i, choice in enumerate(choices):
        name = str(choice.get("name", ""))
        if not 1 <= len(name) <= MAX_CHOICE_NAME:
            problems[f"data.choices.{i}.name"] = _bad_length(1, MAX_CHOICE_NAME)
        value = choice.get("value")
        if isinstance(value, str) and len(value) > MAX_CHOICE_NAME:
            problems[f"data.choices.{i}.value"] = _too_long(MAX_CHOICE_NAME)
    return problems


def check_commands(commands: list[dict[str, Any]]) -> Problems:
    problems: Problems = {}
    chat = [c for c in commands if c.get("type", 1) == 1]
    if len(chat) > MAX_COMMANDS:
        problems["_"] = _too_long(MAX_COMMANDS)
    seen: set[tuple[int, str]] = set()
    for i, command in enumerate(commands):
        kind = command.get("type", 1)
        name = str(command.get("name", ""))
        if (kind, name) in seen:
            problems[f"{i}.name"] = (
                "APPLICATION_COMMANDS_DUPLICATE_NAME",
                f"Application command names must be unique: {name!r}",
            )
        seen.add((kind, name))
        if kind == 1:
            if not COMMAND_NAME.match(name) or name != name.lower():
                problems[f"{i}.name"] = (
                    "APPLICATION_COMMAND_INVALID_NAME",
                    f"Command name is invalid: {name!r}",
                )
            description = str(command.get("description", ""))
            if not 1 <= len(description) <= MAX_DESCRIPTION:
                problems[f"{i}.description"] = _bad_length(1, MAX_DESCRIPTION)
            problems.update(_check_options(command.get("options") or [], f"{i}.options", depth=0))
        elif not 1 <= len(name) <= 32:
            problems[f"{i}.name"] = _bad_length(1, 32)
    return problems


def _check_options(options: list[dict[str, Any]], path: str, *, depth: int) -> Problems:
    problems: Problems = {}
    if len(options) > MAX_OPTIONS:
        problems[path] = _too_long(MAX_OPTIONS)
    names: set[str] = set()
    optional_seen = False
    for i, option in enumerate(options):
        here = f"{path}.{i}"
        name = str(option.get("name", ""))
        kind = option.get("type")
        if not COMMAND_NAME.match(name) or name != name.lower():
            problems[f"{here}.name"] = (
                "APPLICATION_COMMAND_INVALID_NAME",
                f"Option name is invalid: {name!r}",
            )
        if name in names:
            problems[f"{here}.name"] = (
                "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                "Option names must be unique",
            )
        names.add(name)
        if not 1 <= len(str(option.get("description", ""))) <= MAX_DESCRIPTION:
            problems[f"{here}.description"] = _bad_length(1, MAX_DESCRIPTION)
        if len(option.get("choices") or []) > 25:
            problems[f"{here}.choices"] = _too_long(25)
        if option.get("choices") and option.get("autocomplete"):
            problems[f"{here}.autocomplete"] = (
                "APPLICATION_COMMAND_OPTION_AUTOCOMPLETE_AND_CHOICES",
                "Autocomplete cannot be used with choices",
            )
        if kind in (1, 2):
            if depth >= (1 if kind == 2 else 2):
                problems[f"{here}.type"] = (
                    "APPLICATION_COMMAND_OPTION_TOO_DEEP",
                    "Subcommands nest too deep",
                )
            problems.update(_check_options(option.get("options") or [], f"{here}.options", depth=depth + 1))
        else:
            if option.get("required"):
                if optional_seen:
                    problems[f"{here}.required"] = (
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed before non-required options",
                    )
            else:
                optional_seen = True
    return problems
