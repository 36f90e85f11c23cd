"""Waiting in tests: on a condition, never for a fixed time, with a deadline a busy machine can meet.

What a test waits for takes seconds on a quiet machine and can take minutes on a loaded one
(two cores shared with other builds, torch's threads fighting for them). The deadline is
only there to turn a hang into a failure, so it is generous; no test asserts on time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

GENEROUS_S = 600.0  # the deadline for anything a test waits on: a worker, a subprocess, a page
GENEROUS_MS = int(GENEROUS_S * 1000)  # the same, for Playwright

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], *, timeout: float = GENEROUS_S, every: float = 0.2) -> T:
    """Call ``check`` every ``every`` seconds until it returns something true, and return that.

    Fails the test, naming ``what``, if it is still false after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(every)

