"""The image recipe: A1111's ``parameters`` text and the ``brushwork`` PNG chunk."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import struct
import zlib
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from generation.errors import MetadataError
from generation.i18n import translate
from generation.metadata import (
    KNOWN_KEYS,
    MAX_TEXT_CHUNK,
    ParsedInfotext,
    Recipe,
    infotext,
    parse_infotext,
    png_bytes,
    read_recipe,
    recipe_exif,
)
from generation.request import MAX_SEED, Hires, LoraRef, Request
from generation.samplers import sampler_names

VERSION = "0.1.0"
HAS_GRAMMAR = importlib.util.find_spec("generation.grammar") is not None


def make_request(**changes) -> Request:
    base = Request(prompt="a cat on a motorbike", seed=1234, steps=30, cfg=7.0, sampler="DPM++ 2M Karras",
                   width=512, height=768, model="v1-5-pruned-emaonly")
    return replace(base, **changes)


def text_of(request: Request, **kwargs) -> str:
    kwargs.setdefault("model_hash", "6ce0161689")
    kwargs.setdefault("lora_hashes", {})
    kwargs.setdefault("version", VERSION)
    return infotext(request, **kwargs)


def small_png(**kwargs) -> bytes:
    kwargs.setdefault("model_hash", "6ce0161689")
    kwargs.setdefault("lora_hashes", {})
    kwargs.setdefault("version", VERSION)
    return png_bytes(Image.new("RGB", (8, 8), (200, 30, 60)), **kwargs)


# ---------------------------------------------------------------------- an independent A1111 reader
# What AUTOMATIC1111's "PNG Info" does with the text, written from the format notes: the whole
# text stripped, lines stripped, the last line is parameters if the pattern finds 3 pairs.

A1111_PATTERN = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def a1111_read(text: str) -> tuple[str, str, dict[str, str]]:
    *lines, last = text.strip().split("\n")
    if len(A1111_PATTERN.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt, negative, in_negative = "", "", False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        if in_negative:
            negative += ("" if not negative else "\n") + line
        else:
            prompt += ("" if not prompt else "\n") + line
    params = {}
    for key, value in A1111_PATTERN.findall(last):
        if value[:1] == '"' and value[-1:] == '"':
            value = json.loads(value)
        params[key] = value
    return prompt, negative, params


# ---------------------------------------------------------------------- writing: exact text


def test_plain_request_exact_text():
    request = make_request()
    assert text_of(request) == (
        "a cat on a motorbike\n"
        "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, "
        "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, RNG: CPU, Version: brushwork 0.1.0"
    )


def test_full_request_exact_text():
    request = make_request(
        prompt="ink wash, a crane", negative_prompt="blurry, lowres", sampler="Euler a", cfg=6.5,
        loras=(LoraRef("inkwash", 0.8), LoraRef("detail", 1.0)), hires=Hires(2.0, 15, 0.45),
        vary_seed=99, vary_strength=0.2, clip_skip=2, tile=True,
    )
    text = text_of(request, lora_hashes={"inkwash": "a1b2c3d4e5f6", "detail": "0f0f0f0f0f0f"},
                   hires_upscaler="R-ESRGAN 4x+", extra={"Emphasis": "Original"})
    assert text == (
        "ink wash, a crane <lora:inkwash:0.8> <lora:detail:1>\n"
        "Negative prompt: blurry, lowres\n"
        "Steps: 30, Sampler: Euler a, CFG scale: 6.5, Seed: 1234, Size: 512x768, Model hash: 6ce0161689, "
        "Model: v1-5-pruned-emaonly, Variation seed: 99, Variation seed strength: 0.2, Denoising strength: 0.45, "
        "Clip skip: 2, RNG: CPU, Tiling: True, Hires upscale: 2, Hires steps: 15, Hires upscaler: R-ESRGAN 4x+, "
        'Lora hashes: "inkwash: a1b2c3d4e5f6, detail: 0f0f0f0f0f0f", Emphasis: Original, Version: brushwork 0.1.0'
    )


def test_optional_keys_left_out():
    text = text_of(make_request(sampler="DDIM", clip_skip=1), model_hash=None)
    assert "Schedule type" not in text and "Model hash" not in text and "Clip skip" not in text
    assert "Negative prompt" not in text and "Hires" not in text and "Lora hashes" not in text
    assert "Sampler: DDIM, CFG scale: 7," in text


def test_size_is_the_base_pass():
    text = text_of(make_request(hires=Hires(1.5, None, None)))
    assert "Size: 512x768" in text and "Hires upscale: 1.5, Hires upscaler: Lanczos" in text
    assert "Hires steps" not in text and "Denoising strength" not in text


def test_values_with_separators_are_json_strings():
    text = text_of(make_request(), extra={"Note": 'say "hi", then: bye\nok', "Plain": "just text"})
    last = text.split("\n")[-1]
    assert 'Note: "say \\"hi\\", then: bye\\nok"' in last
    assert "Plain: just text" in last


def test_empty_prompt_with_negative_starts_with_a_newline_like_a1111():
    request = make_request(prompt="", negative_prompt="ugly")
    assert text_of(request).startswith("\nNegative prompt: ugly\nSteps: 30,")


@pytest.mark.parametrize("changes", [
    {"seed": None}, {"steps": None}, {"cfg": None}, {"sampler": None}, {"model": None},
    {"width": None, "height": None}, {"n": 2}, {"n": 3, "chaos": 50},
])
def test_unresolved_or_batch_requests_are_a_programming_error(changes):
    with pytest.raises(ValueError):
        text_of(make_request(**changes))


@pytest.mark.parametrize("extra", [{"Seed": "1"}, {"Version": "x"}, {"a": "1"}, {"bad:key": "1"},
                                   {"trailing ": "1"}, {"Key": 5}])
def test_bad_extra_is_a_programming_error(extra):
    with pytest.raises(ValueError):
        text_of(make_request(), extra=extra)


@pytest.mark.parametrize("hashes", [{"a,b": "1"}, {"a": "x:y"}, {"a": ""}, {" a": "1"}])
def test_bad_lora_hashes_are_a_programming_error(hashes):
    with pytest.raises(ValueError):
        text_of(make_request(), lora_hashes=hashes)


# ---------------------------------------------------------------------- A1111 reads what we write


def test_a1111_reads_every_key():
    request = make_request(
        prompt="a crane", negative_prompt="blurry", loras=(LoraRef("inkwash", 0.75),), hires=Hires(2.0, 12, 0.5),
        vary_seed=7, vary_strength=0.25, clip_skip=3, tile=True,
    )
    text = text_of(request, lora_hashes={"inkwash": "abcdef123456"}, extra={"Weird key-1/2": "a, b"})
    prompt, negative, params = a1111_read(text)
    assert prompt == "a crane <lora:inkwash:0.75>"
    assert negative == "blurry"
    assert params == {
        "Steps": "30", "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": "7", "Seed": "1234",
        "Size": "512x768", "Model hash": "6ce0161689", "Model": "v1-5-pruned-emaonly", "Variation seed": "7",
        "Variation seed strength": "0.25", "Denoising strength": "0.5", "Clip skip": "3", "RNG": "CPU",
        "Tiling": "True", "Hires upscale": "2", "Hires steps": "12", "Hires upscaler": "Lanczos",
        "Lora hashes": "inkwash: abcdef123456", "Weird key-1/2": "a, b", "Version": "brushwork 0.1.0",
    }
    assert list(params)[:6] == ["Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size"]


# ---------------------------------------------------------------------- round trips (hypothesis)

PHRASES = st.sampled_from([
    ",", ":", '"', "\\", "\n", " ", "猫", "水墨画，一只鹤", "(masterpiece:1.2)", "[cat|dog]", "<hypernet:x:1>",
    "Steps: 20, Sampler: Euler, CFG scale: 7", "Negative", "é", "\t", "{a}", "😀",
])
# Any text a prompt may hold: no lone surrogates, no control characters but tabs and line
# breaks (a NUL or a terminal escape is refused: generation.request.PROMPT_CONTROLS_ALLOWED).
CHARACTERS = st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\n\r")
TEXT = st.lists(st.one_of(st.text(CHARACTERS, max_size=8), PHRASES), max_size=8).map("".join)


def _fits_infotext(prompt: str) -> bool:
    # The format has no escape for these: a prompt line starting "Negative prompt:" would start the
    # negative prompt, and a literal <lora:…> tag is a LoRA to A1111 (and to us).
    return "<lora:" not in prompt and not any(
        line.lstrip().startswith("Negative prompt:") for line in prompt.split("\n"))


NAMES = st.from_regex(r"[\w][\w.\-]{0,15}", fullmatch=True).filter(lambda s: "\n" not in s)
WEIGHTS = st.floats(-2, 2, allow_nan=False)


@st.composite
def resolved_requests(draw) -> Request:
    lora_names = draw(st.lists(NAMES, max_size=3, unique_by=str.lower))
    image = draw(st.none() | st.text("23456789abcdefghjkmnpqrstuvwxyz", min_size=8, max_size=8))
    scales = st.floats(1.05, 4) | st.just(1.0) if image else st.floats(1.05, 4)  # 1: img2img at the same size
    hires = draw(st.none() | st.builds(
        Hires, scale=scales, steps=st.none() | st.integers(1, 150),
        strength=st.none() | st.floats(0.01, 1)))
    variation = image is None  # a picture replaces the base pass, whose noise variations shape
    return Request(
        prompt=draw(TEXT.filter(_fits_infotext)),
        negative_prompt=draw(st.none() | TEXT),
        seed=draw(st.integers(0, MAX_SEED)),
        steps=draw(st.integers(1, 150)),
        cfg=draw(st.floats(1, 30)),
        sampler=draw(st.sampled_from(sampler_names())),
        width=draw(st.integers(8, 8192)),
        height=draw(st.integers(8, 8192)),
        model=draw(NAMES),
        loras=tuple(LoraRef(name, draw(WEIGHTS)) for name in lora_names) or None,
        hires=hires,
        vary_seed=draw(st.none() | st.integers(0, MAX_SEED)) if variation else None,
        vary_strength=draw(st.none() | st.floats(0.01, 1)) if variation else None,
        clip_skip=draw(st.none() | st.integers(2, 12)),
        tile=draw(st.none() | st.just(True)),
        image=image,
    )


EXTRAS = st.dictionaries(
    st.from_regex(r"\w[\w \-/]{0,10}[\w\-/]", fullmatch=True).filter(lambda k: k not in KNOWN_KEYS),
    TEXT, max_size=3)
HASHES = st.dictionaries(NAMES, st.from_regex(r"[0-9a-f]{10,12}", fullmatch=True), max_size=3)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(request=resolved_requests(), extra=EXTRAS, hashes=HASHES,
       model_hash=st.none() | st.from_regex(r"[0-9a-f]{10}", fullmatch=True))
def test_infotext_round_trip(request, extra, hashes, model_hash):
    text = infotext(request, model_hash=model_hash, lora_hashes=hashes, version=VERSION, extra=extra)
    parsed = parse_infotext(text)
    assert parsed.request == request
    assert parsed.extra == extra
    assert parsed.lora_hashes == hashes
    assert parsed.model_hash == model_hash
    assert parsed.model_name == request.model
    assert parsed.version == f"brushwork {VERSION}"
    same_size_img2img = request.image is not None and request.hires.scale == 1.0
    assert parsed.hires_upscaler == ("Lanczos" if request.hires and not same_size_img2img else None)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(request=resolved_requests(), hashes=HASHES)
def test_png_round_trip(request, hashes):
    data = small_png(request=request, lora_hashes=hashes)
    recipe = read_recipe(data)
    assert recipe.origin == "brushwork"
    assert recipe.request == request
    assert recipe.lora_hashes == hashes
    assert recipe.version == VERSION
    assert parse_infotext(recipe.infotext).request == request


def test_img2img_from_a_stored_image_reads_like_a1111s_img2img_plus_its_source():
    request = make_request(image="k3x9fq2a", hires=Hires(1.0, 30, 0.55))
    text = text_of(request)
    assert "Denoising strength: 0.55, Init image: k3x9fq2a" in text
    assert "Hires upscale" not in text and "Hires upscaler" not in text and "Hires steps: 30" in text
    _, _, pairs = a1111_read(text)  # A1111 reads it as img2img with one key it does not know
    assert pairs["Denoising strength"] == "0.55" and pairs["Init image"] == "k3x9fq2a"
    assert parse_infotext(text).request == request
    upscaled = make_request(image="k3x9fq2a", hires=Hires(2.0, 30, 0.4))
    assert "Hires upscale: 2" in text_of(upscaled) and parse_infotext(text_of(upscaled)).request == upscaled
    with pytest.raises(MetadataError):  # not an id: refused, never used as a path
        parse_infotext(text.replace("k3x9fq2a", "../../x"))


def test_clip_skip_one_is_the_default_and_reads_back_unset():
    # A1111 writes Clip skip only above 1; for a resolved request 1 and unset mean the same.
    parsed = parse_infotext(text_of(make_request(clip_skip=1)))
    assert parsed.request.clip_skip is None
    assert parsed.request == make_request()


# ---------------------------------------------------------------------- foreign A1111 texts


def test_old_single_sampler_name_with_lora_tag_in_the_middle():
    parsed = parse_infotext(
        "masterpiece, best quality, <lora:add_detail:0.5>, 1girl, smile\n"
        "Negative prompt: lowres, bad anatomy\n"
        "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 3551574402, Size: 512x768, "
        "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.6.0"
    )
    assert parsed.request == Request(
        prompt="masterpiece, best quality, 1girl, smile", negative_prompt="lowres, bad anatomy", seed=3551574402,
        steps=20, cfg=7.0, sampler="DPM++ 2M Karras", width=512, height=768, model="v1-5-pruned-emaonly",
        loras=(LoraRef("add_detail", 0.5),),
    )
    assert parsed.request.is_resolved
    assert parsed.model_hash == "6ce0161689" and parsed.version == "v1.6.0" and parsed.extra == {}


def test_new_split_form_with_hires_lora_hashes_and_unknown_keys():
    parsed = parse_infotext(
        "1girl, city at night, <lora:neon_v2:0.7> <hypernet:retro:1>\n"
        "Negative prompt: easynegative\n"
        "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, Size: 832x1216, "
        "Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Denoising strength: 0.4, Clip skip: 2, "
        "ADetailer model: face_yolov8n.pt, ADetailer prompt: \"smile, blush\", Hires upscale: 1.5, Hires steps: 0, "
        'Hires upscaler: R-ESRGAN 4x+, Lora hashes: "neon_v2: 7c6bad76eb54", '
        'TI hashes: "easynegative: c74b4e810b03", Emphasis: Original, Version: v1.10.1'
    )
    request = parsed.request
    assert request.prompt == "1girl, city at night, <hypernet:retro:1>"
    assert request.loras == (LoraRef("neon_v2", 0.7),)
    assert request.sampler == "DPM++ 2M Karras" and request.cfg == 6.5 and request.clip_skip == 2
    assert request.hires == Hires(scale=1.5, steps=None, strength=0.4)  # "Hires steps: 0" = as many as the base
    assert (request.width, request.height, request.model) == (832, 1216, "sd_xl_base_1.0")
    assert parsed.hires_upscaler == "R-ESRGAN 4x+"
    assert parsed.lora_hashes == {"neon_v2": "7c6bad76eb54"}
    assert parsed.extra == {"ADetailer model": "face_yolov8n.pt", "ADetailer prompt": "smile, blush",
                            "TI hashes": "easynegative: c74b4e810b03", "Emphasis": "Original"}
    assert parsed.unreproduced == {  # Emphasis: Original is how Brushwork weighs prompts too
        "ADetailer model": "face_yolov8n.pt", "ADetailer prompt": "smile, blush", "Hires upscaler": "R-ESRGAN 4x+",
        "TI hashes": "easynegative: c74b4e810b03"}


@pytest.mark.parametrize(("sampler", "schedule", "name"), [
    ("DPM++ 3M SDE", "Exponential", "DPM++ 3M SDE Exponential"),
    ("Euler a", "SGM Uniform", "Euler a SGM Uniform"),
    ("DPM++ 2M", "Beta", "DPM++ 2M Beta"),
])
def test_current_a1111_schedule_types_read_and_write_back(sampler, schedule, name):
    parsed = parse_infotext(f"a cat\nSteps: 20, Sampler: {sampler}, Schedule type: {schedule}, CFG scale: 7, "
                            "Seed: 1, Size: 512x512, Model: tiny")
    assert parsed.request.sampler == name and parsed.extra == {}
    assert f"Sampler: {sampler}, Schedule type: {schedule}, " in text_of(parsed.request)


CURRENT_A1111 = (
    "a lighthouse, <lora:glow:0.8>, stormy sea\n"
    "Negative prompt: blurry\n"
    "Steps: 30, Sampler: Restart, Schedule type: Align Your Steps, CFG scale: 6, Seed: 77, Size: 512x768, "
    "Model hash: 6ce0161689, Model: dreamshaper_8, Denoising strength: 0.45, ENSD: 31337, Eta: 0.67, RNG: NV, "
    "Token merging ratio: 0.3, Hires prompt: \"a lighthouse, detailed\", Hires upscale: 2, Hires steps: 10, "
    "Hires upscaler: Latent, Hires sampler: DPM++ 2M, Hires schedule type: Karras, Hires CFG Scale: 5, "
    "Emphasis: Original, Version: v1.10.1"
)


def test_what_cannot_be_reproduced_is_read_and_named_never_refused():
    parsed = parse_infotext(CURRENT_A1111)
    request = parsed.request
    assert request.prompt == "a lighthouse, stormy sea" and request.negative_prompt == "blurry"
    assert request.loras == (LoraRef("glow", 0.8),)
    assert (request.steps, request.cfg, request.seed, request.width, request.height) == (30, 6.0, 77, 512, 768)
    assert request.model == "dreamshaper_8" and request.hires == Hires(scale=2.0, steps=10, strength=0.45)
    assert request.sampler is None  # diffusers has no Restart sampler: the reader says so, nothing is made up
    assert list(parsed.unreproduced.items()) == [
        ("Sampler", "Restart"), ("Schedule type", "Align Your Steps"), ("ENSD", "31337"), ("Eta", "0.67"),
        ("RNG", "NV"), ("Token merging ratio", "0.3"), ("Hires prompt", "a lighthouse, detailed"),
        ("Hires upscaler", "Latent"), ("Hires sampler", "DPM++ 2M"), ("Hires schedule type", "Karras"),
        ("Hires CFG Scale", "5"),
    ]


def test_hires_settings_equal_to_the_base_pass_are_reproduced():
    parsed = parse_infotext(
        "a cat\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, "
        "Denoising strength: 0.5, Hires upscale: 2, Hires upscaler: Lanczos, Hires sampler: Use same sampler, "
        "Hires schedule type: Karras, Hires CFG scale: 7.0, Hires prompt: a cat, Hires checkpoint: Use same checkpoint, "
        "Batch size: 4, Batch pos: 2, RNG: CPU, Emphasis: Original")
    assert parsed.request.sampler == "DPM++ 2M Karras" and parsed.unreproduced == {}


@pytest.mark.parametrize(("sampler", "schedule", "named"), [
    ("DDIM", "Karras", {"Schedule type": "Karras"}),  # diffusers' DDIM has no Karras sigmas
    ("Euler", "KL Optimal", {"Schedule type": "KL Optimal"}),
    ("DPM fast", "Automatic", {"Sampler": "DPM fast"}),
    ("LCM", "Karras", {"Sampler": "LCM", "Schedule type": "Karras"}),
])
def test_sampler_and_schedule_pairs_diffusers_lacks(sampler, schedule, named):
    parsed = parse_infotext(f"a\nSteps: 20, Sampler: {sampler}, Schedule type: {schedule}, CFG scale: 7, Seed: 1")
    assert parsed.request.sampler is None and parsed.unreproduced == named


def test_a1111_recipe_names_what_is_not_reproduced(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", CURRENT_A1111)
    path = tmp_path / "a1111.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    recipe = read_recipe(path)
    assert recipe.unreproduced["Sampler"] == "Restart" and recipe.model_name == "dreamshaper_8"
    assert recipe.with_model("tiny").request.model == "tiny"
    assert read_recipe(small_png(request=make_request())).unreproduced == {}


@pytest.mark.parametrize(("prompt", "expected"), [
    ("a cat, <lora:x:0.8>, red", "a cat, red"),
    ("<lora:x:1> a cat", "a cat"),
    ("a cat, <lora:x:1>", "a cat"),
    ("a cat,<lora:x:1>", "a cat"),
    ("<lora:x:1>, a cat", "a cat"),
    ("a cat <lora:x:1>, red", "a cat, red"),
    ("a <lora:x:1> b", "a b"),
    ("a, <lora:x:1> <lora:y:1>, b", "a, b"),
    ("a, <lora:x:1>,<lora:y:1>, b", "a, b"),
    ("a cat,\n<lora:x:1>\nred", "a cat,\nred"),
])
def test_removing_a_lora_tag_leaves_no_dangling_comma(prompt, expected):
    parsed = parse_infotext(f"{prompt}\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Version: v1.10.1")
    assert parsed.request.prompt == expected
    assert {ref.name for ref in parsed.request.loras or ()} <= {"x", "y"} and parsed.request.loras


def test_brushworks_own_trailing_tags_come_off_exactly():
    """Brushwork appends its tags after one space: a prompt ending in a comma keeps it."""
    request = make_request(prompt="a crane,", loras=(LoraRef("ink", 1.0),))
    assert parse_infotext(text_of(request)).request.prompt == "a crane,"


def test_multi_line_prompt_and_negative():
    parsed = parse_infotext(
        "a lighthouse\nat dusk, oil painting\n\nwide shot\n"
        "Negative prompt: blurry\nwatermark, text\n"
        "Steps: 25, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.5, Seed: 42, Size: 768x512, "
        "Model: dreamshaper_8, RNG: CPU"
    )
    assert parsed.request.prompt == "a lighthouse\nat dusk, oil painting\n\nwide shot"
    assert parsed.request.negative_prompt == "blurry\nwatermark, text"
    assert parsed.request.sampler == "Euler a"
    assert parsed.extra == {}  # RNG: CPU is what Brushwork does


def test_foreign_keys_brushwork_cannot_reproduce_stay_in_extra():
    parsed = parse_infotext(
        "a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, Denoising strength: 0.75, "
        "RNG: GPU, Model: My Model (v2)"
    )
    assert parsed.request.hires is None
    assert parsed.extra == {"Denoising strength": "0.75", "RNG": "GPU"}
    assert parsed.model_name == "My Model (v2)" and parsed.request.model is None  # not a Brushwork name


def test_hires_resize_becomes_a_scale():
    parsed = parse_infotext("a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x768, "
                            "Denoising strength: 0.5, Hires resize: 1024x1536, Hires upscaler: Latent")
    assert parsed.request.hires == Hires(scale=2.0, steps=None, strength=0.5)
    assert parsed.request.output_size == (1024, 1536)


def test_text_without_a_parameters_line_is_all_prompt():
    parsed = parse_infotext("a cat, sitting: on a mat\nNegative prompt: dogs")
    assert parsed.request == Request(prompt="a cat, sitting: on a mat", negative_prompt="dogs")
    assert not parsed.request.is_resolved


def test_lora_tag_forms():
    parsed = parse_infotext("x <lora:a> <lora:b:0.5:0.5> <lora:c:-1.5>\nSteps: 1, Seed: 2, CFG scale: 3")
    assert parsed.request.loras == (LoraRef("a", 1.0), LoraRef("b", 0.5), LoraRef("c", -1.5))
    assert parsed.request.prompt == "x"


# ---------------------------------------------------------------------- parse errors

PARAMS = "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512"


@pytest.mark.parametrize(("text", "code", "named"), [
    ("a\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512*512", "metadata.bad_size", "512*512"),
    ("a\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 0x512", "metadata.out_of_range", "Size"),
    ("a\nSteps: twenty, Sampler: Euler a, CFG scale: 7", "metadata.not_an_integer", "twenty"),
    ("a\nSteps: 500, Sampler: Euler a, CFG scale: 7", "metadata.out_of_range", "500"),
    ("a\nSteps: 20, Sampler: Euler a, CFG scale: nan", "metadata.not_a_number", "nan"),
    ("a\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 99999999999", "metadata.out_of_range", "Seed"),
    ("a\n" + PARAMS + ", Tiling: maybe", "metadata.bad_value", "maybe"),
    ("a\n" + PARAMS + ", Hires upscale: 1", "metadata.out_of_range", "Hires upscale"),
    ("a\n" + PARAMS + ", Hires resize: 1000x700", "metadata.bad_hires_resize", "1000x700"),
    ("a\n" + PARAMS + ', Lora hashes: "noseparator"', "metadata.bad_lora_hashes", "noseparator"),
    ("a <lora:x:heavy>\n" + PARAMS, "metadata.bad_lora_tag", "<lora:x:heavy>"),
    ("a <lora:x:5>\n" + PARAMS, "metadata.bad_lora_tag", "<lora:x:5>"),
    ("a <lora:x:0.5:1>\n" + PARAMS, "metadata.bad_lora_tag", "<lora:x:0.5:1>"),
    ("a <lora:Detail Tweaker (v1):1>\n" + PARAMS, "metadata.bad_lora_name", "Detail Tweaker (v1)"),
    ("a <lora:x:1>, b <lora:X:0.5>\n" + PARAMS, "metadata.duplicate_lora", "X"),
    ("x" * 4001 + "\n" + PARAMS, "metadata.prompt_too_long", "4001"),
    ("  \n ", "metadata.empty_infotext", "empty"),
])
def test_parse_errors_name_the_problem(text, code, named):
    with pytest.raises(MetadataError) as info:
        parse_infotext(text)
    assert info.value.code == code
    assert named in info.value.message()
    assert "{" not in info.value.message("zh-CN")


# ---------------------------------------------------------------------- PNG files


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        out.append((kind, data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return out


def build_png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = [b"\x89PNG\r\n\x1a\n"]
    for kind, body in chunks:
        out.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)))
    return b"".join(out)


def itxt(key: str, text: str) -> tuple[bytes, bytes]:
    return b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8")


def with_brushwork_json(text: str) -> bytes:
    chunks = [c for c in png_chunks(small_png(request=make_request())) if c[1][:10] != b"brushwork\0"]
    return build_png(chunks[:1] + [itxt("brushwork", text)] + chunks[1:])


def test_chunks_written():
    request = make_request(loras=(LoraRef("inkwash", 0.8),))
    data = small_png(request=request, lora_hashes={"inkwash": "abc"})
    chunks = dict((body.split(b"\0")[0], kind) for kind, body in png_chunks(data) if kind in (b"tEXt", b"iTXt"))
    assert chunks == {b"parameters": b"tEXt", b"brushwork": b"iTXt"}
    with Image.open(io.BytesIO(data)) as image:  # Pillow (and so A1111) sees the same texts
        assert image.info["parameters"] == text_of(request, lora_hashes={"inkwash": "abc"})
        recipe = json.loads(image.info["brushwork"])
        assert image.getpixel((0, 0)) == (200, 30, 60)
    assert recipe["format"] == 1 and recipe["version"] == VERSION
    assert recipe["request"] == request.to_dict()
    assert recipe["model_hash"] == "6ce0161689" and recipe["lora_hashes"] == {"inkwash": "abc"}
    if HAS_GRAMMAR:
        assert recipe["canonical"] == request.render()
    else:
        assert "canonical" not in recipe
    assert ": " not in image.info["brushwork"].split('"prompt"')[0]  # compact separators


def test_cjk_prompt_goes_into_an_itxt_chunk_and_reads_back():
    request = make_request(prompt="水墨画，一只鹤站在湖边", negative_prompt="模糊、低质量")
    data = small_png(request=request)
    kinds = {body.split(b"\0")[0]: kind for kind, body in png_chunks(data) if kind in (b"tEXt", b"iTXt")}
    assert kinds[b"parameters"] == b"iTXt"
    recipe = read_recipe(data)
    assert recipe.request == request
    assert recipe.infotext.startswith("水墨画，一只鹤站在湖边\nNegative prompt: 模糊、低质量\n")
    assert parse_infotext(recipe.infotext).request == request


def test_a1111_png_falls_back_to_parameters(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat <lora:ink:0.6>\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, "
                                "Size: 512x512, Model hash: abc, Model: anything-v5, "
                                'Lora hashes: "ink: 123", Version: v1.9.4')
    path = tmp_path / "a1111.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    for source in (path, str(path), path.read_bytes(), open(path, "rb")):
        recipe = read_recipe(source)
        assert recipe == Recipe(
            request=Request(prompt="a cat", seed=5, steps=20, cfg=7.0, sampler="Euler a", width=512, height=512,
                            model="anything-v5", loras=(LoraRef("ink", 0.6),)),
            infotext=info.chunks[0][1].split(b"\0", 1)[1].decode("latin-1"),
            model_hash="abc", lora_hashes={"ink": "123"}, origin="a1111", version="v1.9.4",
            model_name="anything-v5",
        )
        if hasattr(source, "close"):
            source.close()


def test_non_seekable_stream():
    data = small_png(request=make_request())

    class Pipe(io.RawIOBase):
        def __init__(self):
            self.inner = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, buffer):
            chunk = self.inner.read(len(buffer))
            buffer[:len(chunk)] = chunk
            return len(chunk)

    assert read_recipe(Pipe()).request == make_request()


def test_text_chunks_after_the_image_data_are_found():
    chunks = png_chunks(small_png(request=make_request()))
    texts = [c for c in chunks if c[0] in (b"tEXt", b"iTXt")]
    others = [c for c in chunks if c[0] not in (b"tEXt", b"iTXt")]
    moved = build_png(others[:-1] + texts + others[-1:])  # …IDAT, texts, IEND
    assert read_recipe(moved).request == make_request()


def test_pixels_are_never_decoded():
    chunks = [(kind, b"not zlib at all" if kind == b"IDAT" else body)
              for kind, body in png_chunks(small_png(request=make_request()))]
    data = build_png(chunks)
    with pytest.raises(Exception):  # noqa: B017 - Pillow's error types vary
        Image.open(io.BytesIO(data)).load()
    assert read_recipe(data).request == make_request()


def _bomb(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return build_png([(b"IHDR", ihdr), itxt("parameters", "a\n" + PARAMS),
                      (b"IDAT", zlib.compress(b"\0" * 64)), (b"IEND", b"")])


def expect_error(source, code: str) -> MetadataError:
    with pytest.raises(MetadataError) as info:
        read_recipe(source)
    assert info.value.code == code, info.value.message()
    assert "{" not in info.value.message() and "{" not in info.value.message("zh-CN")
    return info.value


def test_decompression_bomb_is_refused():
    error = expect_error(_bomb(100_000, 100_000), "metadata.too_large")
    assert "100000x100000" in error.message()


def test_text_zip_bomb_is_refused():
    body = b"parameters\0\0" + zlib.compress(b"a" * (MAX_TEXT_CHUNK * 3))
    chunks = png_chunks(small_png(request=make_request()))
    data = build_png(chunks[:1] + [(b"zTXt", body)] + [c for c in chunks[1:] if c[0] not in (b"tEXt", b"iTXt")])
    assert "parameters" in expect_error(data, "metadata.text_too_large").message()


def test_not_an_image():
    expect_error(b"hello, this is text", "metadata.not_image")
    expect_error(b"", "metadata.not_image")


def test_other_image_formats_are_named():
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "GIF")
    error = expect_error(out.getvalue(), "metadata.not_png")
    assert "GIF" in error.message() and "JPEG" in error.message()


def encoded(fmt: str, exif: bytes = b"") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 60)).save(out, fmt, exif=exif)
    return out.getvalue()


def comment_exif(raw: bytes) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = raw
    return exif.tobytes()


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_jpeg_and_webp_copies_carry_the_recipe_in_exif_like_a1111(fmt):
    request = make_request(prompt="山水画, ink wash (mist:1.2)", negative_prompt="blurry",
                           loras=(LoraRef("inkwash", 0.8),))
    png = small_png(request=request, lora_hashes={"inkwash": "5687ec4ba6e5"})
    exif = recipe_exif(png)
    data = encoded(fmt, exif)
    with Image.open(io.BytesIO(data)) as image:  # where A1111 looks: UserComment, UNICODE + UTF-16BE
        raw = image.getexif().get_ifd(0x8769)[0x9286]
    assert raw[:8] == b"UNICODE\0" and raw[8:].decode("utf-16-be") == read_recipe(png).infotext
    recipe = read_recipe(data)
    assert recipe.origin == "a1111" and recipe.infotext == read_recipe(png).infotext
    assert recipe.request == request and recipe.lora_hashes == {"inkwash": "5687ec4ba6e5"}
    assert recipe.model_hash == "6ce0161689"


def test_a_png_without_a_recipe_gives_no_exif():
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "PNG")
    assert recipe_exif(out.getvalue()) is None


@pytest.mark.parametrize("raw", [
    lambda text: b"UNICODE\0" + text.encode("utf-16-le"),  # little-endian writers
    lambda text: b"UNICODE\0" + text.encode("utf-16"),  # with a byte-order mark
    lambda text: b"ASCII\0\0\0" + text.encode("ascii"),
    lambda text: b"\0" * 8 + text.encode("utf-8"),  # "undefined" character code
], ids=["utf16-le", "utf16-bom", "ascii", "undefined"])
def test_user_comment_encodings_other_writers_use(raw):
    text = text_of(make_request())
    assert read_recipe(encoded("JPEG", comment_exif(raw(text)))).request == make_request()


def test_jpeg_without_a_recipe_says_so():
    error = expect_error(encoded("JPEG"), "metadata.missing_exif")
    assert "JPEG" in error.message() and "UserComment" in error.message()
    expect_error(encoded("WEBP", comment_exif(b"UNICODE\0")), "metadata.missing_exif")


def test_jpeg_bomb_is_refused_from_its_header():
    data = bytearray(encoded("JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)  # height, width in the frame header
    error = expect_error(bytes(data), "metadata.too_many_pixels")
    assert str(Image.MAX_IMAGE_PIXELS * 2) in error.message()


def test_oversized_user_comment_is_refused():
    raw = b"UNICODE\0" + ("a" * (MAX_TEXT_CHUNK // 2 + 10)).encode("utf-16-be")
    expect_error(encoded("WEBP", comment_exif(raw)), "metadata.comment_too_large")


@pytest.mark.parametrize("cut", [10, 30, 60, 120, -30, -12, -4])
def test_truncated_png(cut):
    data = small_png(request=make_request(prompt="a long prompt " * 5))
    expect_error(data[:cut], "metadata.truncated")


def test_damaged_text_chunk():
    data = bytearray(small_png(request=make_request()))
    at = data.index(b"parameters") + 20
    data[at] ^= 0x20
    assert "parameters" in expect_error(bytes(data), "metadata.corrupt").message()


def test_png_without_text_chunks():
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "PNG")
    error = expect_error(out.getvalue(), "metadata.missing")
    assert "parameters" in error.message() and "brushwork" in error.message()


def test_missing_file(tmp_path):
    assert "nope.png" in expect_error(tmp_path / "nope.png", "metadata.no_such_file").message()


def test_malformed_json_chunk():
    assert "brushwork" in expect_error(with_brushwork_json('{"format": 1, '), "metadata.bad_json").message()


@pytest.mark.parametrize(("recipe", "code", "named"), [
    ([1, 2], "metadata.wrong_type", "top level"),
    ({"format": "1"}, "metadata.wrong_type", "format"),
    ({"format": 2, "version": "9.0"}, "metadata.unsupported_format", "2"),
    ({"format": 1, "version": 1}, "metadata.wrong_type", "version"),
    ({"format": 1, "version": "x", "request": "a cat"}, "metadata.wrong_type", "request"),
    ({"format": 1, "version": "x", "request": {}, "model_hash": 5}, "metadata.wrong_type", "model_hash"),
    ({"format": 1, "version": "x", "request": {}, "lora_hashes": ["a"]}, "metadata.wrong_type", "lora_hashes"),
    ({"format": 1, "version": "x", "request": {"prompt": "a", "steps": "30"}}, "metadata.bad_recipe", "30"),
    ({"format": 1, "version": "x", "request": {"prompt": "a", "colour": "red"}}, "metadata.bad_recipe", "colour"),
    ({"format": 1, "version": "x", "request": {"prompt": "a", "hires": 2}}, "metadata.bad_recipe", "cannot"),
    ({"format": 1, "version": "x", "request": {"prompt": "a", "seed": 1}}, "metadata.unresolved_recipe", "steps"),
])
def test_recipe_json_with_wrong_content(recipe, code, named):
    assert named in expect_error(with_brushwork_json(json.dumps(recipe)), code).message()


def test_bad_infotext_in_a1111_png_names_the_key():
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: big")
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "PNG", pnginfo=info)
    assert "Size" in expect_error(out.getvalue(), "metadata.bad_size").message()


# ---------------------------------------------------------------------- catalogue


def test_every_code_raised_here_is_in_both_catalogues():
    import generation.metadata as module

    source = open(module.__file__, encoding="utf-8").read()
    codes = set(re.findall(r'"(metadata\.[a-z_]+)"', source))
    assert codes
    for code in codes:
        for locale in ("en", "zh-CN"):
            assert translate(code, locale) != code, (code, locale)
    assert translate("metadata.missing", "zh-CN") != translate("metadata.missing", "en")


def test_types():
    parsed = parse_infotext(text_of(make_request()))
    assert isinstance(parsed, ParsedInfotext)
    with pytest.raises(TypeError):
        parse_infotext(b"bytes")  # type: ignore[arg-type]
