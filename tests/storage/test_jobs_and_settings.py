"""JobRepository (what the queue will build on) and SettingsRepository."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from storage.errors import InvalidValue, NotFound, StaleState
from storage.records import JobKind, JobStatus, NewJob, Scope
from storage.repositories import UNSET

OPERATOR = Scope.local_operator()


def _job(uow_factory, **overrides):
    values = {"kind": "generate", "owner_id": 1, "request": {"prompt": "山水"}}
    values.update(overrides)
    with uow_factory() as uow:
        job = uow.jobs.add(NewJob(**values))
        uow.commit()
    return job


def test_a_new_job_is_queued_with_defaults(uow_factory):
    job = _job(uow_factory, guild_id=5, reply_ref={"interaction": "tok", "message": 2**63 - 1})
    assert (job.status, job.kind, job.attempts, job.max_attempts, job.progress) == (
        JobStatus.QUEUED,
        JobKind.GENERATE,
        0,
        3,
        0.0,
    )
    assert job.result_image_ids == [] and job.error is None and job.started_at is None
    with uow_factory() as uow:
        assert uow.jobs.get(job.public_id, OPERATOR) == job


def test_a_job_takes_the_id_its_caller_showed_unless_it_is_taken_or_invalid(uow_factory):
    with uow_factory() as uow:
        first = uow.jobs.add(NewJob(kind="generate", owner_id=1, request={}), public_id="k3x9fq2a")
        taken = uow.jobs.add(NewJob(kind="generate", owner_id=1, request={}), public_id="k3x9fq2a")
        invalid = uow.jobs.add(NewJob(kind="generate", owner_id=1, request={}), public_id="../x")
        uow.commit()
    assert first.public_id == "k3x9fq2a"
    assert taken.public_id != "k3x9fq2a" and len(taken.public_id) == 8
    assert invalid.public_id != "../x" and len(invalid.public_id) == 8


def test_update_changes_fields_and_converts_them(uow_factory):
    job = _job(uow_factory)
    started = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    with uow_factory() as uow:
        uow.jobs.update(
            job.public_id,
            status="running",
            started_at=started,
            attempts=1,
            progress=0.5,
            heartbeat_at=started,
        )
        uow.jobs.update(job.public_id, result_image_ids=["abcdefgh"], gpu_seconds=1.25, error="显存不足")
        uow.commit()
    with uow_factory() as uow:
        read = uow.jobs.get(job.public_id, OPERATOR)
    assert read.status is JobStatus.RUNNING and read.started_at == started
    assert (read.attempts, read.progress, read.result_image_ids, read.gpu_seconds, read.error) == (
        1,
        0.5,
        ["abcdefgh"],
        1.25,
        "显存不足",
    )


def test_conditional_update_lets_only_one_claim_win(uow_factory):
    job = _job(uow_factory)
    with uow_factory() as uow:
        claimed = uow.jobs.update(job.public_id, expected_status=JobStatus.QUEUED, status=JobStatus.RUNNING)
        uow.commit()
    assert claimed.status is JobStatus.RUNNING
    with uow_factory() as uow, pytest.raises(StaleState) as caught:
        uow.jobs.update(job.public_id, expected_status="queued", status="running")
    assert (caught.value.expected, caught.value.actual) == ("queued", "running")
    with uow_factory() as uow:  # several allowed states, and a pure check without changes
        uow.jobs.update(job.public_id, expected_status=["queued", "running"])
        with pytest.raises(StaleState):
            uow.jobs.update(job.public_id, expected_status="done")


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"status": "paused"}, "status"),
        ({"owner_id": 5}, "job field"),
        ({"expected_status": "later"}, "expected_status"),
    ],
)
def test_update_refuses_unknown_fields_and_states(uow_factory, changes, name):
    job = _job(uow_factory)
    with uow_factory() as uow, pytest.raises(InvalidValue) as caught:
        uow.jobs.update(job.public_id, **changes)
    assert caught.value.name == name


def test_update_of_a_missing_job(uow_factory):
    with uow_factory() as uow, pytest.raises(NotFound):
        uow.jobs.update("nosuchjb", progress=1.0)


def test_new_job_checks_itself():
    with pytest.raises(InvalidValue):
        NewJob(kind="paint", owner_id=1, request={})
    with pytest.raises(InvalidValue):
        NewJob(kind="train", owner_id=1, request={}, max_attempts=0)


def test_list_by_status_is_in_queue_order(uow_factory):
    low_old = _job(uow_factory, priority=0)
    high = _job(uow_factory, priority=5)
    low_new = _job(uow_factory, priority=0)
    running = _job(uow_factory)
    with uow_factory() as uow:
        uow.jobs.update(running.public_id, status="running")
        uow.commit()
    with uow_factory() as uow:
        queued = uow.jobs.list_by_status(JobStatus.QUEUED)
        both = uow.jobs.list_by_status("queued", "running", limit=2)
        with pytest.raises(InvalidValue):
            uow.jobs.list_by_status()
    assert [j.public_id for j in queued] == [high.public_id, low_old.public_id, low_new.public_id]
    assert len(both) == 2


def test_finished_since_lists_ended_jobs_with_a_reply_reference_oldest_first(uow_factory):
    ref = {"v": 1, "channel": 7}
    old, late, early = (_job(uow_factory, reply_ref=ref) for _ in range(3))
    no_ref = _job(uow_factory)
    still_running = _job(uow_factory, reply_ref=ref)
    when = {old.public_id: datetime(2025, 1, 1, tzinfo=UTC), early.public_id: datetime(2025, 1, 3, tzinfo=UTC),
            late.public_id: datetime(2025, 1, 4, tzinfo=UTC), no_ref.public_id: datetime(2025, 1, 4, tzinfo=UTC)}
    with uow_factory() as uow:
        for job_id, at in when.items():
            uow.jobs.update(job_id, status="failed" if job_id == late.public_id else "done", finished_at=at)
        uow.jobs.update(still_running.public_id, status="running")
        uow.commit()
    with uow_factory() as uow:
        found = uow.jobs.finished_since(datetime(2025, 1, 2, tzinfo=UTC))
        capped = uow.jobs.finished_since(datetime(2025, 1, 2, tzinfo=UTC), limit=1)
    assert [j.public_id for j in found] == [early.public_id, late.public_id]
    assert [j.status for j in found] == [JobStatus.DONE, JobStatus.FAILED]
    assert [j.public_id for j in capped] == [early.public_id]


def test_user_settings_round_trip(uow_factory):
    with uow_factory() as uow:
        fresh = uow.settings.get_user(2**62)
    assert (fresh.defaults, fresh.locale, fresh.updated_at) == ("", None, None)

    with uow_factory() as uow:
        uow.settings.set_user(
            2**62, defaults="--steps 30 --sampler 'DPM++ 2M Karras' --no 模糊", locale="zh-CN"
        )
        uow.commit()
    with uow_factory() as uow:
        uow.settings.set_user(2**62, defaults=UNSET, locale=None)  # clear the locale only
        uow.commit()
    with uow_factory() as uow:
        read = uow.settings.get_user(2**62)
    assert read.defaults == "--steps 30 --sampler 'DPM++ 2M Karras' --no 模糊"
    assert read.locale is None and read.updated_at is not None


def test_guild_settings_round_trip_and_stay_per_guild(uow_factory):
    with uow_factory() as uow:
        uow.settings.set_guild(
            1,
            defaults="--ar 3:2",
            allowed_models=["sdxl", "国风-v2"],
            limits={"max_images": 4, "max_steps": 50},
            channels={"nsfw_ok": [123]},
            safety={"blocked_words": ["血腥"]},
        )
        uow.commit()
    with uow_factory() as uow:
        uow.settings.set_guild(1, allowed_models=None)  # back to every model, the rest kept
        uow.commit()
    with uow_factory() as uow:
        one, two = uow.settings.get_guild(1), uow.settings.get_guild(2)
    assert one.defaults == "--ar 3:2" and one.allowed_models is None
    assert one.limits == {"max_images": 4, "max_steps": 50}
    assert one.channels == {"nsfw_ok": [123]} and one.safety == {"blocked_words": ["血腥"]}
    assert (two.defaults, two.allowed_models, two.limits, two.updated_at) == ("", None, {}, None)
