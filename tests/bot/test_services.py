"""ImageService: planning (parse, lineage, defaults, scope checks) and execution (file + row)."""

from __future__ import annotations

import pytest
from PIL import Image

from bot.services import GenerationPlan
from generation.errors import ImageNotFound, ModelError, RequestError
from generation.metadata import read_recipe
from generation.operations import Relation
from storage.records import Scope

GUILD_A, GUILD_B = 111, 222
ALICE, BOB = 1001, 1002


@pytest.fixture
def container(make_container, tiny_engine):
    return make_container(engine=tiny_engine)  # share the session's tiny engine: same registry, no second build


def make(container, text: str, scope: Scope):
    service = container.images
    return service.execute(service.plan_generate(text, scope), scope)


def test_generate_writes_png_then_row(container):
    scope = Scope(user_id=ALICE, guild_id=GUILD_A)
    saved = make(container, "a cat --seed 3 --size 64x64 --steps 2 --n 2", scope)
    assert [s.record.seed for s in saved] == [3, 4]
    assert [s.record.batch_index for s in saved] == [0, 1]
    for item in saved:
        assert item.path.is_file()
        assert read_recipe(item.path).request == item.request
        assert item.record.guild_id == GUILD_A and item.record.owner_id == ALICE
        assert item.record.canonical == item.request.render()
        with Image.open(item.path) as img:
            assert img.size == (64, 64)


def test_one_guild_cannot_touch_anothers_images(container):
    a = Scope(user_id=ALICE, guild_id=GUILD_A)
    b = Scope(user_id=BOB, guild_id=GUILD_B)
    dm = Scope(user_id=ALICE, guild_id=None)
    image = make(container, "a cat --seed 3 --size 64x64 --steps 2", a)[0].record.public_id
    for scope in (b, dm):
        with pytest.raises(ImageNotFound):
            container.images.plan_reroll(image, scope)
        with pytest.raises(ImageNotFound):
            container.images.show(image, scope)
        assert container.images.history(scope) == []
    # anyone in guild A may build on it
    plan = container.images.plan_vary(image, Scope(user_id=BOB, guild_id=GUILD_A))
    assert plan.parent_public_id == image and plan.relation is Relation.VARY


def test_plans_keep_lineage_and_semantics(container):
    scope = Scope.local_operator()
    parent = make(container, "a cat --seed 9 --size 64x64 --steps 2 --cfg 6", scope)[0]
    pid = parent.record.public_id
    reroll = container.images.plan_reroll(pid, scope)
    assert reroll.request.seed != 9 and reroll.request.cfg == 6 and reroll.relation is Relation.REROLL
    tweak = container.images.plan_tweak(pid, "a dog", scope)
    assert tweak.request.seed == 9 and tweak.request.prompt == "a dog" and tweak.request.cfg == 6
    tweak = container.images.plan_tweak(pid, "--ar 2:1", scope)
    assert tweak.request.prompt == "a cat" and tweak.request.size == (728, 360)
    upscale = container.images.plan_upscale(pid, scope, mode="creative")
    assert upscale.request.hires.strength == 0.65 and upscale.init_image_path == str(parent.path)
    vary = container.images.plan_vary(pid, scope)
    assert vary.request.seed == 9 and vary.request.vary_strength == 0.15
    for plan in (reroll, tweak, upscale, vary):
        assert plan.parent_public_id == pid
        assert GenerationPlan.from_dict(plan.to_dict()) == plan


def test_upscale_uses_the_parent_pixels(container):
    scope = Scope.local_operator()
    parent = make(container, "a cat --seed 9 --size 64x64 --steps 3", scope)[0]
    plan = container.images.plan_upscale(parent.record.public_id, scope)
    child = container.images.execute(plan, scope)[0]
    assert child.record.parent_public_id == parent.record.public_id
    assert child.record.relation.value == "upscale"
    with Image.open(child.path) as img:
        assert img.size == (128, 128)
    # the same upscale recipe regenerated from scratch gives the same pixels (same machine)
    again = container.images.execute(GenerationPlan(request=plan.request), scope)[0]
    with Image.open(child.path) as a, Image.open(again.path) as b:
        assert a.tobytes() == b.tobytes()


def test_upscaling_a_low_step_image_chooses_the_refine_steps_it_needs(container):
    """U1 on a 2-step image: 2 × 0.35 would run no refine step, so the upscale takes the fewest
    steps that run one, and its result says how many — a button never fails on advice about flags."""
    from bot.discord_app.delivery import key_settings
    from generation.request import UPSCALE_STRENGTH

    scope = Scope.local_operator()
    parent = make(container, "a cat --seed 9 --size 64x64 --steps 2", scope)[0]
    for mode in ("subtle", "creative"):
        plan = container.images.plan_upscale(parent.record.public_id, scope, mode=mode)
        hires = plan.request.hires
        strength = UPSCALE_STRENGTH[mode]
        assert int(hires.steps * strength) >= 1 and int((hires.steps - 1) * strength) < 1, (mode, hires)
    plan = container.images.plan_upscale(parent.record.public_id, scope)
    child = container.images.execute(plan, scope)[0]
    with Image.open(child.path) as img:
        assert img.size == (128, 128)
    footer = key_settings(plan.request, 128, 128, "en")
    assert f"hires ×2, {plan.request.hires.steps} refine steps" in footer
    # an image with enough steps keeps them: nothing to say
    parent = make(container, "a cat --seed 9 --size 64x64 --steps 6", scope)[0]
    plan = container.images.plan_upscale(parent.record.public_id, scope)
    assert plan.request.hires.steps == 6 and "refine steps" not in key_settings(plan.request, 128, 128, "en")


def test_user_and_server_defaults_apply_in_order(container):
    with container.unit_of_work() as uow:
        uow.settings.set_guild(GUILD_A, defaults="--steps 12 --cfg 4 --sampler euler_a")
        uow.settings.set_user(ALICE, defaults="--steps 8")
        uow.commit()
    plan = container.images.plan_generate("a cat --cfg 9", Scope(user_id=ALICE, guild_id=GUILD_A))
    assert (plan.request.steps, plan.request.cfg, plan.request.sampler) == (8, 9.0, "Euler a")
    other = container.images.plan_generate("a cat", Scope(user_id=BOB, guild_id=GUILD_B))
    assert other.request.steps == 20 and other.request.sampler == "DPM++ 2M Karras"


def test_mistakes_are_typed_errors(container):
    scope = Scope.local_operator()
    with pytest.raises(RequestError):
        container.images.plan_generate("a cat --steps 0", scope)
    with pytest.raises(ModelError) as exc:
        container.images.plan_generate("a cat --model nope", scope)
    assert "tiny" in exc.value.message()
    with pytest.raises(ImageNotFound) as exc:
        container.images.plan_reroll("not-an-id!", scope)
    assert exc.value.code == "image.bad_reference"
    assert "图片" in exc.value.message("zh-CN")


def test_lora_from_the_home_folder_is_hashed_into_row_and_png(make_container, make_lora):
    container = make_container()
    try:
        container.settings.loras_dir.mkdir(parents=True)
        make_lora(container.settings.loras_dir, "inkwash")
        scope = Scope.local_operator()
        plain = make(container, "a cat --seed 4 --size 64x64 --steps 3", scope)[0]
        styled = make(container, "a cat --seed 4 --size 64x64 --steps 3 --lora inkwash:0.8", scope)[0]
        assert set(styled.record.lora_hashes) == {"inkwash"}
        assert len(styled.record.lora_hashes["inkwash"]) == 12
        recipe = read_recipe(styled.path)
        assert recipe.lora_hashes == styled.record.lora_hashes
        assert "<lora:inkwash:0.8>" in recipe.infotext and "Lora hashes:" in recipe.infotext
        with Image.open(plain.path) as a, Image.open(styled.path) as b:
            assert a.tobytes() != b.tobytes()
        with pytest.raises(ModelError) as exc:
            container.images.plan_generate("a cat --lora inkwsh", scope)
        assert "inkwash" in exc.value.message()
    finally:
        container.close()


def _pixels(path):
    import numpy as np

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float32)


def test_img2img_starts_from_a_stored_image_of_the_same_scope(container):
    import numpy as np

    a = Scope(user_id=ALICE, guild_id=GUILD_A)
    start = make(container, "a cat --seed 3 --size 64x64 --steps 3", a)[0]
    sid = start.record.public_id
    gentle, strong = (make(container, f"a watercolor cat --image {sid} --strength {s} --steps 10 --seed 8 --size 64x64",
                           a)[0] for s in (0.2, 0.9))
    assert gentle.request.image == sid and gentle.request.hires.scale == 1.0 and gentle.request.hires.strength == 0.2
    with Image.open(gentle.path) as img:
        assert img.size == (64, 64)  # the same size: no upscale without --hires
    base = _pixels(start.path)
    near, far = (float(np.abs(_pixels(item.path) - base).mean()) for item in (gentle, strong))
    assert near < far  # a low strength keeps more of the picture
    assert read_recipe(gentle.path).request == gentle.request  # the recipe names the picture
    assert f"--image {sid}" in gentle.record.canonical and "--strength 0.2" in gentle.record.canonical
    again = make(container, gentle.request.render(), a)[0]  # same request, same picture: same pixels
    assert np.array_equal(_pixels(again.path), _pixels(gentle.path))

    # another server's image (or a DM's) cannot be a starting picture
    for scope in (Scope(user_id=BOB, guild_id=GUILD_B), Scope(user_id=ALICE)):
        with pytest.raises(ImageNotFound) as error:
            container.images.plan_generate(f"a dog --image {sid}", scope)
        assert error.value.code == "image.start_not_found" and sid in error.value.message()


def test_img2img_keeps_the_pictures_shape_and_its_children_stay_honest(container, tmp_path):
    a = Scope(user_id=ALICE, guild_id=GUILD_A)
    wide = make(container, "a river --seed 5 --size 96x64 --steps 2", a)[0].record.public_id
    plan = container.images.plan_generate(f"an ink painting --image {wide} --steps 2", a)
    assert plan.request.size == (624, 416) and plan.init_image_path  # 3:2 at the tiny model's native area
    assert plan.request.hires.strength == 0.5  # the default strength
    child = container.images.execute(container.images.plan_generate(
        f"an ink painting --image {wide} --steps 4 --size 64x64 --seed 4", a), a)[0]
    cid = child.record.public_id

    upscale = container.images.plan_upscale(cid, a)  # starts from the child itself: the recipe says so
    assert upscale.request.image == cid and upscale.request.hires.scale == 2.0
    assert upscale.init_image_path == str(child.path)
    with pytest.raises(RequestError) as error:
        container.images.plan_vary(cid, a)
    assert error.value.code == "request.vary_from_image"
    tweak = container.images.plan_tweak(cid, "--strength 0.7", a)  # tunes the picture's pass: no --hires needed
    assert (tweak.request.image, tweak.request.hires.scale, tweak.request.hires.strength) == (wide, 1.0, 0.7)
    assert tweak.request.seed == 4 and tweak.init_image_path == str(container.store.absolute(
        container.images.show(wide, a).record.file_path))

    # the file of the starting picture went away (purged): a clear answer, not a failed job
    with container.unit_of_work() as uow:
        path = container.store.absolute(uow.images.get(wide, a).file_path)
    path.unlink()
    with pytest.raises(ImageNotFound) as error:
        container.images.plan_generate(f"again --image {wide}", a)
    assert error.value.code == "image.start_file_missing"


def test_a_tweak_may_tune_the_parents_refine_pass_without_repeating_it():
    from bot.services import _tweak_changes
    from generation.grammar import parse

    upscaled = parse("a cat --hires 1.5 --strength 0.4")
    assert _tweak_changes("--strength 0.6", upscaled).hires.scale == 1.5
    picture = parse("a cat --image k3x9fq2a --strength 0.4")
    changes = _tweak_changes("--hires-steps 12", picture)
    assert (changes.image, changes.hires.scale, changes.hires.steps) == ("k3x9fq2a", 1.0, 12)
    with pytest.raises(RequestError) as error:  # a txt2img parent has no refine pass to tune
        _tweak_changes("--strength 0.6", parse("a cat"))
    assert error.value.code == "grammar.needs_hires"


def _picture_bytes(size=(96, 64), fmt="JPEG") -> bytes:
    import io

    import numpy as np

    rng = np.random.default_rng(7)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(out, format=fmt)
    return out.getvalue()


def test_a_picture_sent_to_start_from_is_checked_kept_once_and_scoped(container):
    from generation.datasets import DatasetError

    a = Scope(user_id=ALICE, guild_id=GUILD_A)
    data = _picture_bytes()
    upload = container.images.add_upload(a, "holiday.jpg", data)
    assert (upload.width, upload.height, upload.original_name) == (96, 64, "holiday.jpg")
    stored = container.settings.uploads_dir / upload.file_path
    with Image.open(stored) as img:  # re-encoded: a PNG, whatever was sent
        assert img.format == "PNG" and img.size == (96, 64)
    assert container.images.add_upload(Scope(user_id=BOB, guild_id=GUILD_A), "again.jpg", data) == upload  # once

    plan = container.images.plan_generate(f"a watercolor --image {upload.public_id} --steps 4", a)
    assert plan.init_image_path == str(stored) and plan.request.aspect is None
    assert plan.request.size == (624, 416)  # the picture's 3:2 at the model's native area
    made = container.images.execute(container.images.plan_generate(
        f"a watercolor --image {upload.public_id} --steps 4 --size 64x64 --seed 2", a), a)[0]
    assert made.request.image == upload.public_id

    with pytest.raises(ImageNotFound):  # another server cannot start from it
        container.images.plan_generate(f"x --image {upload.public_id}", Scope(user_id=BOB, guild_id=GUILD_B))
    other = container.images.add_upload(Scope(user_id=BOB, guild_id=GUILD_B), "holiday.jpg", data)
    assert other.public_id != upload.public_id  # the same picture elsewhere is that place's own upload

    for bad, code in ((b"GIF89a" + b"\0" * 40, "dataset.image_format"), (b"not a picture", "dataset.not_an_image")):
        with pytest.raises(DatasetError) as error:
            container.images.add_upload(a, "bad.gif", bad)
        assert error.value.code == code, error.value.code
    with pytest.raises(DatasetError) as error:  # the announced size, before downloading
        container.images.check_upload("huge.png", 21 * 1024 * 1024)
    assert error.value.code == "dataset.image_too_large" and "20 MB" in error.value.message()
    assert sorted(p.name for p in container.settings.uploads_dir.iterdir()) == sorted(
        [upload.file_path, other.file_path])  # nothing kept of the refused ones
