"""The request language: every flag, alias and spelling; every error; render ↔ parse."""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from importlib import resources

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from generation.errors import RequestError
from generation.grammar import FLAGS, find_flag, parse, parse_defaults, render
from generation.profiles import PROFILES
from generation.request import MAX_SEED, RANGES, Hires, LoraRef, Request, resolve
from generation.samplers import sampler_names


def req(prompt="a cat", **fields):
    return Request(prompt=prompt, **fields)


# ---------------------------------------------------------------------- valid input

VALID = [
    # the prompt alone, and its whitespace
    ("a cat", req()),
    ("  a cat \n", req()),
    ('a sign saying "hello" --seed 1', req('a sign saying "hello"', seed=1)),
    ("a sign saying 'hello'", req("a sign saying 'hello'")),
    # the example of the brief
    (
        'a cat on a motorbike --ar 3:2 --seed 42 --steps 30 --cfg 7 --sampler "DPM++ 2M Karras" --no blurry',
        req("a cat on a motorbike", aspect=(3, 2), seed=42, steps=30, cfg=7.0, sampler="DPM++ 2M Karras",
            negative_prompt="blurry"),
    ),
    # markers: --, em dash, en dash, a Chinese input method's double dash
    ("a cat —seed 1", req(seed=1)),
    ("a cat –seed 1", req(seed=1)),
    ("a cat ——seed 1", req(seed=1)),
    ("a cat\n--seed 1", req(seed=1)),
    ("a cat\u3000--seed 1", req(seed=1)),
    # not markers: inside a word, no letter after, a single dash
    ("a cat--seed", req("a cat--seed")),
    ("well-known -- style", req("well-known -- style")),
    ("a cat — sleeping", req("a cat — sleeping")),
    ("a cat -seed 1", req("a cat -seed 1")),
    ("a cat ---seed 1", req("a cat ---seed 1")),
    # look-alike dashes: two hyphen-like ones, or one dash, as -- and — are
    ("a cat \uff0d\uff0dsteps 30", req(steps=30)),  # FULLWIDTH HYPHEN-MINUS (Chinese, Japanese keyboards)
    ("a cat \u2010\u2010steps 30", req(steps=30)),  # HYPHEN
    ("a cat \u2011\u2011steps 30", req(steps=30)),  # NON-BREAKING HYPHEN
    ("a cat \u2212\u2212steps 30", req(steps=30)),  # MINUS SIGN
    ("a cat \ufe63\ufe63steps 30", req(steps=30)),  # SMALL HYPHEN-MINUS
    ("a cat -\u2014steps 30", req(steps=30)),
    ("a cat \u2012steps 30", req(steps=30)),  # FIGURE DASH
    ("a cat \u2015steps 30", req(steps=30)),  # HORIZONTAL BAR
    ("a cat \u2e3asteps 30", req(steps=30)),  # TWO-EM DASH
    ("a cat \u2e3bsteps 30", req(steps=30)),  # THREE-EM DASH
    ("a cat \ufe58steps 30", req(steps=30)),  # SMALL EM DASH
    # full-width names and values: read as their ASCII forms; the prompt stays as typed
    ("a cat --\uff33\uff34\uff25\uff30\uff33 20", req(steps=20)),  # --ＳＴＥＰＳ
    ("a cat --\uff53\uff54\uff45\uff50\uff53 30", req(steps=30)),  # --ｓｔｅｐｓ
    ("一只猫 －－ｓｔｅｐｓ ３０ －－ｈｉｒｅｓ －－ｈｉｒｅｓ－ｓｔｅｐｓ １０ －－ｃｌｉｐ＿ｓｋｉｐ ２",
     req("一只猫", steps=30, hires=Hires(2.0, steps=10), clip_skip=2)),
    ("ＡＩ ａｒｔ，一只猫 －－ｎｏ ｔｅｘｔ －－ａｒ ３：２", req("ＡＩ ａｒｔ，一只猫", negative_prompt="ｔｅｘｔ", aspect=(3, 2))),
    # minus signs in values are minus signs
    ("a cat --seed \u22121", req()),
    ("a cat \uff0d\uff0dseed \uff0d1", req()),
    ("a cat --lora ink:\u22120.5", req(loras=(LoraRef("ink", -0.5),))),
    ("a cat --lora ink:\ufe630.5", req(loras=(LoraRef("ink", -0.5),))),
    # still not markers: one hyphen-like character, three, inside a word, no letter after, wave dashes
    ("a cat \u2212steps 30", req("a cat \u2212steps 30")),
    ("a cat \uff0dsteps 30", req("a cat \uff0dsteps 30")),
    ("a cat \u2212\u2212\u2212steps 30", req("a cat \u2212\u2212\u2212steps 30")),
    ("a well\u2010known e\u2011mail cat\uff0d\uff0dsteps", req("a well\u2010known e\u2011mail cat\uff0d\uff0dsteps")),
    ("一只猫——很可爱 ——很乖 －－３０", req("一只猫——很可爱 ——很乖 －－３０")),
    ("a cat \u2212\u22121 \u2014 2", req("a cat \u2212\u22121 \u2014 2")),
    ("a cat \u301c\u301csteps 30 \u3030\u3030steps", req("a cat \u301c\u301csteps 30 \u3030\u3030steps")),
    ("a cat --\u4e00steps", req("a cat --\u4e00steps")),
    # names: case, "_" and "-" do not matter
    ("a cat --SEED 1", req(seed=1)),
    ("a cat --Clip_Skip 2", req(clip_skip=2)),
    ("a cat --hires --hires_steps 10", req(hires=Hires(2.0, steps=10))),
    # --no and aliases
    ("a cat --no blurry, text", req(negative_prompt="blurry, text")),
    ("a cat --negative blurry", req(negative_prompt="blurry")),
    ("a cat --neg blurry", req(negative_prompt="blurry")),
    ('a cat --no "blurry --seed 3"', req(negative_prompt="blurry --seed 3")),
    ('a cat --no "say \\"hi\\" \\\\ now" --seed 3', req(negative_prompt='say "hi" \\ now', seed=3)),
    ('a cat --no "a" b', req(negative_prompt='"a" b')),
    ('a cat --no "unclosed --seed 3', req(negative_prompt='"unclosed', seed=3)),
    ('a cat --no"tight" --seed 3', req(negative_prompt="tight", seed=3)),
    ("a cat --no “curly” --seed 3", req(negative_prompt="curly", seed=3)),
    ("a cat --no ‘single’", req(negative_prompt="single")),
    ("a cat --no 'plain'", req(negative_prompt="plain")),
    ("a cat --no 'it's'", req(negative_prompt="'it's'")),
    ("a cat --no \\--seed 3", req(negative_prompt="--seed 3")),
    # Chinese prompts, negative prompts and full-width punctuation
    ("一只猫坐在摩托车上 --no 模糊，水印 --ar 16:9", req("一只猫坐在摩托车上", negative_prompt="模糊，水印", aspect=(16, 9))),
    ("一只猫 --ar １６：９ --steps ３０", req("一只猫", aspect=(16, 9), steps=30)),
    ("一只猫 ——seed 7", req("一只猫", seed=7)),
    ("“一只猫”", req("一只猫")),
    # seeds
    ("a cat --seed 0", req(seed=0)),
    (f"a cat --seed {MAX_SEED}", req(seed=MAX_SEED)),
    ("a cat --seed +42", req(seed=42)),
    ("a cat --seed -1", req()),
    ('a cat --seed "42"', req(seed=42)),
    # steps, cfg and aliases, number spellings
    ("a cat --steps 1", req(steps=1)),
    ("a cat --steps 150", req(steps=150)),
    ("a cat --cfg 7.5", req(cfg=7.5)),
    ("a cat --cfg 7.", req(cfg=7.0)),
    ("a cat --cfg .5e1", req(cfg=5.0)),
    ("a cat --lora ink:1e-05", req(loras=(LoraRef("ink", 1e-05),))),
    ("a cat --cfg-scale 7", req(cfg=7.0)),
    ("a cat --guidance 7", req(cfg=7.0)),
    ("a cat --guidance-scale 7", req(cfg=7.0)),
    ("a cat --guidance_scale 7", req(cfg=7.0)),
    ("a cat --cfgscale 7", req(cfg=7.0)),
    # samplers in any spelling, quotes optional
    ("a cat --sampler euler_a", req(sampler="Euler a")),
    ('a cat --sampler "DPM++ 2M Karras"', req(sampler="DPM++ 2M Karras")),
    ("a cat --sampler DPM++ 2M Karras --seed 1", req(sampler="DPM++ 2M Karras", seed=1)),
    ("a cat --sampler dpmpp_2m_karras", req(sampler="DPM++ 2M Karras")),
    ("a cat --sampler “Euler a”", req(sampler="Euler a")),
    # aspect and size
    ("a cat --ar 3:2", req(aspect=(3, 2))),
    ("a cat --ar 16 : 9", req(aspect=(16, 9))),
    ("a cat --aspect 2:3", req(aspect=(2, 3))),
    ("a cat --aspect-ratio 1:1", req(aspect=(1, 1))),
    ("a cat --size 768x512", req(width=768, height=512)),
    ("a cat --size 768X512", req(width=768, height=512)),
    ("a cat --size 768×512", req(width=768, height=512)),
    ("a cat --size 768*512", req(width=768, height=512)),
    ("a cat --size 768 x 512", req(width=768, height=512)),
    # n and aliases
    ("a cat --n 4", req(n=4)),
    ("a cat --num 2", req(n=2)),
    ("a cat --count 2", req(n=2)),
    ("a cat --batch 2", req(n=2)),
    # model and LoRAs
    ("a cat --model sdxl-base_1.0", req(model="sdxl-base_1.0")),
    ("a cat --model 水墨", req(model="水墨")),
    ("a cat --lora ink", req(loras=(LoraRef("ink"),))),
    ("a cat --lora ink:0.8", req(loras=(LoraRef("ink", 0.8),))),
    ("a cat --lora ink:-1.5", req(loras=(LoraRef("ink", -1.5),))),
    ("a cat --lora ink : 0.8", req(loras=(LoraRef("ink", 0.8),))),
    ("a cat --lora ink:0.8, paper:0.5", req(loras=(LoraRef("ink", 0.8), LoraRef("paper", 0.5)))),
    ("a cat --lora ink:0.8 paper", req(loras=(LoraRef("ink", 0.8), LoraRef("paper")))),
    ("a cat --lora 水墨：0.8，纸", req(loras=(LoraRef("水墨", 0.8), LoraRef("纸")))),
    ("a cat --lora ink:0.8 --lora paper:.5", req(loras=(LoraRef("ink", 0.8), LoraRef("paper", 0.5)))),
    # hires
    ("a cat --hires", req(hires=Hires(2.0))),
    ("a cat --hires --seed 1", req(hires=Hires(2.0), seed=1)),
    ("a cat --hires 1.5", req(hires=Hires(1.5))),
    ("a cat --hires 1.5x", req(hires=Hires(1.5))),
    ("a cat --hires 2 --hires-steps 12 --strength 0.4", req(hires=Hires(2.0, 12, 0.4))),
    ("a cat --strength 0.4 --hires", req(hires=Hires(2.0, None, 0.4))),
    ("a cat --hires --denoise 0.3", req(hires=Hires(2.0, None, 0.3))),
    ("a cat --hires --denoising-strength 0.3", req(hires=Hires(2.0, None, 0.3))),
    # variations, chaos, clip skip, tile
    ("a cat --vary-seed 7 --vary-strength 0.2", req(vary_seed=7, vary_strength=0.2)),
    ("a cat --subseed 7 --subseed-strength 0.2", req(vary_seed=7, vary_strength=0.2)),
    ("a cat --vary-seed -1 --vary-strength 0.2", req(vary_strength=0.2)),
    ("a cat --chaos 0", req(chaos=0)),
    ("a cat --chaos 100 --n 4", req(chaos=100, n=4)),
    ("a cat --clip-skip 2", req(clip_skip=2)),
    ("a cat --clipskip 2", req(clip_skip=2)),
    ("a cat --tile", req(tile=True)),
    ("a cat --tile --seed 1", req(tile=True, seed=1)),
    # invisible characters in a prompt with something to see are kept (emoji sequences need them)
    ("\U0001f469\u200d\U0001f680 on the moon \u2764\ufe0f --seed 1",
     req("\U0001f469\u200d\U0001f680 on the moon \u2764\ufe0f", seed=1)),
    # escapes in the prompt
    ("a cat \\--seed 1", req("a cat --seed 1")),
    ("a cat \\\\--seed 1", req("a cat \\--seed 1")),
    ("a cat \\—seed", req("a cat —seed")),
    ("a cat \\\uff0d\uff0dsteps 30", req("a cat \uff0d\uff0dsteps 30")),
    ("a cat \\--\uff53teps", req("a cat --\uff53teps")),
    ("back\\slash \\", req("back\\slash \\")),
    ("'a cat'", req("a cat")),
    ("\\'a cat'", req("'a cat'")),
    ("'a cat' and 'a dog'", req("'a cat' and 'a dog'")),
    ('"a cat"', req('"a cat"')),  # the prompt is never quote-parsed
    # A1111 attention syntax passes through untouched
    ("a (red:1.3) [cat] BREAK sky --seed 1", req("a (red:1.3) [cat] BREAK sky", seed=1)),
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_parse(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_render_of_parsed_reads_back(text, expected):
    assert parse(render(expected)) == expected


def test_empty_prompt_allowed_on_request():
    assert parse("--steps 40", allow_empty_prompt=True) == Request(prompt="", steps=40)
    assert parse("", allow_empty_prompt=True) == Request(prompt="")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Request(prompt="")),
        ("--steps 30 --sampler euler_a", Request(prompt="", steps=30, sampler="Euler a")),
        ("  --cfg 6 --hires  ", Request(prompt="", cfg=6.0, hires=Hires(2.0))),
    ],
)
def test_parse_defaults(text, expected):
    assert parse_defaults(text) == expected


def test_defaults_take_flags_only():
    with pytest.raises(RequestError) as info:
        parse_defaults("steps 30 --cfg 7")
    assert info.value.code == "grammar.defaults_flags_only"
    assert "steps 30" in info.value.message()


# ---------------------------------------------------------------------- errors

ERRORS = [
    # (text, code, fragments the English message must contain)
    ("", "request.empty_prompt", []),
    ("   --seed 1", "request.empty_prompt", []),
    # a prompt of invisible characters only is empty
    ("\u200b", "request.empty_prompt", []),
    ("\u200b\u200c\u200d\u2060\ufeff\u00ad --seed 1", "request.empty_prompt", []),
    ("\u3000\ufe0f\U000e0101\u180b --steps 30", "request.empty_prompt", []),
    ("\u3164\u2800 \u115f\u1160\uffa0 --n 2", "request.empty_prompt", []),
    ("\u202e\u200e\u2066\u2069 \u034f\t", "request.empty_prompt", []),
    ("a cat --sed 4", "grammar.unknown_flag_suggest", ["--sed", "--seed"]),
    ("a cat --stesp 20", "grammar.unknown_flag_suggest", ["--stesp", "--steps"]),
    ("a cat --nagative x", "grammar.unknown_flag_suggest", ["--nagative", "--negative"]),
    ("a cat --repeat 4", "grammar.unknown_flag_suggest", ["--repeat", "--n"]),
    ("a cat --v 6", "grammar.unknown_flag_suggest", ["--v", "--model"]),
    ("a cat --zzqq 4", "grammar.unknown_flag", ["--zzqq", "--seed", "--lora", "--tile", "\\--zzqq"]),
    ("a cat --seed 1 --seed 2", "grammar.repeated_flag", ["--seed"]),
    ("a cat --cfg 7 --guidance 8", "grammar.repeated_flag", ["--guidance", "--cfg"]),
    ("a cat --tile --tile", "grammar.repeated_flag", ["--tile"]),
    ("a cat --no", "grammar.missing_text", ["--no", "--no blurry"]),
    ('a cat --neg ""', "grammar.missing_text", ["--neg"]),
    ("a cat --no --seed 1", "grammar.missing_text", ["--no"]),
    ("a cat --model", "grammar.missing_name", ["--model"]),
    ("a cat --sampler", "grammar.missing_sampler", ["--sampler", "Euler a"]),
    ("a cat --steps", "grammar.missing_integer", ["--steps", "1", "150"]),
    ("a cat --seed", "grammar.missing_integer", ["--seed", "0", "4294967295"]),
    ("a cat --cfg", "grammar.missing_number", ["--cfg", "1", "30"]),
    ("a cat --guidance", "grammar.missing_number", ["--guidance", "1", "30", "--guidance 7"]),
    ("a cat --ar", "grammar.missing_aspect", ["--ar", "3:2"]),
    ("a cat --size", "grammar.missing_size", ["--size", "768x512", "8", "8192"]),
    ("a cat --lora", "grammar.missing_lora", ["--lora", "-2", "2"]),
    ("a cat --lora ,", "grammar.missing_lora", ["--lora"]),
    ("a cat --n", "grammar.missing_integer", ["--n", "1", "4"]),
    ("a cat --steps 7.5", "grammar.bad_integer", ["--steps", "7.5", "1", "150"]),
    ("a cat --steps 30.0", "grammar.bad_integer", ["--steps", "30.0"]),
    ("a cat --steps thirty", "grammar.bad_integer", ["--steps", "thirty"]),
    ("a cat --steps 30 a dog", "grammar.bad_integer", ["--steps", "30 a dog"]),
    ("a cat --num 2.5", "grammar.bad_integer", ["--num", "1", "4"]),
    ("a cat --seed 0x10", "grammar.bad_integer", ["--seed", "0x10"]),
    ("a cat --seed 1e3", "grammar.bad_integer", ["--seed", "1e3"]),
    ("a cat --cfg seven", "grammar.bad_number", ["--cfg", "seven", "1", "30"]),
    ("a cat --cfg nan", "grammar.bad_number", ["--cfg", "nan"]),
    ("a cat --cfg inf", "grammar.bad_number", ["--cfg", "inf"]),
    ("a cat --cfg 1e999", "request.out_of_range", ["--cfg", "1e999", "1–30"]),
    ("a cat --cfg 1e-999", "request.out_of_range", ["--cfg", "1e-999", "1–30"]),
    ("a cat --cfg 0x10", "grammar.bad_number", ["--cfg", "0x10"]),
    ("a cat --cfg .", "grammar.bad_number", ["--cfg"]),
    ("a cat --cfg 7,5", "grammar.decimal_comma", ["--cfg", "7.5", "7,5", "1", "30"]),
    ("a cat --guidance 7,5", "grammar.decimal_comma", ["--guidance", "7.5"]),
    ("a cat --cfg 1" + "0" * 400, "request.out_of_range", ["--cfg", "1", "30"]),
    ("a cat --steps 0", "request.out_of_range", ["--steps 0", "1–150"]),
    ("a cat --steps 151", "request.out_of_range", ["--steps 151", "1–150"]),
    ("a cat \u2014steps 500", "request.out_of_range", ["--steps 500", "1–150"]),
    ("a cat \u2010\u2010steps 500", "request.out_of_range", ["--steps 500", "1–150"]),
    ("a cat \u2212\u2212steps 500", "request.out_of_range", ["--steps 500", "1–150"]),
    ("a cat \uff0d\uff0dsteps 500", "request.out_of_range", ["--steps 500", "1–150"]),
    ("a cat --\uff33\uff34\uff25\uff30\uff33 500", "request.out_of_range", ["--STEPS 500", "1–150"]),
    ("a cat \uff0d\uff0d\uff53\uff54\uff45\uff50 30", "grammar.unknown_flag_suggest", ["--step", "--steps"]),
    ("a cat \u2212\u2212cfg \u22121", "request.out_of_range", ["--cfg", "1–30"]),
    ("a cat --steps \u221230", "request.out_of_range", ["--steps", "1–150"]),
    ("a cat --steps -5", "request.out_of_range", ["--steps -5", "1–150"]),
    ("a cat --seed 4294967296", "request.out_of_range", ["--seed 4294967296", "0–4294967295"]),
    ("a cat --seed -2", "request.out_of_range", ["--seed -2", "0–4294967295"]),
    ("a cat --seed " + "9" * 5000, "request.out_of_range", ["--seed", "0–4294967295"]),
    ("a cat --subseed 4294967296", "request.out_of_range", ["--subseed", "0–4294967295"]),
    ("a cat --cfg 0.5", "request.out_of_range", ["--cfg 0.5", "1–30"]),
    ("a cat --guidance 50", "request.out_of_range", ["--guidance 50", "1–30"]),
    ("a cat --cfg-scale 50", "request.out_of_range", ["--cfg-scale 50", "1–30"]),
    ("a cat --n 5", "request.out_of_range", ["--n 5", "1–4"]),
    ("a cat --batch 0", "request.out_of_range", ["--batch 0", "1–4"]),
    ("a cat --chaos 101 --n 2", "request.out_of_range", ["--chaos 101", "0–100"]),
    ("a cat --clip-skip 13", "request.out_of_range", ["--clip-skip 13", "1–12"]),
    ("a cat --clipskip 0", "request.out_of_range", ["--clipskip 0", "1–12"]),
    ("a cat --vary-strength 2", "request.out_of_range", ["--vary-strength 2", "0.01–1"]),
    ("a cat --subseed-strength 0", "request.out_of_range", ["--subseed-strength 0", "0.01–1"]),
    ("a cat --hires 5", "request.out_of_range", ["--hires 5", "1.05–4"]),
    ("a cat --hires 1", "request.out_of_range", ["--hires 1", "1.05–4"]),
    ("a cat --hires --hires-steps 200", "request.out_of_range", ["--hires-steps 200", "1–150"]),
    ("a cat --hires --strength 1.5", "request.out_of_range", ["--strength 1.5", "0.01–1"]),
    ("a cat --hires --denoise 0", "request.out_of_range", ["--denoise 0", "0.01–1"]),
    ("a cat --lora ink:3", "request.out_of_range", ["--lora 3", "-2–2"]),
    ("a cat --size 4x512", "request.out_of_range", ["--size 4", "8–8192"]),
    ("a cat --size 512x9000", "request.out_of_range", ["--size 9000", "8–8192"]),
    ("a cat --hires abc", "grammar.bad_number", ["--hires", "abc", "1.05", "4"]),
    ("a cat --image", "grammar.missing_image", ["--image", "k3x9fq2a", "/history"]),
    ("a cat --image ../etc", "request.bad_image_ref", ["--image", "../etc", "8 letters"]),
    ("a cat --init k3x9fq2a0", "request.bad_image_ref", ["--init", "k3x9fq2a0"]),
    ("a cat --strength 0.6", "grammar.needs_hires", ["--strength", "--hires", "--image"]),
    ("a cat --image k3x9fq2a --chaos 20 --n 2", "request.conflict", ["--image", "--chaos"]),
    ("a cat --image k3x9fq2a --vary-strength 0.2", "request.conflict", ["--image", "--vary-strength"]),
    ("a cat --image k3x9fq2a --hires 1", "request.out_of_range", ["--hires 1", "1.05–4"]),
    ("a cat --hires --hires-steps 1.5", "grammar.bad_integer", ["--hires-steps", "1", "150"]),
    ("a cat --ar 16/9", "grammar.aspect_separator", ["--ar", "16:9", "16/9", "1", "100"]),
    ("a cat --ar 16x9", "grammar.aspect_separator", ["--ar", "16:9", "--size"]),
    ("a cat --aspect 16x9", "grammar.aspect_separator", ["--aspect 16:9"]),
    ("a cat --ar wide", "request.bad_aspect", ["wide", "3:2"]),
    ("a cat --ar 1.5:1", "request.bad_aspect", ["1.5:1"]),
    ("a cat --ar 0:1", "request.bad_aspect", ["0:1", "1", "100"]),
    ("a cat --ar 101:100", "request.bad_aspect", ["101:100", "1", "100"]),
    ("a cat --ar 5:1", "request.aspect_out_of_range", ["5:1", "1:4", "4:1"]),
    ("a cat --size 3:2", "grammar.size_is_aspect", ["--size", "--ar 3:2", "8", "8192"]),
    ("a cat --size big", "request.bad_size", ["big", "768x512"]),
    ("a cat --size 512", "request.bad_size", ["512"]),
    ("a cat --ar 3:2 --size 512x512", "request.conflict", ["--ar", "--size"]),
    ("a cat --size 512x512 --aspect 3:2", "request.conflict", ["--size", "--aspect"]),
    ("a cat --sampler foo", "request.unknown_sampler_plain", ["foo", "Euler a"]),
    ("a cat --model my model", "request.bad_model_name", ["my model"]),
    ("a cat --model ../etc", "request.bad_model_name", ["../etc"]),
    ("a cat --lora ink 0.8", "grammar.bad_lora", ["--lora", "0.8", "inkwash:0.8", "-2", "2"]),
    ("a cat --lora ink:", "grammar.bad_lora", ["--lora", "ink:"]),
    ("a cat --lora :0.8", "grammar.bad_lora", ["--lora", ":0.8"]),
    ("a cat --lora a:1:2", "grammar.bad_lora", ["--lora", "a:1:2"]),
    ("a cat --lora ink:heavy", "grammar.bad_number", ["--lora", "heavy", "-2", "2"]),
    ("a cat --lora ../x", "request.bad_lora_name", ["../x"]),
    ("a cat --lora ink --lora INK:0.5", "request.duplicate_lora", ["ink"]),
    ("a cat --tile yes", "grammar.unexpected_value", ["--tile", "yes"]),
    ("a cat --hires-steps 10", "grammar.needs_hires", ["--hires-steps", "--hires"]),
    ("a cat --strength 0.5", "grammar.needs_hires", ["--strength", "--hires"]),
    ("a cat --denoise 0.5", "grammar.needs_hires", ["--denoise", "--hires"]),
    ("a cat --chaos 50 --n 1", "request.chaos_needs_n", ["--chaos"]),
    ("a cat --chaos 50 --vary-seed 3", "request.conflict", ["--chaos", "--vary-seed"]),
    ("x" * 4001, "request.prompt_too_long", ["4001", "4000"]),
]


@pytest.mark.parametrize(("text", "code", "fragments"), ERRORS)
def test_errors(text, code, fragments):
    with pytest.raises(RequestError) as info:
        parse(text)
    assert info.value.code == code
    message = info.value.message()
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    chinese = info.value.message("zh-CN")
    assert chinese and "{" not in chinese.replace("{}", "")
    for fragment in fragments:
        if fragment.startswith("--"):
            assert fragment.split()[0] in chinese


def test_errors_name_the_flag_as_typed_and_carry_the_range():
    with pytest.raises(RequestError) as info:
        parse("a cat —guidance 31")
    assert info.value.params["flag"] == "--guidance"
    assert (info.value.params["low"], info.value.params["high"]) == ("1", "30")


def test_full_width_flags_are_named_in_ascii_in_messages():
    with pytest.raises(RequestError) as info:
        parse("a cat \uff0d\uff0d\uff27\uff35\uff29\uff24\uff21\uff2e\uff23\uff25 31")  # －－ＧＵＩＤＡＮＣＥ
    assert info.value.params["flag"] == "--GUIDANCE"
    assert info.value.message() == "--GUIDANCE 31 is out of range: use 1–30."
    assert info.value.message() == _error("a cat --GUIDANCE 31").message()


def _error(text: str) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse(text)
    return info.value


# Every Unicode dash (category Pd) and the minus sign marks a flag as "--" and "—" do, except
# the two that are tildes in all but name (Japanese input methods type 〜 for "~").
UNICODE_DASHES = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Pd"] + ["\u2212"]
NOT_DASHES = {"\u301c", "\u3030"}  # WAVE DASH, WAVY DASH
LONG_DASHES = "\u2012\u2013\u2014\u2015\u2e3a\u2e3b\ufe31\ufe32\ufe58"  # one is enough, as with —


@pytest.mark.parametrize("dash", UNICODE_DASHES, ids=lambda d: f"U+{ord(d):04X}")
def test_every_unicode_dash_marks_a_flag(dash):
    doubled = f"a cat {dash}{dash}steps 30 {dash}{dash}no text"
    single = f"a cat {dash}steps 30"
    if dash in NOT_DASHES:
        assert parse(doubled) == req(doubled)
        assert find_flag(dash * 2 + "steps") is None
        return
    assert parse(doubled) == req(steps=30, negative_prompt="text")
    assert find_flag(dash * 2 + "steps") is find_flag("steps")
    assert parse(single) == (req(steps=30) if dash in LONG_DASHES else req(single))
    for prompt in (f"a {dash}{dash}steps b", f"a {dash}steps b", f"a\u3000{dash}{dash}x"):
        assert parse(render(req(prompt))) == req(prompt)  # escaped when it would read as a flag


@pytest.mark.parametrize("invisible", ["\u200b", "\ufeff\u2060", "\u3000\u00ad", "\ufe0f", "\u200d \u200c"])
def test_a_prompt_of_invisible_characters_is_empty_everywhere(invisible):
    empty = _error("")
    assert _error(invisible).message() == empty.message()
    assert _error(invisible).message("zh-CN") == empty.message("zh-CN")
    assert Request(prompt=invisible).prompt == ""
    assert parse(invisible + " --steps 30", allow_empty_prompt=True) == Request(prompt="", steps=30)
    assert parse_defaults(invisible + " --steps 30") == Request(prompt="", steps=30)
    with pytest.raises(RequestError) as info:
        resolve(Request(prompt=invisible), PROFILES["tiny"], model="tiny")
    assert info.value.code == "request.empty_prompt"


def test_chaos_without_several_images_is_refused_when_resolved():
    tiny = PROFILES["tiny"]
    with pytest.raises(RequestError) as info:
        resolve(parse("a cat --chaos 50"), tiny, model="tiny")
    assert info.value.code == "request.chaos_needs_n"
    assert info.value.message() == "--chaos spreads several images apart; use it with --n 2 to 4."
    assert info.value.message("zh-CN") == "--chaos 用于让多张图片彼此拉开差异；请与 --n 2 到 4 一起使用。"
    assert info.value.message() == _error("a cat --chaos 50 --n 1").message()
    with pytest.raises(RequestError) as info:  # chaos from the defaults, too
        resolve(parse("a cat"), tiny, model="tiny", defaults=[parse_defaults("--chaos 50")])
    assert info.value.code == "request.chaos_needs_n"
    # the number of images may come from the defaults
    resolved, _ = resolve(parse("a cat --chaos 50"), tiny, model="tiny", defaults=[parse_defaults("--n 3")])
    assert (resolved.chaos, resolved.n, len(resolved.images())) == (50, 3, 3)


def test_long_values_are_shortened_in_messages():
    with pytest.raises(RequestError) as info:
        parse("a cat --steps " + "x" * 1000)
    assert len(info.value.message()) < 300


@pytest.mark.parametrize("value", [None, 42, b"a cat", ["a cat"]])
def test_non_text_input_is_a_request_error(value):
    with pytest.raises(RequestError):
        parse(value)


# ---------------------------------------------------------------------- render

RENDER = [
    (req(), "a cat"),
    (Request(prompt=""), ""),
    (Request(prompt="", steps=30), "--steps 30"),
    (
        req(negative_prompt="blurry", model="sdxl", loras=(LoraRef("a", 0.8), LoraRef("b")), aspect=(3, 2),
            steps=30, cfg=7, sampler="dpmpp_2m_karras", seed=42, vary_seed=7, vary_strength=0.2,
            hires=Hires(1.5, 12, 0.4), clip_skip=2, tile=True, n=4),
        'a cat --no blurry --model sdxl --lora a:0.8 --lora b:1 --ar 3:2 --steps 30 --cfg 7 '
        '--sampler "DPM++ 2M Karras" --seed 42 --vary-seed 7 --vary-strength 0.2 --hires 1.5 '
        "--hires-steps 12 --strength 0.4 --clip-skip 2 --tile --n 4",
    ),
    (req(width=768, height=512, chaos=50, n=2, sampler="Euler"), "a cat --size 768x512 --sampler Euler --chaos 50 --n 2"),
    (req(hires=Hires()), "a cat --hires 2"),
    (req(cfg=7.25), "a cat --cfg 7.25"),
    (req(tile=False), "a cat"),
    (req("a --seed 1 b"), "a \\--seed 1 b"),
    (req("a \\--seed 1 b"), "a \\\\--seed 1 b"),
    (req("a —seed b"), "a \\—seed b"),
    (req("a \uff0d\uff0dsteps b \u2212\u2212x \u2015y"), "a \\\uff0d\uff0dsteps b \\\u2212\u2212x \\\u2015y"),
    (req("a --\uff53teps"), "a \\--\uff53teps"),
    (req("'a cat'"), "\\'a cat'"),
    (req("“a cat”"), "\\“a cat”"),
    (req("'a cat' and 'a dog'"), "'a cat' and 'a dog'"),
    (req('"a cat"'), '"a cat"'),
    (req("一只猫", negative_prompt="模糊，水印"), "一只猫 --no 模糊，水印"),
    (req(negative_prompt="a --seed 1"), 'a cat --no "a --seed 1"'),
    (req(negative_prompt='"quoted"'), 'a cat --no "\\"quoted\\""'),
    (req(negative_prompt='say "hi"'), 'a cat --no say "hi"'),
    (req(negative_prompt="'single'"), "a cat --no \"'single'\""),
    (req(negative_prompt="back\\slash"), "a cat --no back\\slash"),
]


@pytest.mark.parametrize(("request_", "text"), RENDER)
def test_render(request_, text):
    assert render(request_) == text
    assert request_.render() == text
    assert parse(text, allow_empty_prompt=True) == request_


# ---------------------------------------------------------------------- the flag table


def test_flag_table_covers_every_request_field():
    fields = {spec.field.split(".")[0] for spec in FLAGS}
    expected = set(Request.__dataclass_fields__) - {"prompt", "width", "height"} | {"size"}
    assert fields == expected


@pytest.mark.parametrize("spec", FLAGS, ids=lambda s: s.name)
def test_flag_table_entries(spec):
    assert spec.flag == "--" + spec.name
    assert spec.description and spec.describe("zh-CN") and spec.description != spec.describe("zh-CN")
    assert spec.example.startswith(spec.flag)
    assert spec.usage().startswith(spec.flag)
    if spec.range_key is not None:
        assert spec.range == RANGES[spec.range_key]
    for spelling in (spec.name, *spec.aliases):
        assert find_flag(spelling) is spec
        assert find_flag("--" + spelling.upper().replace("-", "_")) is spec
    prefix = "a cat --hires " if spec.field.startswith("hires.") and spec.name != "hires" else "a cat "
    if spec.name == "chaos":
        prefix = "a cat --n 2 "
    assert isinstance(parse(prefix + spec.example), Request)  # the help's example works


def test_every_alias_is_accepted():
    for spec in FLAGS:
        for alias in spec.aliases:
            example = "--" + alias + spec.example[len(spec.flag):]
            prefix = "a cat --hires " if spec.field.startswith("hires.") else "a cat "
            assert parse(prefix + example) == parse(prefix + spec.example)


def _catalogue(locale):
    path = resources.files("generation").joinpath("locales", locale, "grammar.json")
    return json.loads(path.read_text("utf-8"))


def test_catalogues_match_and_every_code_is_defined():
    en, zh = _catalogue("en"), _catalogue("zh-CN")
    assert set(en) == set(zh)
    for code in en:
        assert set(re.findall(r"{(\w+)}", en[code])) == set(re.findall(r"{(\w+)}", zh[code])), code
        assert re.search(r"[\u4e00-\u9fff]", zh[code]), code
    source = resources.files("generation").joinpath("grammar.py").read_text("utf-8")
    for code in set(re.findall(r'"(grammar\.\w+)"', source)):
        assert code in en, code
    assert {f"flag.{spec.name}" for spec in FLAGS} <= set(en)


# ---------------------------------------------------------------------- properties

FRAGMENTS = st.sampled_from([
    "--", "—", "–", "——", "-", "\\", "\\\\", '"', "'", "“", "”", "‘", "’", " ", "  ", "\n", ",", ":", "：",
    "x", "×", "*", ".", "+", "-1", "0", "7", "7.5", "1e999", "nan", "0x10", "9" * 30, "猫", "水墨", "a",
    "seed", "no", "neg", "ar", "size", "steps", "cfg", "guidance", "sampler", "euler_a", "DPM++ 2M Karras",
    "n", "model", "lora", "hires", "hires-steps", "strength", "denoise", "vary-seed", "vary_strength",
    "chaos", "clip-skip", "tile", "3:2", "768x512", "ink:0.8", "BREAK", "(", ")", "image", "k3x9fq2a", "init",
    "\uff0d", "\u2212", "\u2010", "\u2015", "\u301c", "\uff53\uff54\uff45\uff50\uff53", "\uff33\uff25\uff25\uff24", "\uff13\uff10",
    "\u200b", "\u200d", "\ufe0f",
])
ANY_TEXT = st.one_of(
    st.text(max_size=200),
    st.lists(FRAGMENTS, max_size=40).map("".join),
    st.lists(st.one_of(FRAGMENTS, st.text(max_size=5)), max_size=30).map("".join),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_TEXT, st.booleans())
def test_parse_is_total(text, allow_empty):
    try:
        result = parse(text, allow_empty_prompt=allow_empty)
    except RequestError as err:
        assert err.message() and err.message("zh-CN")
    else:
        assert isinstance(result, Request)
    try:
        parse_defaults(text)
    except RequestError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_TEXT)
def test_parse_render_parse_is_stable(text):
    try:
        first = parse(text, allow_empty_prompt=True)
    except RequestError:
        assume(False)
        return
    assert parse(render(first), allow_empty_prompt=True) == first


# What a prompt may hold: no control characters but tabs and line breaks (a NUL or a terminal
# escape is refused: generation.request.PROMPT_CONTROLS_ALLOWED; test_bad_input covers that).
PROMPT_CHARACTERS = st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\n\r")
PROMPT_TEXT = st.one_of(
    st.text(PROMPT_CHARACTERS, max_size=60),
    st.lists(st.one_of(FRAGMENTS, st.text(PROMPT_CHARACTERS, max_size=4)), max_size=20).map("".join),
)
NAMES = st.from_regex(r"[\w][\w.\-]{0,20}", fullmatch=True)


@st.composite
def requests(draw):
    fields = {}

    def maybe(key, strategy):
        value = draw(st.none() | strategy)
        if value is not None:
            fields[key] = value

    maybe("negative_prompt", PROMPT_TEXT)
    maybe("seed", st.integers(0, MAX_SEED))
    maybe("steps", st.integers(1, 150))
    maybe("cfg", st.floats(1.0, 30.0))
    maybe("sampler", st.sampled_from(sampler_names()))
    shape = draw(st.sampled_from(["none", "aspect", "size"]))
    if shape == "aspect":
        a, b = draw(st.integers(1, 100)), draw(st.integers(1, 100))
        assume(0.25 <= a / b <= 4)
        fields["aspect"] = (a, b)
    elif shape == "size":
        fields["width"], fields["height"] = draw(st.integers(8, 8192)), draw(st.integers(8, 8192))
    maybe("n", st.integers(1, 4))
    maybe("model", NAMES)
    names = draw(st.lists(NAMES, max_size=3, unique_by=str.lower))
    if names:
        fields["loras"] = tuple(LoraRef(name, draw(st.floats(-2.0, 2.0))) for name in names)
    image = draw(st.none() | st.text("23456789abcdefghjkmnpqrstuvwxyz", min_size=8, max_size=8))
    if image is not None:
        fields["image"] = image  # img2img: its refine pass is scale 1 unless --hires
    if draw(st.booleans()):
        fields["hires"] = Hires(
            1.0 if image is not None and draw(st.booleans()) else draw(st.floats(1.05, 4.0)),
            draw(st.none() | st.integers(1, 150)),
            draw(st.none() | st.floats(0.01, 1.0)),
        )
    if image is not None:
        pass  # a picture replaces the base pass: no variation seeds, no chaos
    elif draw(st.booleans()):
        maybe("vary_seed", st.integers(0, MAX_SEED))
        maybe("vary_strength", st.floats(0.01, 1.0))
    else:
        maybe("chaos", st.integers(0, 100))
        if "chaos" in fields and fields.get("n") == 1:
            fields["n"] = 2
    maybe("clip_skip", st.integers(1, 12))
    maybe("tile", st.booleans())
    return Request(prompt=draw(PROMPT_TEXT), **fields)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_render_parse_round_trip(request_):
    text = render(request_)
    assert parse(text, allow_empty_prompt=True) == request_
    if request_.prompt:
        assert parse(text) == request_


@settings(max_examples=200, deadline=None)
@given(PROMPT_TEXT)
def test_any_prompt_round_trips(prompt):
    request_ = Request(prompt=prompt, negative_prompt=prompt, seed=1)
    assert parse(render(request_), allow_empty_prompt=True) == request_


def test_names_with_a_trailing_newline_are_rejected():
    with pytest.raises(RequestError):
        Request(prompt="a cat", model="sdxl\n")
