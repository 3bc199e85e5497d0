"""A1111 attention syntax: the documented examples, escapes, BREAK, and totality."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generation.prompt_weights import parse_prompt_attention, strip_attention


def approx(runs):
    return [(text, pytest.approx(weight)) for text, weight in runs]


# The examples from the docstring of A1111's parse_prompt_attention (modules/prompt_parser.py).
A1111_EXAMPLES = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.3 * 1.1 * 1.1),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.1**4),
            (".", 1.1),
        ],
    ),
]

MORE = [
    ("", [("", 1.0)]),
    ("((word))", [("word", 1.1 * 1.1)]),
    ("[word]", [("word", 1 / 1.1)]),
    ("[[word]]", [("word", 1 / 1.1 / 1.1)]),
    ("(word:1.3)", [("word", 1.3)]),
    ("(word: 1.3 )", [("word", 1.3)]),
    ("((word:1.5))", [("word", 1.5 * 1.1)]),
    ("[(word:1.5)]", [("word", 1.5 / 1.1)]),
    ("(word:-0.5)", [("word", -0.5)]),
    ("(word:.5)", [("word", 0.5)]),
    ("a (b [c] d) e", [("a ", 1.0), ("b ", 1.1), ("c", 1.0), (" d", 1.1), (" e", 1.0)]),
    # stray closers and weights outside brackets are text
    ("a) b] c", [("a) b] c", 1.0)]),
    ("word:1.3)", [("word:1.3)", 1.0)]),
    ("[word:1.3]", [("word:1.3", 1 / 1.1)]),
    ("a:b", [("a:b", 1.0)]),
    # an unclosed bracket weighs the rest of the prompt
    ("a (b c", [("a ", 1.0), ("b c", 1.1)]),
    ("a [b c", [("a ", 1.0), ("b c", 1 / 1.1)]),
    # escapes
    ("\\(a\\) \\[b\\]", [("(a) [b]", 1.0)]),
    ("a\\\\b", [("a\\b", 1.0)]),
    ("(\\(x\\))", [("(x)", 1.1)]),
    ("a\\b", [("ab", 1.0)]),  # a lone backslash is dropped, as in A1111
    # A1111 raises on these weights; here the weight is text and ")" closes with 1.1
    ("(word:1.2.3)", [("word:1.2.3", 1.1)]),
    ("(word:" + "9" * 400 + ")", [("word:" + "9" * 400, 1.1)]),
    # CJK text is just text
    ("一只(猫:1.2)在[月光]下", [("一只", 1.0), ("猫", 1.2), ("在", 1.0), ("月光", 1 / 1.1), ("下", 1.0)]),
]

BREAKS = [
    ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("a BREAK", [("a", 1.0), ("BREAK", -1.0)]),
    ("BREAK b", [("BREAK", -1.0), ("b", 1.0)]),
    ("a BREAK BREAK b", [("a", 1.0), ("BREAK", -1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("(a BREAK b)", [("a", 1.1), ("BREAK", -1.0), ("b", 1.1)]),
    ("a\nBREAK\nb", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    # only the whole word, in capitals
    ("BREAKfast break Break", [("BREAKfast break Break", 1.0)]),
]


@pytest.mark.parametrize(("text", "expected"), A1111_EXAMPLES + MORE + BREAKS)
def test_parse_prompt_attention(text, expected):
    assert parse_prompt_attention(text) == approx(expected)


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("a (red:1.3) [cat]", "a red cat"),
        ("\\(sic\\)", "(sic)"),
        ("a BREAK b", "a BREAK b"),
        ("", ""),
        ("((((", ""),
    ],
)
def test_strip_attention(text, plain):
    assert strip_attention(text) == plain


ATTENTION_FRAGMENTS = st.sampled_from(
    ["(", ")", "[", "]", ":", "\\", ":1.2)", ": -0.5 )", ":1.2.3)", "BREAK", " ", "a", "猫", ".", "1", "\n"]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(ATTENTION_FRAGMENTS, max_size=30).map("".join)))
def test_never_raises_and_runs_are_well_formed(text):
    runs = parse_prompt_attention(text)
    assert runs
    for i, (chunk, weight) in enumerate(runs):
        assert isinstance(chunk, str) and isinstance(weight, float)
        assert math.isfinite(weight)
        if (chunk, weight) == ("BREAK", -1.0):
            continue
        assert chunk or len(runs) == 1
        if i:
            previous = runs[i - 1]
            assert previous == ("BREAK", -1.0) or previous[1] != weight, "equal neighbours are merged"
    assert isinstance(strip_attention(text), str)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="()[]\\:")))
def test_text_without_syntax_is_one_run(text):
    runs = parse_prompt_attention(text)
    assert all(weight == 1.0 or run == ("BREAK", -1.0) for run in runs for weight in [run[1]])
    if "BREAK" not in text:
        assert runs == [(text, 1.0)]
