"""The discrete-event simulators: a clock that jumps, the decision core of the real executors.

- ``static.py``: static hf workers, padded batches run to their end (RT-LM's setting).
- ``continuous.py``: serving engines with continuous batching (``server.py``), fed directly (each
  request sent at its arrival with its priority) or through rtlm's gateway.

One tie-breaking rule for both (``Event``): at equal times, what ends is taken first (a batch, a
request leaving an engine), then what arrives, and only then is new work given out (a batch, a
send, an engine step); among arrivals, by arrival order then request id. No torch, no clock.
"""

from __future__ import annotations

import enum


class Event(enum.IntEnum):
    """What happens at an instant, in the order the simulators take it."""

    LEFT = 0  # a batch ended, or requests left an engine: their slots are free before anyone asks
    ARRIVED = 1  # a request joins the queue, and every one arriving at the same instant with it
