"""A worker as the scheduler sees it: a static hf worker, or a serving engine behind the gateway."""

from __future__ import annotations

from dataclasses import dataclass, field

from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.scheduling.request import Request


@dataclass
class Worker:
    wid: int
    name: str
    cost: CostModel
    busy_until: float = 0.0
    running: list[Request] = field(default_factory=list)
    slots: int = 1  # requests it may hold at once: 1 batch for static workers, K for a serving engine
    in_flight: int = 0  # per-slot dispatch: requests sent to it and not yet ended (the gateway keeps it)
    down: bool = False  # per-slot dispatch: the backend died; nothing more goes there
