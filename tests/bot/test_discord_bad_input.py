"""Bad input through the Discord bot: a refused request stores nothing (issue 17).

``/imagine picture:`` with a request that is refused: the picture is checked and the request
planned with it before the picture is kept, so the refusal (the "thinking…" message turned
into the reason) leaves no upload file and no upload row; a good request after it keeps the
picture once.
"""

from __future__ import annotations

import io

from PIL import Image

PICTURE_REFUSALS = [
    ("a castle --steps 500", "1–150"),
    ("a castle --bogus 3", "--bogus"),
    ("a castle --chaos 50", "--chaos"),
    ("a castle --n 9", "--n 9"),
]


def _uploads(h) -> tuple[int, int]:
    folder = h.container.settings.uploads_dir
    files = sum(1 for path in folder.rglob("*") if path.is_file()) if folder.exists() else 0
    with h.store_rows() as uow:
        return files, len(uow.uploads.file_paths())


async def test_a_refused_request_with_a_picture_keeps_no_picture(brushwork_bot):
    h = brushwork_bot
    out = io.BytesIO()
    Image.effect_noise((96, 64), 60).convert("RGB").save(out, "JPEG")
    picture = ("holiday.jpg", out.getvalue())
    for prompt, reason in PICTURE_REFUSALS:
        bad = await h.imagine(h.world.alice, h.world.general, f"{prompt} --size 64x64", tiny=False, picture=picture)
        await h.fake.wait_until(lambda bad=bad: bad.original is not None and not bad.original.loading,
                                description=f"the reason {prompt!r} is refused")
        assert reason in bad.original.content, bad.original.content
        assert bad.original.components == [] and h.fake.internal_errors == []
        assert _uploads(h) == (0, 0), prompt

    good = await h.imagine(h.world.alice, h.world.general, "a castle --strength 0.5", picture=picture)
    await h.wait_for_result(good)
    assert _uploads(h) == (1, 1)
