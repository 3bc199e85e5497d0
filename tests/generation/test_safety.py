"""Server safety policy: banned words (any script, any spelling), forced negative, classifier hook."""

from __future__ import annotations

import pytest
from PIL import Image

from generation.errors import RequestError
from generation.grammar import parse
from generation.safety import NoClassifier, SafetyPolicy, TransformersClassifier, apply_policy, find_banned

POLICY = SafetyPolicy(banned_words=("NSFW", "gore", "裸体"), forced_negative="nsfw, nude")


@pytest.mark.parametrize(
    ("prompt", "word"),
    [
        ("a nsfw picture", "nsfw"),
        ("a (NSFW:1.4) picture", "nsfw"),
        ("Ｎｓｆｗ art", "nsfw"),
        ("blood and gore, dark", "gore"),
        ("一个裸体雕像", "裸体"),
        ("a_gore_scene", "gore"),
    ],
)
def test_banned_words_are_found(prompt, word):
    assert find_banned(prompt, POLICY.banned_words) == word
    with pytest.raises(RequestError) as exc:
        apply_policy(parse(prompt), POLICY)
    assert exc.value.code == "safety.banned_word" and word in exc.value.message("zh-CN")


@pytest.mark.parametrize("prompt", ["a gorgeous sunset", "Gorey-style drawing? no: gorey", "a landscape"])
def test_whole_words_only_in_spaced_scripts(prompt):
    assert find_banned(prompt, POLICY.banned_words) is None


def test_forced_negative_is_added_once():
    request = apply_policy(parse("a statue --no blurry"), POLICY)
    assert request.negative_prompt == "blurry, nsfw, nude"
    assert apply_policy(request, POLICY).negative_prompt == "blurry, nsfw, nude"
    assert apply_policy(parse("a statue"), POLICY).negative_prompt == "nsfw, nude"


def test_negative_prompt_may_name_banned_words():
    assert apply_policy(parse("a statue --no nsfw, gore"), POLICY).prompt == "a statue"


def test_policy_round_trips_and_validates():
    assert SafetyPolicy.from_dict(POLICY.to_dict()) == POLICY
    with pytest.raises(RequestError):
        SafetyPolicy(threshold=0)
    with pytest.raises(RequestError):
        SafetyPolicy(banned_words=tuple(f"w{i}" for i in range(501)))


def test_without_a_classifier_images_pass():
    images = [Image.new("RGB", (8, 8))]
    assert [v.allowed for v in NoClassifier().classify(images, POLICY)] == [True]
    missing = TransformersClassifier("/nonexistent/classifier")
    assert missing.available is False
    assert [v.allowed for v in missing.classify(images, POLICY)] == [True]
