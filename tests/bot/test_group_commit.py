"""GroupCommit: what queues up during a write is written together, urgent items first."""

from __future__ import annotations

import threading

import pytest

from bot.group_commit import GroupCommit


def test_items_arriving_during_a_write_are_written_together_in_order():
    gate = threading.Event()
    calls: list[list[int]] = []

    def write(items):
        calls.append(list(items))
        if len(calls) == 1:
            gate.wait(5)
        return [item * 10 for item in items]

    writer = GroupCommit(write)
    try:
        first = writer.submit(1)
        while not calls:  # the first write has started and waits at the gate
            threading.Event().wait(0.001)
        rest = [writer.submit(n) for n in (2, 3, 4)]
        gate.set()
        assert first.result(5) == 10 and [f.result(5) for f in rest] == [20, 30, 40]
        assert calls == [[1], [2, 3, 4]]
    finally:
        writer.close()


def test_urgent_items_are_written_before_the_others_of_the_same_batch():
    gate = threading.Event()
    calls: list[list[str]] = []

    def write(items):
        calls.append(list(items))
        if len(calls) == 1:
            gate.wait(5)
        return list(items)

    writer = GroupCommit(write)
    try:
        writer.submit("start")
        while not calls:
            threading.Event().wait(0.001)
        later = writer.submit("record", urgent=False)
        job = writer.submit("job")
        gate.set()
        assert job.result(5) == "job" and later.result(5) == "record"
        assert calls == [["start"], ["job"], ["record"]]
    finally:
        writer.close()


def test_a_failed_write_fails_its_batch_and_the_writer_goes_on():
    def write(items):
        if "bad" in items:
            raise OSError("disk full")
        return [ValueError(item) if item == "refused" else item for item in items]

    writer = GroupCommit(write)
    try:
        with pytest.raises(OSError):
            writer.submit("bad").result(5)
        refused, fine = writer.submit("refused"), writer.submit("fine")
        with pytest.raises(ValueError):
            refused.result(5)
        assert fine.result(5) == "fine"
    finally:
        writer.close()
    with pytest.raises(RuntimeError):
        writer.submit("late").result(1)
