"""A backend as the decision core sees it: where requests run. An hf worker runs one static batch at
a time; a serving engine (real or simulated) holds up to ``inflight`` requests at once."""

from __future__ import annotations

from dataclasses import dataclass

from rtlm_cli.serve.costmodel import CostModel

SPEED_CONTEXT = 256  # backends are ranked by a decode step alone at this context


@dataclass(eq=False)
class Backend:
    bid: int
    name: str
    cost: CostModel
    static: bool = False  # an hf worker: one padded batch at a time, run to its end
    inflight: int | None = 1  # K: requests it holds at most (None: no limit, direct dispatch); static: 1 batch
    outstanding: int = 0  # requests sent to it and not yet left (the decision core keeps it)
    busy_until: float = 0.0  # static: when its batch is expected to end
    down: bool = False  # it died: nothing more goes there
    timing: str = ""  # the timing table that prices it (its source, as given)

    @property
    def step_s(self) -> float:
        """Seconds of one decode step alone: what ranks backends by speed."""
        return self.cost.step(1, SPEED_CONTEXT)

    @property
    def free(self) -> int | None:
        """Requests it can take now (None: any number); a static worker: 1 (a batch) when idle."""
        if self.down:
            return 0
        if self.static:
            return int(self.outstanding == 0)
        return None if self.inflight is None else max(self.inflight - self.outstanding, 0)
