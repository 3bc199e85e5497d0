"""``/help``: the tutorial's sections (every topic, both languages, within Discord's embed limits)
and the command end to end through discord.py against the fake Discord."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot import help_text
from generation.grammar import FLAGS
from generation.i18n import register_catalogue

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _bot_catalogue():
    register_catalogue("bot")


def embed_size(embed: dict) -> int:
    return (len(embed.get("title", "")) + len(embed.get("description", ""))
            + sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", []))
            + len((embed.get("footer") or {}).get("text", "")))


def test_every_help_json_topic_is_offered():
    texts = json.loads((ROOT / "bot/locales/en/help.json").read_text("utf-8"))
    topics = {code.split(".")[2] for code in texts if code.startswith("help.topic.")}
    assert topics == set(help_text.TEXT_TOPICS)


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_sections_fit_discord_and_list_every_flag_with_its_range(locale):
    overview = help_text.overview(locale)
    sections = [overview] + [help_text.topic(name, locale) for name in help_text.TOPICS]
    for section in sections:
        assert section.size <= help_text.TOTAL_LIMIT
        assert len(section.fields) <= 25 and len(section.description) <= 4096
        assert all(0 < len(value) <= 1024 and len(name) <= 256 for name, value in section.fields)
        assert "{" not in section.description  # no unfilled template
    listed = "\n".join(value for _name, value in overview.fields)
    for spec in FLAGS:
        assert f"`{spec.usage()}`" in listed and spec.describe(locale) in listed
    assert "(1–150)" in listed and "(1–30)" in listed and "1:4–4:1" in listed
    sampler = help_text.topic("sampler", locale)
    listed_samplers = "\n".join(value for _name, value in sampler.fields[-3:])
    assert "`DPM++ 2M Karras` ★" in listed_samplers and "`DPM++ 3M SDE Exponential`" in listed_samplers
    hires = help_text.topic("hires", locale)
    assert [line.split("`")[1] for line in hires.fields[0][1].splitlines()] == [
        "--hires [SCALE]", "--hires-steps N", "--strength S"]


def test_ranges_are_written_as_users_type_them():
    by_name = {spec.name: spec for spec in FLAGS}
    assert help_text.flag_range(by_name["ar"], "en") == "1:4–4:1"
    assert help_text.flag_range(by_name["cfg"], "en") == "1–30"
    assert help_text.flag_range(by_name["strength"], "en") == "0.01–1"
    assert help_text.flag_range(by_name["seed"], "en") == "0–4294967295; -1 = random"
    assert help_text.flag_range(by_name["no"], "en") is None
    assert "像素" in help_text.flag_range(by_name["size"], "zh-CN")


async def test_help_overview_and_topic_in_both_languages(brushwork_bot):
    h = brushwork_bot
    w = h.world
    interaction = await h.slash(w.alice, w.general, "help")
    response = await h.fake.wait_for_response(interaction)
    message = interaction.original
    assert response.type == 4 and message.ephemeral
    embed = message.embeds[0]
    assert embed["title"] == "Brushwork — how to get the image you want"
    text = " ".join(f["value"] for f in embed["fields"])
    assert "**`--steps N`** (1–150) — Number of denoising steps" in text
    assert "`sampler` — Sampler — `--sampler`" in text and "/imagine a cosy reading nook" in text
    assert embed_size(embed) <= 6000

    interaction = await h.slash(w.wei, w.general, "help", {"topic": "cfg"})
    await h.fake.wait_for_response(interaction)
    embed = interaction.original.embeds[0]
    assert interaction.original.ephemeral
    assert embed["title"] == "CFG 系数 —— `--cfg`"
    assert "5–8" in embed["description"]
    assert "CFG 系数：遵循提示词的程度" in embed["fields"][0]["value"]

    # the topic choices and the descriptions are localized in what the bot synced
    command = h.fake.command("help")
    assert command["description_localizations"]["zh-CN"] == "如何画出你想要的图：参数、取值范围、示例"
    choices = {c["value"]: c for c in command["options"][0]["choices"]}
    assert set(choices) == set(help_text.TOPICS)
    assert choices["cfg"]["name_localizations"]["zh-CN"] == "CFG 系数（--cfg）"
