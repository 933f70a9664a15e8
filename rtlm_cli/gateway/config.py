"""Settings of ``rtlm gateway`` (a plain dataclass; building one has no side effects)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from rtlm_cli.errors import RtlmError
from rtlm_cli.serve.decide.policies import check_needs
from rtlm_cli.serve.decide.slots import GATHER_MS
from rtlm_cli.serve.queue import QueueConfig

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServiceConfig:
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on. Anything but loopback needs --api-key (or an explicit --no-auth)."})
    port: int = field(default=8100, metadata={"help": "Port to listen on (0: any free port, printed at start)."})
    policy: str = field(default="rtlm", metadata={"help": "Scheduling policy of the queue (as in serve-local; fcfs keeps arrival order)."})
    predictor: str | None = field(default="reference", metadata={"help": "Predictor directory, or the shipped one by name (reference: the fast families on SmolLM2's reference profile), or none: each request is predicted when it arrives, from its last user message (chat) or its prompt (completions)."})
    profile: str | None = field(default=None, metadata={"help": "For benchmarks: a profile whose true answer lengths the oracle looks up by prompt text (only a bound on that profile's prompts, answered as profiled: same cap and decoding); a sampled profile by prompt and the request's seed (send each request its answer's recorded seed)."})
    timing: str = field(default="vllm-cpu", metadata={"help": "Timing table that prices the backends (for --shed's deadlines and predicted service): a profile or timing file, or a shipped table (vllm-cpu, h200)."})
    backends: tuple[str, ...] = field(default=(), metadata={"help": "A backend's own timing table, URL=TIMING, repeatable: prices that --url for offloading and shedding (default: every backend by --timing)."})
    offload: bool = field(default=False, metadata={"help": "Let backends slower than the fastest (by their --backend tables) take work while the fast ones are congested, by rtlm's offloading rule."})
    inflight: int | None = field(default=None, metadata={"help": "K, requests in flight per backend (default: --max-num-seqs, the engine's batch)."})
    gather_ms: float = field(default=GATHER_MS, metadata={"help": "Gathering window: a request reaching an idle gateway is held this long, so that what arrives with it (a burst) is ordered together (0: none)."})
    max_queue: int = field(default=1024, metadata={"help": "Requests that may wait in rtlm's queue; one more is answered 429 with Retry-After."})
    max_body_kib: int = field(default=1024, metadata={"help": "Largest request body accepted, KiB (413 above it)."})
    api_key: str | None = field(default=None, metadata={"help": "Key clients must send (Authorization: Bearer KEY), checked in constant time."})
    no_auth: bool = field(default=False, metadata={"help": "Listen beyond loopback without a key (an explicit choice)."})
    backend_api_key: str | None = field(default=None, metadata={"help": "Key rtlm sends to the backends (the client's Authorization is never forwarded)."})
    shed: bool = field(default=False, metadata={"help": "Answer 429 to a request whose deadline (x-rtlm-deadline-ms) can no longer be met, instead of serving it late: priced by the backend's timing table at the number it would run beside, times how much slower than that table its latest requests ran."})
    retry_failed: bool = field(default=False, metadata={"help": "A request whose backend failed before its first chunk because it is down or overloaded (no connection, HTTP 502/503/504) goes once more to a live backend (recorded in retries; the one retry rule of every path)."})
    drain_timeout_s: float = field(default=30.0, metadata={"help": "On SIGTERM/Ctrl-C: stop accepting, let what is in flight finish for this long, cancel the rest."})
    flush_s: float = field(default=5.0, metadata={"help": "Records are flushed to the run directory this often (a crash loses at most this much)."})
    out: str | None = field(default=None, metadata={"help": "Run directory for the records (run format, readable by rtlm report while it grows)."})

    def queue(self) -> QueueConfig:
        """The queue this service runs (first-free placement; priority classes before the policy)."""
        return QueueConfig(policy=self.policy, inflight=self.inflight, gather_ms=self.gather_ms, shed=self.shed,
                           offload=self.offload, classes=True)

    def validate(self) -> "ServiceConfig":
        self.queue().validate()
        check_needs(self.policy, self.predictor, self.profile)
        if not 0 <= self.port <= 65535:
            raise RtlmError(f"--port must be 0-65535, got {self.port}")
        if self.max_queue < 1 or self.max_body_kib < 1:
            raise RtlmError("--max-queue and --max-body-kib must be >= 1")
        if self.drain_timeout_s < 0 or self.flush_s <= 0:
            raise RtlmError("--drain-timeout must be >= 0 and --flush > 0 seconds")
        if self.offload and not self.backends:
            raise RtlmError("--offload needs the backends' own speeds: give --backend URL=TIMING for each --url")
        if not is_loopback(self.host) and not self.api_key and not self.no_auth:
            raise RtlmError(f"--host {self.host} listens beyond this machine: set --api-key KEY (clients send it as "
                            "Authorization: Bearer KEY), or pass --no-auth to serve anyone who can reach it")
        return self


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
