"""Dynamic batching on one model worker thread.

Requests become `Job`s. The worker takes the oldest pending job, waits up to `max_wait_ms` (from that job's
arrival) for more jobs with the *same key* (the same decoding settings and LoRA scale) until `max_batch_size`
rows are gathered, and hands them to `run` in one call. Jobs with other keys wait for a later batch, so one
generate() call never mixes settings. A job marked `alone` (a token stream) always runs on its own. The queue of
pending jobs is bounded: `submit` raises `QueueFull` beyond `max_queue`. `drain` (at shutdown) fails every job
that has not started with `ShuttingDown` and refuses new ones, so only the running batch is waited for, and for
at most the drain timeout: then its callers get `ShuttingDown` too and the worker thread is left behind.

The model is only ever touched from the worker thread; callers wait on a `concurrent.futures.Future`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import logging
import math
import threading
import time
from typing import Any, Callable, Hashable

log = logging.getLogger("salmonn.serve")


class QueueFull(Exception):
    """The bounded queue of pending jobs is full."""


class ShuttingDown(Exception):
    """The server is draining: the job was not started and will not be."""


@dataclasses.dataclass(eq=False)
class Job:
    key: Hashable  # jobs are batched only with jobs of the same key
    payload: Any  # what `run` needs (rows, settings, ...)
    rows: int = 1  # how many rows of a generate() batch this job takes
    alone: bool = False  # never batch with others (streaming)
    on_start: Callable[[], None] | None = None  # called on the worker thread just before the job runs
    abandoned: bool = False  # its caller left while it ran: its failure is a drop, not an error
    future: concurrent.futures.Future = dataclasses.field(default_factory=concurrent.futures.Future)
    enqueued: float = dataclasses.field(default_factory=time.monotonic)
    id: int = dataclasses.field(default_factory=itertools.count().__next__)


class Batcher:
    """run(jobs) -> one result per job, in order; it is called on the worker thread with jobs of one key."""

    def __init__(self, run: Callable[[list[Job]], list[Any]], max_batch_size: int = 8, max_wait_ms: float = 10.0,
                 max_queue: int = 128):
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1 and max_wait_ms >= 0")
        self._run = run
        self.max_batch_size, self.max_wait, self.max_queue = max_batch_size, max_wait_ms / 1000.0, max_queue
        self._pending: list[Job] = []
        self._running: list[Job] = []  # the batch on the worker thread
        self._aborted = False  # a drain gave up on the running batch: stop() does not wait for the worker
        self._cv = threading.Condition()
        self._stopping = self._draining = False
        self._thread = threading.Thread(target=self._loop, name="salmonn-model-worker", daemon=True)
        self.busy = False
        self.stats = {"requests": 0, "batches": 0, "rows": 0, "max_batch_rows": 0, "rejected": 0, "errors": 0,
                      "dropped": 0, "busy_seconds": 0.0}  # dropped: their client left (before or while they ran)

    # ------------------------------------------------------------------ caller side (any thread)
    def start(self) -> "Batcher":
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        with self._cv:
            self._stopping = True
            for job in self._pending:
                job.future.cancel()
            self._pending.clear()
            self._cv.notify_all()
        if self._thread.is_alive() and not self._aborted:
            self._thread.join(timeout)

    def drain(self, timeout: float | None = None) -> None:
        """Fail the jobs that have not started with ShuttingDown and refuse new ones; the running batch gets
        `timeout` seconds (None: as long as it takes), then its callers get ShuttingDown as well."""
        with self._cv:
            self._draining = True
            for job in self._pending:
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(ShuttingDown("the server is shutting down"))
            self._pending.clear()
            running = list(self._running)
        if timeout is None or not running:
            return
        concurrent.futures.wait([job.future for job in running], timeout)
        late = [job for job in running if _settle(job, error=ShuttingDown(
            f"the server shut down before this request finished (drain timeout {timeout:g} s)"))]
        if late:
            self._aborted = True
            log.warning("shutdown: %d running request(s) did not finish within the drain timeout (%g s); answered "
                        "503", len(late), timeout)

    def submit(self, job: Job) -> concurrent.futures.Future:
        with self._cv:
            if self._stopping:
                raise RuntimeError("the batcher is stopped")
            if self._draining:
                raise ShuttingDown("the server is shutting down")
            if len(self._pending) >= self.max_queue:
                self.stats["rejected"] += 1
                raise QueueFull(f"{len(self._pending)} requests are waiting (max_queue={self.max_queue})")
            self._pending.append(job)
            self.stats["requests"] += 1
            self._cv.notify_all()
        return job.future

    def cancel(self, job: Job) -> None:
        """Drop a job that has not started (its caller gave up); a running job finishes, its result unused."""
        with self._cv:
            if job in self._pending:
                self._pending.remove(job)
                self.stats["dropped"] += 1
            elif job.future.running() and not job.abandoned:
                job.abandoned = True
                self.stats["dropped"] += 1
            job.future.cancel()

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def accepting(self) -> bool:
        """False when a new job would be refused (the queue is full, or the server is draining)."""
        return not self._draining and len(self._pending) < self.max_queue

    def retry_after(self) -> int:
        """Seconds until the queue has likely moved on: the batches ahead of a new job at the mean batch time."""
        mean = self.stats["busy_seconds"] / self.stats["batches"] if self.stats["batches"] else 1.0
        batches_ahead = math.ceil(len(self._pending) / self.max_batch_size) + 1
        return max(1, min(60, math.ceil(batches_ahead * mean)))

    # ------------------------------------------------------------------ worker thread
    def _next_batch(self) -> list[Job] | None:
        with self._cv:
            while True:
                while not self._pending and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    return None
                first = self._pending[0]
                group = [j for j in self._pending if j.key == first.key and not j.alone]
                if first.alone or sum(j.rows for j in group) >= self.max_batch_size:
                    break
                remaining = first.enqueued + self.max_wait - time.monotonic()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)  # more jobs may arrive, or `first` may be cancelled: look again
            if first.alone:
                batch = [first]
            else:
                batch, rows = [], 0
                for job in group:  # oldest first; a job bigger than the batch runs on its own
                    if batch and rows + job.rows > self.max_batch_size:
                        break
                    batch.append(job)
                    rows += job.rows
            for job in batch:
                self._pending.remove(job)
            self._running = [job for job in batch if job.future.set_running_or_notify_cancel()]
            return self._running

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if not batch:
                continue
            self.busy, started = True, time.monotonic()
            try:
                self._execute(batch)
            finally:
                self._running = []
                self.busy = False
                self.stats["busy_seconds"] += time.monotonic() - started

    def _execute(self, batch: list[Job]) -> None:
        rows = sum(job.rows for job in batch)
        self.stats["batches"] += 1
        self.stats["rows"] += rows
        self.stats["max_batch_rows"] = max(self.stats["max_batch_rows"], rows)
        try:
            for job in batch:
                if job.on_start is not None:
                    job.on_start()
            results = self._run(batch)
            if len(results) != len(batch):
                raise RuntimeError(f"run returned {len(results)} results for {len(batch)} jobs")
        except BaseException as err:  # noqa: BLE001 - the worker must survive anything a batch raises
            if len(batch) > 1:  # one bad request must not fail the others: answer each on its own
                log.warning("a batch of %d failed (%s); retrying its jobs one by one", len(batch), err)
                for job in batch:
                    self._execute_one(job)
                return
            self._failed(batch[0], err)
            return
        for job, result in zip(batch, results):
            _settle(job, result)

    def _execute_one(self, job: Job) -> None:
        try:
            result = self._run([job])[0]
        except BaseException as err:  # noqa: BLE001
            self._failed(job, err)
        else:
            _settle(job, result)

    def _failed(self, job: Job, err: BaseException) -> None:
        """A job that raised: an error, unless its caller had left (counted as dropped) or a drain answered it."""
        if not job.abandoned and not job.future.done():
            self.stats["errors"] += 1
        _settle(job, error=err)


def _settle(job: Job, result: Any = None, error: BaseException | None = None) -> bool:
    """Give a running job its result or error; False when it already has one (a drain answered it first)."""
    try:
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)
    except concurrent.futures.InvalidStateError:
        return False
    return True
