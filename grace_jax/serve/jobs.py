"""The job queue: one model worker thread consuming a bounded queue.Queue.

One thread runs the model, so the predictor is loaded once and its compiled shapes are reused by every
request, and two requests never compete for the accelerator's memory. Admission is counted before an
upload's body is read: at most `capacity` jobs are uploading, waiting or running at once, and the next
request is refused with HTTP 503 instead of filling the disk with bodies nobody will process soon.
"""

from __future__ import annotations

import dataclasses
import queue
import secrets
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from grace_jax.serve.uploads import UploadError, Workspace

# A job's files (the uploaded video, served back to its page) outlive the job by at most this long when
# the page never says it has them; a finished job's results are forgotten after `FORGET_SECONDS`.
KEEP_SECONDS = 300.0
FORGET_SECONDS = 3600.0
MAX_FINISHED = 64


@dataclasses.dataclass
class Job:
    """One request: its display name, private folder and, once finished, its outputs or error."""

    name: str
    workspace: Workspace
    video: str = ""
    # The page's jobs keep their video until the page has fetched it; API jobs delete it at once.
    view: bool = False
    id: str = dataclasses.field(default_factory=lambda: secrets.token_urlsafe(12))
    state: str = "uploading"  # uploading, queued, running, done, failed
    stage: str = "waiting"
    fraction: float = 0.0
    outputs: Any = None
    error: str | None = None
    status: int = 200
    finished_at: float | None = None
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    files_removed: bool = False

    def remove_files(self) -> None:
        self.workspace.remove()
        self.files_removed = True


class Jobs:
    """Admission, the queue, the worker thread and the finished jobs' bookkeeping.

    `work(job, progress)` runs one job on the worker thread and returns its outputs; an `UploadError`
    it raises fails the job with that status and message, any other exception with 500.
    """

    def __init__(self, work: Callable[[Job, Callable[[str, float], None]], Any], capacity: int):
        self._work = work
        self._capacity = capacity
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=capacity)
        self._lock = threading.Lock()
        self._admitted = 0
        self._waiting: list[Job] = []
        self._jobs: dict[str, Job] = {}
        self._worker = threading.Thread(target=self._run, name="grace-serve-model", daemon=True)
        self._worker.start()

    def admit(self, name: str, workspace_root: str | None = None, view: bool = False) -> Job:
        """A new job holding one of the `capacity` places, or a 503 when none is free."""
        with self._lock:
            if self._admitted >= self._capacity:
                raise UploadError(
                    503,
                    f"the server is busy ({self._capacity} videos are already uploading, waiting or being "
                    "analysed): try again in a minute",
                )
            self._admitted += 1
        job = Job(name=name, workspace=Workspace(workspace_root), view=view)
        with self._lock:
            self._jobs[job.id] = job
        return job

    def abandon(self, job: Job, error: UploadError) -> None:
        """An admitted job whose upload was refused: its place is freed and its files deleted."""
        job.error, job.status, job.state = str(error), error.status, "failed"
        self._finish(job)

    def submit(self, job: Job) -> None:
        with self._lock:
            job.state = "queued"
            self._waiting.append(job)
        self._queue.put_nowait(job)  # admission keeps the queue from ever being full here

    def get(self, job_id: str) -> Job | None:
        self._sweep()
        with self._lock:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int | None:
        """1 for the next job to run, 2 for the one after it, ...; None when not waiting."""
        with self._lock:
            return self._waiting.index(job) + 1 if job in self._waiting else None

    def release(self, job: Job) -> None:
        """The page has the video: its files go now."""
        if job.finished_at is not None:
            job.remove_files()

    def close(self) -> None:
        self._queue.put(None)
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.remove_files()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                self._waiting.remove(job)
                job.state = "running"

            def progress(stage: str, fraction: float, job=job) -> None:
                job.stage, job.fraction = str(stage), min(max(float(fraction), 0.0), 1.0)

            try:
                job.outputs = self._work(job, progress)
                job.state = "done"
            except UploadError as e:
                job.error, job.status, job.state = str(e), e.status, "failed"
            except Exception as e:  # a bug: the server keeps serving, the traceback goes to its log
                traceback.print_exc()
                job.error, job.status, job.state = f"the analysis failed: {type(e).__name__}: {e}", 500, "failed"
            self._finish(job)

    def _finish(self, job: Job) -> None:
        job.finished_at = time.monotonic()
        if not job.view or job.state == "failed":
            job.remove_files()
        with self._lock:
            self._admitted -= 1
        job.done.set()

    def _sweep(self) -> None:
        now = time.monotonic()
        with self._lock:
            finished = sorted(
                (j for j in self._jobs.values() if j.finished_at is not None), key=lambda j: j.finished_at
            )
            for k, job in enumerate(finished):
                age = now - job.finished_at
                if age > KEEP_SECONDS and not job.files_removed:
                    job.remove_files()
                if age > FORGET_SECONDS or k < len(finished) - MAX_FINISHED:
                    job.remove_files()
                    del self._jobs[job.id]
