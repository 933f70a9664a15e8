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
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # taken below, with who sent it
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM}))
    reason = None
    while reason is None:  # until rtlm stops it or goes, or the server ends by itself
        got = signal.sigtimedwait({signal.SIGTERM}, 0.2)
        if got is not None:
            reason = f"SIGTERM from {'rtlm' if got.si_pid == parent else 'another process'} ({describe(got.si_pid)})"
        elif proc.poll() is not None:
            reason = f"the server exited by itself (code {proc.returncode})"
        elif os.getppid() != parent:
            reason = f"rtlm (pid {parent}) is gone"
    print(f"rtlm guard: ending the server's process group: {reason}", file=sys.stderr, flush=True)
    end_group(proc)


def describe(pid: int) -> str:
    """A sender's pid and command line, as far as /proc still knows it."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\x00", b" ").decode(errors="replace").strip()
        return f"pid {pid}: {cmdline[:200]}"
    except OSError:
        return f"pid {pid}"


if __name__ == "__main__":
    main()
