"""UploadRepository: pictures sent to start from — scoped like images, one per picture per place,
ids that never collide with an image's."""

from __future__ import annotations

import pytest

from storage.errors import IdsExhausted, NotFound
from storage.records import Scope
from storage.uploads import UploadRepository

A, A_BOB, B, DM = (Scope(user_id=1, guild_id=10), Scope(user_id=2, guild_id=10), Scope(user_id=3, guild_id=20),
                   Scope(user_id=1))


def add(uow, scope, public_id, sha="a" * 64):
    return uow.uploads.add(scope, public_id=public_id, sha256=sha, width=96, height=64, size=10,
                           file_path=f"{public_id}.png", original_name="p.png")


def test_uploads_are_seen_where_images_would_be_and_found_by_picture(uow_factory):
    with uow_factory() as uow:
        mine = add(uow, A, "k3x9fq2a")
        private = add(uow, DM, "m7pq2hzt")
        uow.commit()
    with uow_factory() as uow:
        assert uow.uploads.get("k3x9fq2a", A_BOB) == mine  # the same server
        for scope in (B, DM):
            with pytest.raises(NotFound):
                uow.uploads.get("k3x9fq2a", scope)
        assert uow.uploads.get("m7pq2hzt", DM) == private
        with pytest.raises(NotFound):
            uow.uploads.get("m7pq2hzt", A)
        assert uow.uploads.find(A_BOB, "a" * 64) == mine and uow.uploads.find(B, "a" * 64) is None
        assert uow.uploads.file_paths() == {"k3x9fq2a.png": "k3x9fq2a", "m7pq2hzt.png": "m7pq2hzt"}


def test_free_ids_avoid_images_and_uploads(uow_factory, add_image):
    image = add_image()
    with uow_factory() as uow:
        add(uow, A, "k3x9fq2a")
        uow.commit()
    candidates = iter([image.public_id, "k3x9fq2a", "p4r5s6t7"])
    with uow_factory() as uow:
        repo = UploadRepository(uow._session, new_id=lambda: next(candidates))
        assert repo.free_id() == "p4r5s6t7"
        with pytest.raises(IdsExhausted):
            UploadRepository(uow._session, new_id=lambda: "k3x9fq2a").free_id(attempts=3)
