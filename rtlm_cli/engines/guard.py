"""Runs a server command and ends its whole process group when rtlm goes away.

``python -m rtlm_cli.engines.guard -- CMD ...`` is started by rtlm in a new session (so the guard
leads a process group of its own, which the server and every process it spawns join). The guard
reads its stdin, a pipe from rtlm: when the pipe closes — rtlm stopped the server, exited, was
interrupted or was killed, even with SIGKILL — or when the guard gets SIGTERM, it sends SIGTERM to
the group, waits, then SIGKILL. A server left running holds gigabytes and competes for the cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

GRACE_S = 15.0


def end_group(proc: subprocess.Popen) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's SIGTERM is for the others
    group = os.getpgid(0)
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + GRACE_S
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # let the server's own children exit after it
    os.killpg(group, signal.SIGKILL)  # whatever is left, the guard included


def main() -> None:
    cmd = sys.argv[sys.argv.index("--") + 1:]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    gone = threading.Event()

    def watch_stdin() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        gone.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: gone.set())
    while not gone.is_set() and proc.poll() is None:  # until rtlm goes, or the server ends by itself
        gone.wait(0.2)
    end_group(proc)


if __name__ == "__main__":
    main()
