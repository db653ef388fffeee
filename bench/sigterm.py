"""``unwind_on_sigterm``: a harness that is sent SIGTERM stops the processes it started (``stop_group``).

The bench's workers and servers run in sessions of their own (``start_new_session``), so that a Ctrl-C in
the terminal reaches only the harness, which then stops them in order from its ``finally`` blocks. But
Python's default SIGTERM ends a process at once, with no ``finally`` run: a harness stopped by ``kill``,
``timeout`` or a CI job's time limit left its workers running, pricing and holding CPU long after (one
left by a killed ``bench.run`` skewed the next measurements on the machine for 40 minutes).
"""

from __future__ import annotations

import os
import signal
import subprocess
from types import FrameType


def unwind_on_sigterm(error: type[BaseException] = SystemExit) -> None:
    """Make SIGTERM raise ``error`` in the main thread, as Ctrl-C raises ``KeyboardInterrupt``.

    ``SystemExit`` (the default) ends a script with status 143, as the default SIGTERM does, after its
    ``finally`` blocks and context managers have run; under pytest, ``KeyboardInterrupt`` ends the
    session with its fixtures torn down (pytest reports a ``SystemExit`` as one test's failure and
    goes on). A second SIGTERM while unwinding raises again, so it can cut a stuck cleanup short.

    >>> previous = signal.getsignal(signal.SIGTERM)
    >>> unwind_on_sigterm()
    >>> signal.getsignal(signal.SIGTERM).__name__
    'unwind'
    >>> _ = signal.signal(signal.SIGTERM, previous)
    """

    def unwind(signum: int, frame: FrameType | None) -> None:
        if error is SystemExit:
            raise SystemExit(128 + signum)
        raise error(f"signal {signum}")

    signal.signal(signal.SIGTERM, unwind)


def stop_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout_s: float) -> int:
    """SIGTERM ``proc``'s process group (it leads a session of its own), SIGKILL it after ``timeout_s``.

    Return the exit status (a negative signal number when a signal ended it), or the status it had
    already exited with.

    >>> import sys
    >>> sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    >>> child = subprocess.Popen(sleep, start_new_session=True)
    >>> stop_group(child, timeout_s=10) == -signal.SIGTERM
    True
    >>> stop_group(child, timeout_s=10) == -signal.SIGTERM  # already stopped: its status again
    True
    """
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait()
    return proc.returncode
