"""Prefect tasks: thin wrappers around the ``emonext`` library, one per pipeline step.

The library (``src/emonext``) knows nothing of Prefect; this package adds what orchestration
needs and nothing else: retries (:mod:`tasks.steps`), content-addressed result caching
(:mod:`tasks.caching`) and run artifacts (:mod:`tasks.reports`).
"""

from __future__ import annotations

import logging
import os

#: The library logs through the standard ``emonext`` logger; Prefect forwards the loggers this
#: setting names to the run's logs. Set before Prefect is first imported (and inherited by the
#: flow-run processes ``serve`` starts); :func:`attach_library_logs` covers a Prefect imported earlier.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "emonext")
#: No usage reports from the temporary Prefect server a run without PREFECT_API_URL starts (it is
#: a child process and reads this when it starts); offline, each attempt only logs an error.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
#: The same library calls also run outside flows (the ``emonext`` CLI, DVC stages, tests in one
#: process): there the forwarded records have no run to go to and are simply not sent.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

LIBRARY_LOGGER = "emonext"


def attach_library_logs() -> None:
    """Send the library's ``emonext`` log records to the Prefect run they happen in.

    ``PREFECT_LOGGING_EXTRA_LOGGERS`` is read once, when Prefect configures logging at import, so
    a process that imported Prefect before this package would not forward the library's logs.
    Idempotent: the API handler of Prefect's ``prefect.extra`` logger is added only once.
    """
    from prefect.logging.handlers import APILogHandler

    library = logging.getLogger(LIBRARY_LOGGER)
    # Prefect's root logger is at WARNING: without a level of its own, the library's INFO
    # progress messages (counts, accuracy, registered version) would never reach a handler.
    if library.level == logging.NOTSET:
        library.setLevel(logging.INFO)
    if any(isinstance(handler, APILogHandler) for handler in library.handlers):
        return
    configured = [h for h in logging.getLogger("prefect.extra").handlers if isinstance(h, APILogHandler)]
    for handler in configured or [APILogHandler()]:
        library.addHandler(handler)
