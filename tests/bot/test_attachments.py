"""Uploads within Discord's limits: originals when they fit, re-encoded otherwise, never dropped."""

from __future__ import annotations

import io
import os

from PIL import Image

from bot.attachments import MAX_FILES_PER_MESSAGE, Upload, fit_image, plan_messages, prepare


def noisy_png(size: int) -> bytes:
    image = Image.frombytes("RGB", (size, size), os.urandom(size * size * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_original_png_is_kept_when_it_fits():
    png = noisy_png(32)
    upload = fit_image("k3x9fq2a.png", png, limit=len(png))
    assert upload.original and upload.data == png and upload.filename == "k3x9fq2a.png"


def test_oversize_png_is_reencoded_under_the_limit():
    png = noisy_png(256)  # random pixels: PNG cannot compress them
    limit = len(png) // 3
    upload = fit_image("k3x9fq2a.png", png, limit=limit)
    assert not upload.original and upload.size <= limit
    assert upload.filename.startswith("k3x9fq2a.")
    with Image.open(io.BytesIO(upload.data)) as img:
        assert img.size[0] >= 64


def test_a_reencoded_copy_keeps_the_recipe():
    from generation.metadata import png_bytes, read_recipe
    from generation.request import Request

    request = Request(prompt="灯塔, dusk", seed=42, steps=20, cfg=7.0, sampler="Euler a", width=256, height=256,
                      model="tiny")
    image = Image.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3))
    png = png_bytes(image, request=request, model_hash="0123456789", lora_hashes={}, version="0.1.0")
    upload = fit_image("k3x9fq2a.png", png, limit=len(png) // 3)
    assert not upload.original
    assert read_recipe(upload.data).request == request


def test_tiny_limit_shrinks_rather_than_drops():
    png = noisy_png(512)
    upload = fit_image("x.png", png, limit=20_000)
    assert upload.size <= 20_000


def test_messages_hold_at_most_ten_files_and_keep_order():
    uploads = [Upload(f"{i}.png", b"x" * 10, True) for i in range(23)]
    messages = plan_messages(uploads, limit=10 * 1024 * 1024)
    assert [len(m) for m in messages] == [MAX_FILES_PER_MESSAGE, MAX_FILES_PER_MESSAGE, 3]
    assert [u.filename for m in messages for u in m] == [f"{i}.png" for i in range(23)]


def test_prepare_fits_and_groups():
    images = [(f"{i}.png", noisy_png(64)) for i in range(4)]
    messages = prepare(images, limit=8 * 1024 * 1024)
    assert len(messages) == 1 and all(u.original for u in messages[0])
