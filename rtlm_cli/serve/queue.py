"""One configuration of rtlm's queue (``QueueConfig``), one way to build its decision core
(``build_core``) and slot queue, and one account of it in a run's ``meta.json`` (``meta``).

Whoever drives the queue builds it here: ``rtlm serve-local`` (simulated or real), ``rtlm gateway``
and Ray Serve's capacity queue. The options the commands take (``serve/config.py``'s
``PolicyConfig``/``GatewayConfig``, ``gateway/config.py``'s ``ServiceConfig``) each give one
``QueueConfig`` (their ``queue()``), validated once, here. Building one has no side effects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rtlm_cli.errors import RtlmError
from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.core import PRIORITY_ORDERS, DecisionCore
from rtlm_cli.serve.decide.policies import Policy, make_policy
from rtlm_cli.serve.decide.slots import GATHER_MS, PLACEMENTS, SlotQueue


@dataclass(frozen=True)
class QueueConfig:
    policy: str = field(default="fcfs", metadata={"help": "Scheduling policy (fcfs keeps arrival order)."})
    policy_params: tuple[tuple[str, float], ...] = field(default=(), metadata={"help": "The policy's own parameters (name, value)."})
    inflight: int | None = field(default=None, metadata={"help": "K, requests in flight per backend (None: the engine's batch, see k())."})
    gather_ms: float = field(default=GATHER_MS, metadata={"help": "Gathering window of an idle queue, ms (0: none)."})
    placement: str = field(default="first-free", metadata={"help": f"Which free backend takes a request: {', '.join(PLACEMENTS)}."})
    shed: bool = field(default=False, metadata={"help": "Take out a request whose deadline can no longer be met."})
    offload: bool = field(default=False, metadata={"help": "Let slower backends take work while the fast ones are congested."})
    max_batch: int = field(default=1, metadata={"help": "Static batches: consolidate up to this many alike requests."})
    priority_order: str = field(default="lower-first", metadata={"help": "Which engine priority runs first (direct dispatch)."})
    classes: bool = field(default=False, metadata={"help": "Priority classes (x-rtlm-priority) come before the policy's key: the service and Ray Serve."})

    def validate(self) -> "QueueConfig":
        """Every setting checked once; the one-line error names the option."""
        make_policy(self.policy, **dict(self.policy_params))  # unknown name -> did-you-mean; bad parameters
        if self.inflight is not None and self.inflight < 1:
            raise RtlmError(f"--inflight must be >= 1, got {self.inflight}")
        if self.gather_ms < 0:
            raise RtlmError(f"--gather-ms must be >= 0, got {self.gather_ms}")
        if self.placement not in PLACEMENTS:
            raise RtlmError(f"--placement is {' or '.join(PLACEMENTS)}, got {self.placement!r}")
        if self.priority_order not in PRIORITY_ORDERS:
            raise RtlmError(f"--priority-order is one of {', '.join(PRIORITY_ORDERS)}, got {self.priority_order!r}")
        if self.max_batch < 1:
            raise RtlmError(f"--max-batch must be >= 1, got {self.max_batch}")
        return self

    def k(self, engine_batch: int) -> int:
        """K, the requests in flight per backend: ``--inflight``, else the engine's batch (its
        ``--max-num-seqs``): the one place that default is resolved."""
        return self.inflight or engine_batch

    def make_policy(self) -> Policy:
        from rtlm_cli.serve.admit import Classed  # priority classes wrap the policy

        policy = make_policy(self.policy, **dict(self.policy_params))
        return Classed(policy) if self.classes else policy

    def build_core(self, backends: list[Backend], cap_tokens: float | None = None) -> DecisionCore:
        """The decision core over ``backends`` (``cap_tokens``: the cap a mixture predictor's
        P(capped) refers to)."""
        return DecisionCore(self.make_policy(), backends, max_batch=self.max_batch, offload=self.offload,
                            cap_tokens=cap_tokens, shed=self.shed, priority_order=self.priority_order)

    def slot_queue(self, core: DecisionCore) -> SlotQueue:
        """The slot queue in front of serving engines, over ``core``."""
        return SlotQueue(core, self.placement, self.gather_ms / 1000.0)

    def meta(self, dispatch: str, engine_batch: int | None = None) -> dict:
        """What a run's meta.json says of the queue (``docs/formats.md``); the gateway's fields are
        null unless ``dispatch`` is gateway."""
        gateway = dispatch == "gateway"
        return {"policy": self.policy, "policy_params": dict(self.policy_params), "max_batch": self.max_batch,
                "offload": self.offload, "shed": self.shed, "priority_order": self.priority_order,
                "inflight": (self.k(engine_batch) if engine_batch else self.inflight) if gateway else None,
                "placement": self.placement if gateway else None, "gather_ms": self.gather_ms if gateway else None}
