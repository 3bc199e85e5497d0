"""A corpus of mistakes made through the Python API (``generation.api.generate``).

Every case must raise a :class:`~generation.errors.BrushworkError` (never an AttributeError,
ValueError or ZeroDivisionError from deep inside), with the catalogue's text — the text the
command line prints for the same mistake — and before any work: the engine given is one that
fails the test if it is touched.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from generation.api import generate
from generation.errors import BrushworkError
from generation.grammar import parse


class UntouchableEngine:
    """An engine that must not be reached: the mistake is found before any work."""

    def __getattr__(self, name: str):
        raise AssertionError(f"the engine was used ({name}) for a request that is a mistake")


@pytest.fixture
def pictures(tmp_path) -> Path:
    frames = [Image.new("RGB", (64, 64), color) for color in ("red", "blue", "green")]
    frames[0].save(tmp_path / "animated.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "animated.png", save_all=True, append_images=frames[1:])  # APNG
    Image.new("RGB", (16, 16)).save(tmp_path / "tiny.png")
    return tmp_path


def cli_text(text: str) -> str:
    """What the command line says for a request text (``brushwork generate TEXT``)."""
    with pytest.raises(BrushworkError) as refused:
        parse(text)
    return refused.value.message()


CASES = [
    # (what, call, code, key words)
    ("None as the prompt", lambda p: generate(None, engine=UntouchableEngine()), "api.bad_prompt", ("NoneType",)),
    ("bytes as the prompt", lambda p: generate(b"a cat", engine=UntouchableEngine()), "api.bad_prompt",
     ("bytes", "str")),
    ("a number as the prompt", lambda p: generate(42, engine=UntouchableEngine()), "api.bad_prompt", ("int",)),
    ("a LoRA weight in words", lambda p: generate("a cat", loras={"x": "heavy"}, engine=UntouchableEngine()),
     "grammar.bad_number", ("--lora", "heavy")),
    ("a LoRA weight in a pair", lambda p: generate("a cat", loras=[("x", "heavy")], engine=UntouchableEngine()),
     "grammar.bad_number", ("--lora", "heavy")),
    ("a LoRA weight of None", lambda p: generate("a cat", loras={"x": None}, engine=UntouchableEngine()),
     "request.not_a_number", ("--lora",)),
    ("a LoRA weight out of range", lambda p: generate("a cat", loras={"x": 9}, engine=UntouchableEngine()),
     "request.out_of_range", ("--lora", "9")),
    ("an empty picture", lambda p: generate("a cat", image=Image.new("RGB", (0, 0)), engine=UntouchableEngine()),
     "dataset.image_too_small", ("0×0",)),
    ("a picture too small", lambda p: generate("a cat", image=str(p / "tiny.png"), engine=UntouchableEngine()),
     "dataset.image_too_small", ("tiny.png", "16×16")),
    ("an animated GIF", lambda p: generate("a cat", image=str(p / "animated.gif"), engine=UntouchableEngine()),
     "dataset.image_animated", ("animated.gif", "3 frames")),
    ("an animated PNG", lambda p: generate("a cat", image=p / "animated.png", engine=UntouchableEngine()),
     "dataset.image_animated", ("animated.png", "3 frames")),
    ("an animated PIL image", lambda p: generate("a cat", image=Image.open(p / "animated.gif"),
                                                 engine=UntouchableEngine()),
     "dataset.image_animated", ("3 frames",)),
    ("a path that is not there", lambda p: generate("a cat", image=str(p / "missing.png"),
                                                    engine=UntouchableEngine()),
     "api.image_not_a_file", ("missing.png", "no such file")),
    ("a 300-character path", lambda p: generate("a cat", image="a" * 300, engine=UntouchableEngine()),
     "api.image_not_a_file", ("…",)),
    ("a prompt with a terminal escape", lambda p: generate("a \x1b[31mred\x1b[0m cat", engine=UntouchableEngine()),
     "request.prompt_control_character", ("\\x1b",)),
]


@pytest.mark.parametrize(("call", "code", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_mistakes_raise_brushwork_errors_before_any_work(pictures, call, code, words):
    with pytest.raises(BrushworkError) as refused:
        call(pictures)
    error = refused.value
    assert error.code == code, (error.code, error.message())
    message = error.message()
    assert "\n" not in message and len(message) < 600
    for word in words:
        assert word in message, (word, message)
    assert error.message("zh-CN") != message  # a text in both catalogues


def test_a_lora_weight_in_words_says_what_the_command_line_says():
    with pytest.raises(BrushworkError) as refused:
        generate("a cat", loras={"x": "heavy"}, engine=UntouchableEngine())
    assert refused.value.message() == cli_text("a cat --lora x:heavy")


def test_a_picture_given_by_its_path_as_a_string_works(tiny_engine, tmp_path):
    """The README's own example: ``generate("…", image="lighthouse.png", strength=0.6)``."""
    Image.effect_noise((96, 64), 60).convert("RGB").save(tmp_path / "lighthouse.png")
    by_text = generate("a lighthouse --size 64x64 --seed 3", image=str(tmp_path / "lighthouse.png"), strength=0.6,
                       steps=4, engine=tiny_engine)[0]
    by_path = generate("a lighthouse --size 64x64 --seed 3", image=tmp_path / "lighthouse.png", strength=0.6,
                       steps=4, engine=tiny_engine)[0]
    assert by_text.request.image is not None and by_text.request.hires.strength == 0.6
    assert by_text.request == by_path.request and by_text.image.tobytes() == by_path.image.tobytes()
