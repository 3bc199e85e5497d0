"""bot/texts.py: the one shortened line, duration, progress bar and list completion of every front end."""

from __future__ import annotations

from bot.texts import clip, complete, complete_last, duration, progress_bar, shorten
from generation.i18n import register_catalogue


def test_clip_and_shorten_cut_with_an_ellipsis_inside_the_limit():
    assert clip("abcdef", 6) == "abcdef"
    assert clip("abcdefg", 6) == "abcde…"
    assert shorten("a  cat\n on   a mat", 100) == "a cat on a mat"
    assert shorten("a  cat\n on   a mat", 8) == "a cat o…"


def test_duration_in_english_and_chinese():
    register_catalogue("bot")  # the bot's texts (bot/locales), as the bot and the CLI register them
    assert duration(None, "en-US") == "a moment"
    assert duration(0.2, "en-US") == "1 s"
    assert duration(89, "en-US") == "89 s"
    assert duration(150, "zh-CN") == "2 分钟"  # round(2.5) is 2: banker's rounding, as before


def test_progress_bar_from_a_step_count_or_a_fraction():
    assert progress_bar(3, 12) == "▰▰▰▱▱▱▱▱▱▱▱▱"
    assert progress_bar(5, 0) == "▱" * 12
    assert progress_bar(0.5, 1, 10) == "▰▰▰▰▰▱▱▱▱▱"
    assert progress_bar(2.0, 1, 4) == "▰▰▰▰"


def test_complete_puts_names_starting_with_the_text_first():
    names = ["Euler a", "Euler", "DPM++ 2M", "heun", "DPM2 a"]
    assert complete(names, "") == names
    assert complete(names, " eul") == ["Euler a", "Euler"]
    assert complete(names, "a") == ["Euler a", "DPM2 a"]
    assert complete(names, "2", limit=1) == ["DPM++ 2M"]


def test_complete_last_completes_the_last_item_of_a_comma_list():
    names = ["all", "tiny", "sdxl", "sd15", "tiny-xl"]
    assert complete_last("", names, exclusive=("all",)) == names
    assert complete_last("sd", names) == ["sdxl", "sd15"]
    assert complete_last("tiny, sd", names) == ["tiny, sdxl", "tiny, sd15"]
    assert complete_last("tiny,", names, exclusive=("all",)) == ["tiny, sdxl", "tiny, sd15", "tiny, tiny-xl"]
    assert complete_last("TINY, xl", names) == ["TINY, sdxl", "TINY, tiny-xl"]
    assert len(complete_last("a" * 120 + ",", ["b"])[0]) == 100
