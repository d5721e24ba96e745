"""Forward passes for the server: a few dedicated threads that also batch concurrent requests.

Why not run the forward pass in the request thread: torch's intra-op parallelism (OpenMP) keeps a
team of helper threads *per calling thread*. Requests arrive on whichever of waitress' threads is
free, so every forward pass woke a different, cold team: measured on 2 cores with MobileNetV2,
the server spent 18.7 ms per image where the same call in one thread took 11.1 ms. Here the
forward passes always run on the same ``workers`` threads, whose teams stay warm.

Why batch: under load, requests wait for a free worker anyway; a worker takes every request
already waiting for the same model (up to ``max_batch``) and runs them as one batch, which costs
far less per image than one pass each. Nothing waits on purpose for a batch to fill, so a lone
request is a batch of 1 with no added delay. A network in eval mode treats each image of a batch
independently, so an answer does not depend on what it was batched with (up to float rounding).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForwardResult:
    probabilities: np.ndarray  # this image's row
    queue_ms: float  # from submit() to the start of its batch's forward pass
    forward_ms: float  # the whole batch's forward pass
    batch_size: int


@dataclass
class _Job:
    key: Any
    run: Callable[[Any], np.ndarray]  # forward of a batch: the model's predict_tensor
    batch: Any  # (1, 3, H, W) tensor
    submitted: float = field(default_factory=time.perf_counter)
    future: Future = field(default_factory=Future)


_STOP = object()


class WorkersClosedError(RuntimeError):
    """A forward pass was asked for after :meth:`InferenceWorkers.close` (the server is stopping)."""


class InferenceWorkers:
    """``workers`` threads running forward passes, each batching up to ``max_batch`` jobs that share a key."""

    def __init__(self, workers: int = 1, max_batch: int = 8, name: str = "inference") -> None:
        if workers < 1 or max_batch < 1:
            raise ValueError("workers and max_batch must be >= 1")
        self.workers = workers
        self.max_batch = max_batch
        self._queue: queue.Queue = queue.Queue()
        self._closing = threading.Lock()  # makes "closed" and "queued" one step, so no job is queued after the stop markers
        self._closed = False
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, key: Any, run: Callable[[Any], np.ndarray], batch: Any) -> ForwardResult:
        """Run ``run`` on ``batch`` (one image), possibly together with other waiting jobs of ``key``."""
        job = _Job(key, run, batch)
        with self._closing:
            if self._closed:
                raise WorkersClosedError("the server is stopping")
            self._queue.put(job)
        return job.future.result()

    def close(self, timeout: float = 30.0) -> None:
        """Finish the batches being computed, fail the jobs still waiting, and join the threads.

        Why join: torch runs a forward pass with the GIL released; a daemon thread still inside one
        when the interpreter finalizes is killed with a forced unwind through torch's C++ frames,
        and the process aborts ("terminate called without an active exception") instead of exiting.
        """
        with self._closing:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._queue.put(_STOP)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        still_running = [t.name for t in self._threads if t.is_alive()]
        if still_running:
            log.warning("inference threads still running after %.0f s: %s", timeout, ", ".join(still_running))
        while True:  # jobs queued behind the stop markers: nobody will run them
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                job.future.set_exception(WorkersClosedError("the server is stopping"))

    def _loop(self) -> None:
        held: list[_Job] = []  # jobs taken from the queue for another model, served next
        while True:
            if not held:
                job = self._queue.get()
                if job is _STOP:
                    return
                held.append(job)
            first = held[0]
            # Leave the other workers their share of what is waiting: one worker taking the whole
            # queue as a batch would run it on its cores while the other workers' cores idle.
            waiting = self._queue.qsize() + len(held)
            limit = min(self.max_batch, max(1, -(-waiting // self.workers)))
            jobs = [j for j in held if j.key == first.key][:limit]
            held = [j for j in held if all(j is not k for k in jobs)]
            while len(jobs) < limit:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    self._queue.put(_STOP)  # let the loop finish this batch first
                    break
                (jobs if job.key == first.key else held).append(job)
            start = time.perf_counter()
            try:
                batch = jobs[0].batch if len(jobs) == 1 else torch.cat([j.batch for j in jobs])
                probs = first.run(batch)
            except BaseException as err:  # noqa: BLE001 - handed to every waiting request
                for j in jobs:
                    j.future.set_exception(err)
                continue
            forward_ms = (time.perf_counter() - start) * 1000
            for i, j in enumerate(jobs):
                j.future.set_result(ForwardResult(probs[i], (start - j.submitted) * 1000, forward_ms, len(jobs)))
