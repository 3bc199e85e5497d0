"""ImageRepository: adding, reading, history pages, lineage, children, deletion."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from storage.errors import InvalidValue, NotFound, PermissionDenied
from storage.files import StoredFile
from storage.records import ImageRelation, Scope

OPERATOR = Scope.local_operator()
ALICE_IN_A = Scope(user_id=111, guild_id=1000)


def _get(uow_factory, public_id, scope=OPERATOR, **kw):
    with uow_factory() as uow:
        return uow.images.get(public_id, scope, **kw)


def test_added_image_reads_back_field_for_field(uow_factory, add_image):
    added = add_image(
        guild_id=1000,
        channel_id=2000,
        negative_prompt="blurry, 模糊",
        model_hash="6ce0161689",
        lora_hashes={"水墨": "abc123"},
        seed=2**40 + 7,
        batch_index=2,
    )
    read = _get(uow_factory, added.public_id, ALICE_IN_A)
    assert read == added
    assert read.seed == 2**40 + 7
    assert read.lora_hashes == {"水墨": "abc123"}
    assert read.relation is None and read.parent_public_id is None and not read.deleted


def test_unicode_prompts_and_json_round_trip(engine, uow_factory, add_image):
    request = {
        "prompt": "一只骑摩托车的猫，水墨画风格",
        "negative": ["模糊", "低质量"],
        "loras": [{"name": "国风", "weight": 0.8}],
        "nested": {"emoji": "🐱", "none": None, "big": 2**53},
    }
    added = add_image(prompt=request["prompt"], request=request, canonical=f"{request['prompt']} --seed 42")
    read = _get(uow_factory, added.public_id)
    assert read.request == request
    assert read.prompt == "一只骑摩托车的猫，水墨画风格"
    assert read.canonical.startswith("一只")
    with engine.connect() as connection:  # stored readable, not as \\u escapes
        raw = connection.execute(
            sa.text("SELECT CAST(request AS TEXT) FROM images WHERE public_id = :p"), {"p": added.public_id}
        ).scalar()
    assert "水墨画风格" in raw and "🐱" in raw


def test_history_is_newest_first_with_stable_pages(uow_factory, add_image):
    made = [add_image(guild_id=1000) for _ in range(7)]
    newest_first = [image.public_id for image in reversed(made)]

    with uow_factory() as uow:
        first = uow.images.history(ALICE_IN_A, limit=3)
        second = uow.images.history(ALICE_IN_A, limit=3, before=first[-1].public_id)
        third = uow.images.history(ALICE_IN_A, limit=3, before=second[-1].public_id)
        by_offset = uow.images.history(ALICE_IN_A, limit=3, offset=3)
    assert [i.public_id for i in first + second + third] == newest_first
    assert len(third) == 1
    assert by_offset == second


def test_history_breaks_ties_in_time_by_insertion_order(uow_factory, add_image):
    moment = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
    same = [add_image(created_at=moment) for _ in range(4)]
    with uow_factory() as uow:
        page = uow.images.history(OPERATOR, limit=2)
        rest = uow.images.history(OPERATOR, limit=10, before=page[-1].public_id)
    assert [i.public_id for i in page + rest] == [i.public_id for i in reversed(same)]


def test_history_can_narrow_to_one_author_and_skips_deleted(uow_factory, add_image):
    mine = add_image(owner_id=111, guild_id=1000)
    add_image(owner_id=222, guild_id=1000)
    gone = add_image(owner_id=111, guild_id=1000)
    with uow_factory() as uow:
        uow.images.soft_delete(gone.public_id, ALICE_IN_A)
        uow.commit()
    with uow_factory() as uow:
        assert [i.public_id for i in uow.images.history(ALICE_IN_A, user_id=111)] == [mine.public_id]
        assert len(uow.images.history(ALICE_IN_A)) == 2


@pytest.mark.parametrize("limit", [0, -1, 101])
def test_history_refuses_a_bad_limit_instead_of_clamping(uow_factory, limit):
    with uow_factory() as uow, pytest.raises(InvalidValue) as caught:
        uow.images.history(OPERATOR, limit=limit)
    assert caught.value.code == "storage.invalid_value"
    assert "1 to 100" in str(caught.value)


def test_lineage_follows_parents_nearest_first(uow_factory, add_image):
    original = add_image(guild_id=1000)
    tweak = add_image(guild_id=1000, parent_public_id=original.public_id, relation="tweak")
    upscale = add_image(guild_id=1000, parent_public_id=tweak.public_id, relation=ImageRelation.UPSCALE)
    with uow_factory() as uow:
        chain = uow.images.lineage(upscale.public_id, ALICE_IN_A)
        assert uow.images.lineage(original.public_id, ALICE_IN_A) == [original]
    assert [i.public_id for i in chain] == [upscale.public_id, tweak.public_id, original.public_id]
    assert [i.relation for i in chain] == [ImageRelation.UPSCALE, ImageRelation.TWEAK, None]
    assert chain[1].parent_public_id == original.public_id


def test_lineage_stops_at_an_ancestor_the_scope_may_not_see(uow_factory, add_image):
    # The operator may branch from any image; a user in guild A must not learn about the DM one.
    private = add_image(owner_id=999, guild_id=None)
    child = add_image(guild_id=1000, parent_public_id=private.public_id, relation="vary")
    with uow_factory() as uow:
        assert [i.public_id for i in uow.images.lineage(child.public_id, ALICE_IN_A)] == [child.public_id]
        assert len(uow.images.lineage(child.public_id, OPERATOR)) == 2


def test_children_are_direct_descendants_oldest_first(uow_factory, add_image):
    parent = add_image(guild_id=1000)
    first = add_image(guild_id=1000, parent_public_id=parent.public_id, relation="reroll")
    second = add_image(guild_id=1000, parent_public_id=parent.public_id, relation="vary")
    add_image(guild_id=1000, parent_public_id=first.public_id, relation="upscale")  # grandchild
    with uow_factory() as uow:
        children = uow.images.children(parent.public_id, ALICE_IN_A)
    assert [c.public_id for c in children] == [first.public_id, second.public_id]


def test_deleting_a_parent_row_keeps_the_child(engine, uow_factory, add_image):
    parent = add_image()
    child = add_image(parent_public_id=parent.public_id, relation="reroll")
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM images WHERE public_id = :p"), {"p": parent.public_id})
    read = _get(uow_factory, child.public_id)
    assert read.parent_public_id is None and read.relation is ImageRelation.REROLL


@pytest.mark.parametrize(
    ("scope", "can_manage", "outcome"),
    [
        (Scope(user_id=111, guild_id=1000), False, "deleted"),  # the owner
        (Scope(user_id=222, guild_id=1000), False, PermissionDenied),  # sees it, may not delete
        (Scope(user_id=222, guild_id=1000), True, "deleted"),  # a server manager
        (Scope(user_id=111, guild_id=2000), True, NotFound),  # managers of another server see nothing
        (Scope(user_id=111, guild_id=None), False, NotFound),  # the owner, from DMs
        (Scope.local_operator(), False, "deleted"),
    ],
)
def test_soft_delete_permissions(uow_factory, add_image, scope, can_manage, outcome):
    image = add_image(owner_id=111, guild_id=1000)
    with uow_factory() as uow:
        if outcome == "deleted":
            record = uow.images.soft_delete(image.public_id, scope, can_manage=can_manage)
            assert record.deleted and record.deleted_at > image.created_at
            uow.commit()
        else:
            with pytest.raises(outcome):
                uow.images.soft_delete(image.public_id, scope, can_manage=can_manage)
    deleted = _get(uow_factory, image.public_id, OPERATOR, include_deleted=True).deleted
    assert deleted == (outcome == "deleted")


def test_a_deleted_image_is_gone_for_users_but_not_for_the_operator(uow_factory, add_image):
    image = add_image(owner_id=111, guild_id=1000)
    with uow_factory() as uow:
        uow.images.soft_delete(image.public_id, ALICE_IN_A)
        uow.commit()
    with pytest.raises(NotFound):
        _get(uow_factory, image.public_id, ALICE_IN_A)
    with pytest.raises(NotFound):  # and cannot be deleted twice
        with uow_factory() as uow:
            uow.images.soft_delete(image.public_id, ALICE_IN_A)
    with pytest.raises(NotFound):  # users cannot ask for deleted ones
        _get(uow_factory, image.public_id, ALICE_IN_A, include_deleted=True)
    assert _get(uow_factory, image.public_id, OPERATOR, include_deleted=True).deleted


def test_message_ids_find_the_images_of_a_message(uow_factory, add_image):
    batch = [add_image(guild_id=1000, batch_index=i) for i in (1, 0)]
    with uow_factory() as uow:
        for image in batch:
            uow.images.attach_message(image.public_id, ALICE_IN_A, channel_id=55, message_id=2**62 + 1)
        uow.commit()
    with uow_factory() as uow:
        found = uow.images.by_message(2**62 + 1, ALICE_IN_A)
        assert uow.images.by_message(2**62 + 1, Scope(user_id=111, guild_id=2000)) == []
    assert [i.batch_index for i in found] == [0, 1]
    assert {i.channel_id for i in found} == {55}


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"relation": "remix", "parent_public_id": "abcdefgh"}, "relation"),
        ({"relation": "tweak"}, "relation"),
        ({"parent_public_id": "abcdefgh"}, "relation"),
        ({"batch_index": -1}, "batch_index"),
    ],
)
def test_new_image_checks_itself(make_new_image, overrides, name):
    with pytest.raises(InvalidValue) as caught:
        make_new_image(**overrides)
    assert caught.value.name == name


def test_repository_changes_need_the_unit_of_work_to_commit(uow_factory, make_new_image):
    with uow_factory() as uow:
        uow.images.add(make_new_image(), public_id="zzzzzzzz", stored=StoredFile("a.png", "0" * 64, 1))
        # no commit
    with pytest.raises(NotFound):
        _get(uow_factory, "zzzzzzzz")


def test_records_are_plain_frozen_values(add_image):
    image = add_image()
    with pytest.raises(AttributeError):
        image.prompt = "changed"  # type: ignore[misc]
    assert type(image).__module__ == "storage.records"
