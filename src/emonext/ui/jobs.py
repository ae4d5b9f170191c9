"""Video jobs: one background worker, progress the page polls, cancellation, friendly errors.

Video analysis takes seconds to minutes on a CPU, far longer than a request should stay open, so
an upload becomes a job: the page gets its id at once and polls ``GET /api/jobs/{id}``. Jobs run
one at a time — a second video would only halve the speed of the first on a small machine — and
the rest wait in order.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "done", "error", "cancelled"]

#: Errors with a message meant for people (bad input, missing codec, disk full); anything else is
#: a bug, logged with its traceback and reported to the page without one.
USER_FACING_ERRORS: tuple[type[Exception], ...] = (ValueError, RuntimeError, OSError)


class JobCancelled(Exception):
    """Raised from the progress callback to stop a job the user (or a shutdown) cancelled."""


@dataclass
class Job:
    """One uploaded video and what became of it.

    Attributes:
        id: Random id (also the job's results folder name).
        filename: The user's file name, for messages.
        input_path: The uploaded file, alone in its folder (both are removed when the job ends).
        output_dir: Where the job's outputs go.
        status: ``queued``, ``running``, ``done``, ``error`` or ``cancelled``.
        progress: Fraction done, 0 to 1.
        message: What the page shows under the progress bar (or the error).
        result: The outputs (URLs, summary) once done.
        started: ``time.monotonic()`` when it started running, or None.
        finished: ``time.monotonic()`` when it ended, or None.
    """

    id: str
    filename: str
    input_path: Path
    output_dir: Path
    status: JobStatus = "queued"
    progress: float = 0.0
    message: str = "waiting for the previous video to finish"
    result: dict[str, Any] | None = None
    started: float | None = None
    finished: float | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    def to_dict(self) -> dict[str, Any]:
        """What ``GET /api/jobs/{id}`` answers."""
        now = time.monotonic()
        elapsed = None if self.started is None else (self.finished or now) - self.started
        return {
            "id": self.id,
            "filename": self.filename,
            "status": self.status,
            "progress": round(self.progress, 4),
            "message": self.message,
            "elapsed_s": None if elapsed is None else round(elapsed, 1),
            "result": self.result,
        }


#: Does the work of one job: (job, progress callback taking a fraction 0..1) -> result document.
JobRunner = Callable[[Job, Callable[[float], None]], dict[str, Any]]


class JobManager:
    """Runs video jobs on one background thread and keeps their state for the page.

    Args:
        runner: The analysis (see :data:`JobRunner`).
        max_jobs: Finished jobs kept for polling; the oldest are forgotten first.
    """

    def __init__(self, runner: JobRunner, max_jobs: int = 100) -> None:
        self._runner = runner
        self._max_jobs = max_jobs
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emonext-video")
        self._closing = threading.Event()

    def submit(self, filename: str, input_path: Path, output_dir: Path) -> Job:
        """Queue a video; returns its job at once."""
        job = Job(uuid.uuid4().hex, filename, input_path, output_dir)
        with self._lock:
            self._jobs[job.id] = job
            self._forget_old()
        self._executor.submit(self._run, job)
        return job

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        with self._lock:
            return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        """Ask a job to stop at its next progress report (a queued job never starts)."""
        job = self.get(job_id)
        if job is not None and job.status in ("queued", "running"):
            job.cancel_requested.set()
            job.message = "cancelling..."
        return job

    def shutdown(self) -> None:
        """Cancel every job and wait for the worker, so a server stops promptly."""
        self._closing.set()
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel_requested.set()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _forget_old(self) -> None:
        finished = [job for job in self._jobs.values() if job.status in ("done", "error", "cancelled")]
        for job in finished[: max(0, len(self._jobs) - self._max_jobs)]:
            del self._jobs[job.id]

    def _run(self, job: Job) -> None:
        if job.cancel_requested.is_set() or self._closing.is_set():
            self._finish(job, "cancelled", "cancelled before it started")
            return
        job.status, job.started, job.message = "running", time.monotonic(), "analysing frames"

        def on_progress(fraction: float) -> None:
            if job.cancel_requested.is_set():
                raise JobCancelled
            job.progress = min(1.0, max(job.progress, float(fraction)))

        try:
            result = self._runner(job, on_progress)
        except JobCancelled:
            self._finish(job, "cancelled", "cancelled")
        except USER_FACING_ERRORS as error:
            logger.warning("video job %s (%s) failed: %s", job.id, job.filename, error)
            # The analysis names the upload by its random server-side path; the user knows the file
            # by its own name.
            text = str(error).replace(str(job.input_path), job.filename).removeprefix(f"{job.filename}: ")
            self._finish(job, "error", f"{job.filename} could not be analysed: {text}")
        except Exception as error:
            logger.exception("video job %s (%s) failed", job.id, job.filename)
            self._finish(
                job,
                "error",
                f"{job.filename} could not be analysed because of an internal error "
                f"({type(error).__name__}); the server log has the details.",
            )
        else:
            job.result, job.progress = result, 1.0
            self._finish(job, "done", "done")
        finally:
            # The upload is not needed any more; it sits in a folder of its own.
            job.input_path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                job.input_path.parent.rmdir()

    @staticmethod
    def _finish(job: Job, status: JobStatus, message: str) -> None:
        job.finished = time.monotonic()
        job.message = message
        job.status = status
