"""The dynamic batcher on its own, with a fake model: grouping by settings, limits, failures, cancellation."""

from __future__ import annotations

import threading

import pytest

from salmonn.serve.batcher import Batcher, Job, QueueFull


class FakeRun:
    """Records the batches it is given; blocks while `gate` is closed; fails jobs whose payload is 'boom'."""

    def __init__(self):
        self.batches: list[list] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, jobs):
        self.entered.set()
        self.gate.wait(10)
        self.batches.append([(job.key, job.payload) for job in jobs])
        if any(job.payload == "boom" for job in jobs):
            raise ValueError("boom")
        return [f"answer to {job.payload}" for job in jobs]


def block_worker(batcher: Batcher, run: FakeRun) -> Job:
    """Occupy the worker with one job so that the next submissions queue up."""
    run.gate.clear()
    run.entered.clear()
    job = Job(key="blocker", payload="blocker")
    batcher.submit(job)
    assert run.entered.wait(5)
    return job


def test_batches_group_by_key_and_respect_the_size_limit():
    run = FakeRun()
    batcher = Batcher(run, max_batch_size=3, max_wait_ms=50, max_queue=100).start()
    try:
        block_worker(batcher, run)
        jobs = [Job(key="AB"[i % 2], payload=i) for i in range(10)]
        futures = [batcher.submit(job) for job in jobs]
        run.gate.set()
        assert [f.result(10) for f in futures] == [f"answer to {i}" for i in range(10)]
    finally:
        batcher.stop()
    batches = run.batches[1:]
    for batch in batches:
        assert len({key for key, _ in batch}) == 1  # never mixes settings
        assert len(batch) <= 3
    assert sorted(p for batch in batches for _, p in batch) == list(range(10))
    assert [len(b) for b in batches] == [3, 3, 2, 2]  # A: 0 2 4 | B: 1 3 5 | A: 6 8 | B: 7 9 (oldest first)
    assert [p for _, p in batches[0]] == [0, 2, 4]


def test_waits_for_companions_until_the_batch_is_full():
    """With a wait far longer than any test, the first job waits for a companion, and the batch runs as soon as
    it is full (behaviour, not timing)."""
    run = FakeRun()
    batcher = Batcher(run, max_batch_size=2, max_wait_ms=600_000, max_queue=100).start()
    try:
        first = batcher.submit(Job(key="k", payload=1))
        assert not run.entered.wait(0.2)  # nothing runs alone while it may still gain a companion
        second = batcher.submit(Job(key="k", payload=2))
        assert first.result(10) and second.result(10)
        assert [[p for _, p in b] for b in run.batches] == [[1, 2]]
    finally:
        batcher.stop()


def test_a_job_runs_alone_once_its_wait_is_over():
    run = FakeRun()
    batcher = Batcher(run, max_batch_size=4, max_wait_ms=0, max_queue=100).start()
    try:
        assert batcher.submit(Job(key="k", payload=1)).result(10) == "answer to 1"
        assert [[p for _, p in b] for b in run.batches] == [[1]]
    finally:
        batcher.stop()


def test_multi_row_jobs_and_alone_jobs():
    run = FakeRun()
    batcher = Batcher(run, max_batch_size=4, max_wait_ms=10, max_queue=100).start()
    try:
        block_worker(batcher, run)
        big = batcher.submit(Job(key="k", payload="big", rows=6))  # more rows than a batch: runs by itself
        alone = batcher.submit(Job(key="k", payload="stream", alone=True))
        small = [batcher.submit(Job(key="k", payload=i, rows=2)) for i in range(3)]
        run.gate.set()
        for f in (big, alone, *small):
            f.result(10)
    finally:
        batcher.stop()
    assert [[p for _, p in b] for b in run.batches[1:]] == [["big"], ["stream"], [0, 1], [2]]


def test_queue_bound():
    run = FakeRun()
    batcher = Batcher(run, max_batch_size=1, max_wait_ms=0, max_queue=2).start()
    try:
        block_worker(batcher, run)
        batcher.submit(Job(key="k", payload=1))
        batcher.submit(Job(key="k", payload=2))
        with pytest.raises(QueueFull):
            batcher.submit(Job(key="k", payload=3))
        assert batcher.stats["rejected"] == 1
    finally:
        run.gate.set()
        batcher.stop()


def test_a_failing_request_does_not_fail_its_batch():
    run = FakeRun()
    batcher = Batcher(run, max_batch_size=8, max_wait_ms=10, max_queue=100).start()
    try:
        block_worker(batcher, run)
        futures = [batcher.submit(Job(key="k", payload=p)) for p in (1, "boom", 3)]
        run.gate.set()
        assert futures[0].result(10) == "answer to 1" and futures[2].result(10) == "answer to 3"
        with pytest.raises(ValueError, match="boom"):
            futures[1].result(10)
        # and the worker keeps going
        assert batcher.submit(Job(key="k", payload=4)).result(10) == "answer to 4"
    finally:
        batcher.stop()


def test_cancelled_jobs_are_skipped():
    run = FakeRun()
    batcher = Batcher(run, max_batch_size=8, max_wait_ms=10, max_queue=100).start()
    try:
        block_worker(batcher, run)
        gone, kept = Job(key="k", payload="gone"), Job(key="k", payload="kept")
        batcher.submit(gone)
        batcher.submit(kept)
        batcher.cancel(gone)
        assert batcher.queued == 1
        run.gate.set()
        assert kept.future.result(10) == "answer to kept"
        assert gone.future.cancelled()
        assert all(p != "gone" for b in run.batches for _, p in b)
    finally:
        batcher.stop()
