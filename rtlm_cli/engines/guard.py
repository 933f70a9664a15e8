"""Runs a server command and ends its whole process group when rtlm goes away.

``python -m rtlm_cli.engines.guard -- CMD ...`` is started by rtlm in a new session (so the guard
leads a process group of its own, which the server and every process it spawns join). When rtlm
stops the server (SIGTERM to the guard) or goes away — exited, interrupted or killed, even with
SIGKILL: the guard is then re-parented, which it checks five times a second — the guard sends
SIGTERM to the group, waits, then SIGKILL. A server left running holds gigabytes and competes for
the cores. The guard writes why it ended the group to the server's log.

(It watched a pipe from rtlm before; a server was twice ended mid-benchmark with no stop asked, and
a pipe's write end is one stray ``close`` of a reused descriptor away from looking like rtlm's exit.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
    parent = os.getppid()
    reason: list[str] = []
    signal.signal(signal.SIGTERM, lambda *_: reason.append("rtlm asked to stop the server (SIGTERM)"))
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    while not reason:  # until rtlm stops it or goes, or the server ends by itself
        if proc.poll() is not None:
            reason.append(f"the server exited by itself (code {proc.returncode})")
        elif os.getppid() != parent:
            reason.append(f"rtlm (pid {parent}) is gone")
        else:
            time.sleep(0.2)
    print(f"rtlm guard: ending the server's process group: {reason[0]}", file=sys.stderr, flush=True)
    end_group(proc)


if __name__ == "__main__":
    main()
