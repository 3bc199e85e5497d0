"""Isolation: an image made in a server is seen from that server only; a DM image by its owner
only; the local operator sees all.  Forbidden looks exactly like missing."""

from __future__ import annotations

import pickle

import pytest

from storage.errors import NotFound
from storage.records import JobKind, NewJob, Scope

ALICE, BOB = 111, 222
GUILD_A, GUILD_B = 1000, 2000

# (made by, made in guild) x (asking scope) -> visible?
MATRIX = [
    # made in guild A by Alice
    (ALICE, GUILD_A, Scope(ALICE, GUILD_A), True),
    (ALICE, GUILD_A, Scope(BOB, GUILD_A), True),  # everyone in the server
    (ALICE, GUILD_A, Scope(ALICE, GUILD_B), False),  # not from another server, even the owner
    (ALICE, GUILD_A, Scope(ALICE, None), False),  # not from DMs, even the owner
    (ALICE, GUILD_A, Scope(BOB, GUILD_B), False),
    (ALICE, GUILD_A, Scope.local_operator(), True),
    # made in Alice's DMs
    (ALICE, None, Scope(ALICE, None), True),
    (ALICE, None, Scope(BOB, None), False),
    (ALICE, None, Scope(ALICE, GUILD_A), False),  # her DM images are not shown in a server
    (ALICE, None, Scope(BOB, GUILD_A), False),
    (ALICE, None, Scope.local_operator(), True),
    # made by the local operator at the command line
    (0, None, Scope(0, None), True),
    (0, None, Scope(ALICE, None), False),
    (0, None, Scope(ALICE, GUILD_A), False),
]


@pytest.mark.parametrize(("owner", "guild", "scope", "visible"), MATRIX)
def test_image_visibility(uow_factory, add_image, owner, guild, scope, visible):
    image = add_image(owner_id=owner, guild_id=guild)
    assert scope.can_see(owner, guild) is visible
    with uow_factory() as uow:
        if visible:
            assert uow.images.get(image.public_id, scope) == image
        else:
            with pytest.raises(NotFound):
                uow.images.get(image.public_id, scope)
            for call in (uow.images.lineage, uow.images.children):
                with pytest.raises(NotFound):
                    call(image.public_id, scope)
            with pytest.raises(NotFound):
                uow.images.history(scope, before=image.public_id)
        listed = [i.public_id for i in uow.images.history(scope, limit=100)]
    assert (image.public_id in listed) is visible


@pytest.mark.parametrize(("owner", "guild", "scope", "visible"), MATRIX)
def test_job_visibility_follows_the_same_rule(uow_factory, owner, guild, scope, visible):
    with uow_factory() as uow:
        job = uow.jobs.add(NewJob(kind=JobKind.GENERATE, owner_id=owner, guild_id=guild, request={}))
        uow.commit()
    with uow_factory() as uow:
        if visible:
            assert uow.jobs.get(job.public_id, scope) == job
        else:
            with pytest.raises(NotFound):
                uow.jobs.get(job.public_id, scope)


def test_history_lists_only_what_the_scope_may_see(uow_factory, add_image):
    a = {
        add_image(owner_id=ALICE, guild_id=GUILD_A).public_id,
        add_image(owner_id=BOB, guild_id=GUILD_A).public_id,
    }
    b = {add_image(owner_id=ALICE, guild_id=GUILD_B).public_id}
    alice_dm = {add_image(owner_id=ALICE, guild_id=None).public_id}
    bob_dm = {add_image(owner_id=BOB, guild_id=None).public_id}
    with uow_factory() as uow:

        def ids(scope, **kw):
            return {i.public_id for i in uow.images.history(scope, limit=100, **kw)}

        assert ids(Scope(BOB, GUILD_A)) == a
        assert ids(Scope(BOB, GUILD_B)) == b
        assert ids(Scope(ALICE, None)) == alice_dm
        assert ids(Scope(BOB, None)) == bob_dm
        assert ids(Scope(BOB, GUILD_A), user_id=ALICE) == a - ids(Scope(BOB, GUILD_A), user_id=BOB)
        assert ids(Scope.local_operator()) == a | b | alice_dm | bob_dm


def test_forbidden_and_missing_raise_the_same_error(uow_factory, add_image):
    other_guild = add_image(owner_id=ALICE, guild_id=GUILD_A)
    intruder = Scope(BOB, GUILD_B)
    errors = []
    for public_id in (other_guild.public_id, "nosuchid"):
        with uow_factory() as uow, pytest.raises(NotFound) as caught:
            uow.images.get(public_id, intruder)
        errors.append(caught.value)
    forbidden, missing = errors
    assert type(forbidden) is type(missing)
    assert forbidden.code == missing.code == "storage.not_found"
    assert str(forbidden).replace(other_guild.public_id, "X") == str(missing).replace("nosuchid", "X")
    assert forbidden.params.keys() == missing.params.keys()
    restored = pickle.loads(pickle.dumps(forbidden))
    assert (type(restored), str(restored), restored.ident) == (NotFound, str(forbidden), forbidden.ident)
