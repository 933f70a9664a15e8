"""A simulated serving engine: what a vLLM (V1) server does with the requests sent to it, with
continuous batching, in simulated time.

Every engine step runs one decode token for each running request plus prompt tokens of requests
being prefilled, within a token budget (``max_num_batched_tokens``: chunked prefill, running
requests first, then waiting ones). A waiting request is admitted when a slot (``max_num_seqs``) and
KV blocks for its prompt are free; the waiting queue is the server's: a heap on (priority, arrival),
the more urgent priority first as the server's ``priority_order`` says (vLLM: lower first; a request
sent with no priority counts as 0, so FCFS is arrival order). A waiting request never evicts a
running one. When a running request needs a KV block and none is free, the least urgent running
request (the largest (priority, arrival) in that order) is preempted: its blocks are freed and it
waits again, to recompute its prompt and what it had generated. Each request leaves at its own last
token.

Steps are priced by a timing table (``CostModel``; best one measured through the engine with
``rtlm profile --engine ... --calibrate``): a step decoding ``b`` requests at context ``c`` costs
``decode_step_s(b, c)``, and its prefill tokens add what prefilling them alone costs beyond a decode
step. Between events (an arrival that could be admitted, a request finishing, a prefill, a KV block
running out) the running set is fixed and every step alike: whole runs of steps are jumped at once.
It knows nothing of policies: who sends it what, and with which priority, is the driver's
(``sim/continuous.py``). No torch here; no clock is read.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from rtlm_cli.formats.run import not_run, record
from rtlm_cli.serve.costmodel import CostModel, bucket
from rtlm_cli.serve.decide.request import Request


@dataclass(frozen=True)
class ServerLimits:
    """What a simulated serving engine is given (vLLM's names; defaults: vLLM 0.32's CPU server with
    2 GiB of KV cache for SmolLM2, see docs/benchmarks.md)."""

    max_num_seqs: int = field(default=16, metadata={"help": "Continuous batching: requests running at once."})
    max_num_batched_tokens: int = field(default=2048, metadata={"help": "Continuous batching: tokens per engine step (decodes + prefill chunks)."})
    kv_cache_tokens: int = field(default=46_592, metadata={"help": "Continuous batching: KV cache capacity in tokens (default: vLLM-CPU's with 2 GiB for SmolLM2)."})
    block_size: int = field(default=128, metadata={"help": "Continuous batching: KV cache block size in tokens (vLLM-CPU: 128)."})

    @property
    def kv_blocks(self) -> int:
        return self.kv_cache_tokens // self.block_size


class StepCost:
    """Seconds of engine steps from a timing table."""

    def __init__(self, cost: CostModel):
        self.cost = cost

    def decode(self, batch: int, context: float) -> float:
        return self.cost.step(batch, bucket(context))

    def prefill(self, tokens: int) -> float:
        """What ``tokens`` prompt tokens add to a step: prefilling them alone, beyond a decode step."""
        n = bucket(tokens)
        return max(self.cost.prefill(1, n) - self.cost.step(1, n), 0.0)

    def step(self, decodes: int, context: float, prefill_tokens: int) -> float:
        if decodes == 0:
            return self.cost.prefill(1, bucket(prefill_tokens))
        return self.decode(decodes, context) + (self.prefill(prefill_tokens) if prefill_tokens else 0.0)


@dataclass(eq=False)  # compared by identity: queues hold the same objects
class Seq:
    """A request inside the engine."""

    req: Request
    order: tuple  # (urgency, arrival, rid): lower is served first, larger is preempted first
    target: int  # tokens it will generate
    generated: int = 0
    computed: int = 0  # tokens in its KV cache
    to_prefill: int = 0  # prompt (+ generated, after a preemption) still to compute
    blocks: int = 0
    start_s: float = -1.0
    first_token_s: float = -1.0
    preemptions: int = 0
    priority: int = 0  # as sent
    held: int = 0  # requests the server held when this one reached it, itself included


class SimulatedServer:
    """One serving engine's state, advanced step by step (or a run of alike steps at once)."""

    def __init__(self, limits: ServerLimits, cost: StepCost, bid: int = 0, name: str = "engine",
                 priority_order: str = "lower-first"):
        self.m, self.cost = limits, cost
        self.bid, self.name = bid, name
        self.urgency = 1 if priority_order == "lower-first" else -1  # a priority's place in the queue
        self.free = limits.kv_blocks
        self.waiting: list[tuple[tuple, Seq]] = []
        self.running: list[Seq] = []
        self.records: dict[int, dict] = {}
        self.steps = self.preemptions = 0
        self.now = 0.0
        self.left: list[int] = []  # requests that left in the current step

    # -- queues and KV ---------------------------------------------------------------------------
    def arrive(self, r: Request, at: float, priority: int | None = None) -> None:
        """``r`` reaches the engine at ``at``, sent with ``priority`` (None: no priority, i.e. 0)."""
        prio = priority or 0
        true = r.true_tokens if r.true_tokens is not None else max(round(r.predicted_tokens), 1)
        s = Seq(r, (self.urgency * prio, at, r.rid), max(int(true), 1), to_prefill=r.prompt_tokens, priority=prio)
        heapq.heappush(self.waiting, (s.order, s))
        s.held = len(self.running) + len(self.waiting)

    def _blocks(self, tokens: int) -> int:
        return -(-tokens // self.m.block_size)

    def _preempt(self, victim: Seq) -> None:
        self.running.remove(victim)
        self.free += victim.blocks
        if not self.running:  # alone and still too big: it can never fit
            victim.blocks = 0
            self._reject(victim, "with its answer so far")
            return
        self.preemptions += 1
        victim.blocks = victim.computed = 0
        victim.to_prefill = victim.req.prompt_tokens + victim.generated  # recomputed on readmission
        victim.preemptions += 1
        heapq.heappush(self.waiting, (victim.order, victim))

    def _grow(self, s: Seq, tokens: int) -> bool:
        """KV blocks for ``tokens`` more of ``s``, preempting the least urgent running requests if
        need be; False when ``s`` itself was the one preempted."""
        need = self._blocks(s.computed + tokens) - s.blocks
        while need > self.free:
            victim = max(self.running, key=lambda x: x.order)
            self._preempt(victim)
            if victim is s:
                return False
        self.free -= need
        s.blocks += need
        return True

    # -- one step, or a run of alike steps -------------------------------------------------------
    def _schedule(self, now: float) -> list[tuple[Seq, int]]:
        """The step's work: (request, tokens) for running requests first, then admitted ones."""
        budget = self.m.max_num_batched_tokens
        work = []
        for s in list(self.running):
            if budget <= 0 or s not in self.running:
                continue
            n = min(s.to_prefill, budget) if s.to_prefill else 1
            if self._grow(s, n):
                work.append((s, n))
                budget -= n
        work = [(s, n) for s, n in work if s in self.running]  # a later one's growth may have preempted it
        while self.waiting and len(self.running) < self.m.max_num_seqs and budget > 0:
            s = self.waiting[0][1]
            n = min(s.to_prefill, budget)
            need = self._blocks(s.computed + n) - s.blocks
            if need > self.free:
                break  # the head waits for memory; nothing behind it jumps the queue
            heapq.heappop(self.waiting)
            self.free -= need
            s.blocks += need
            if s.start_s < 0:
                s.start_s = now
            self.running.append(s)
            work.append((s, n))
            budget -= n
        return work

    def _finish_step(self, work: list[tuple[Seq, int]], end: float) -> None:
        for s, n in work:
            if s.to_prefill:
                s.to_prefill -= n
                s.computed += n
                if s.to_prefill:
                    continue  # more of its prompt next step
                if s.generated == 0:
                    s.first_token_s = end
                s.generated += 1  # the prefill's last step yields a token
            else:
                s.computed += 1
                s.generated += 1
            if s.generated >= s.target:
                self._leave(s, end)

    def _leave(self, s: Seq, end: float) -> None:
        self.left.append(s.req.rid)
        self.running.remove(s)
        self.free += s.blocks
        r = s.req
        self.records[r.rid] = {
            **record(r, start_s=s.start_s, first_token_s=s.first_token_s, last_token_s=end, finish_s=end,
                     backend=self.name, in_flight=s.held, output_tokens=s.generated),
            "priority": s.priority, "preemptions": s.preemptions,
        }

    def _steady_steps(self, next_arrival: float, now: float) -> int:
        """How many alike decode steps may be jumped from now: up to the first request's end, the
        first KV block that would not be there, or (while a slot is free) the next arrival."""
        k = min(s.target - s.generated for s in self.running)
        r = [(self.m.block_size - s.computed % self.m.block_size) % self.m.block_size for s in self.running]
        if sum(1 for x in r if x == 0) > self.free:
            return 0  # not even one step fits: the next step preempts
        lo, hi = 1, k  # the largest j <= k whose new blocks fit
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if sum((mid - x - 1) // self.m.block_size + 1 for x in r if mid > x) <= self.free:
                lo = mid
            else:
                hi = mid - 1
        k = lo
        if len(self.running) < self.m.max_num_seqs and next_arrival < math.inf:
            step = self.cost.decode(len(self.running), self._context())
            k = min(k, max(1, math.ceil((next_arrival - now) / step)))
        return k

    def _context(self) -> float:
        return sum(s.computed for s in self.running) / len(self.running)

    def busy(self) -> bool:
        return bool(self.running or self.waiting)

    def advance(self, until: float = math.inf) -> list[int]:
        """One engine step, or one run of alike steps that stops where a request that arrives at
        ``until`` could be admitted; the ids of the requests that left (finished or were rejected)
        in it. The engine's clock, ``now``, moves to the step's end."""
        self.left = []
        k = self._jump_length(until)
        if k:
            b, ctx = len(self.running), self._context()
            self.now += k * self.cost.decode(b, ctx + (k - 1) / 2)  # the context grows a token a step
            self._jump(k, self.now)
            self.steps += k
            return self.left
        work = self._schedule(self.now)
        if not work:  # nothing runs, and the waiting head does not fit in the whole KV cache
            if self.waiting and not self.running:
                self._reject(heapq.heappop(self.waiting)[1])
            return self.left
        decodes = sum(1 for s, n in work if not s.to_prefill)
        prefill = sum(n for s, n in work if s.to_prefill)
        self.now += self.cost.step(decodes, self._context() if self.running else 0.0, prefill)
        self._finish_step(work, self.now)
        self.steps += 1
        return self.left

    def _jump_length(self, until: float) -> int:
        """How many alike decode steps the next advance jumps (0: it runs one ordinary step)."""
        steady = self.running and all(not s.to_prefill for s in self.running) and (
            not self.waiting or len(self.running) >= self.m.max_num_seqs or self._head_blocked())
        return self._steady_steps(until, self.now) if steady else 0

    def next_event(self, until: float = math.inf) -> float:
        """When the next ``advance`` ends if it is a run of alike steps (it changes nothing); the clock
        when it is one ordinary step, whose end is at most a step away."""
        k = self._jump_length(until)
        if not k:
            return self.now
        return self.now + k * self.cost.decode(len(self.running), self._context() + (k - 1) / 2)

    def _reject(self, s: Seq, what: str = "") -> None:
        self.left.append(s.req.rid)
        self.records[s.req.rid] = {
            **not_run(s.req, "failed", backend=self.name, in_flight=s.held,
                      error=f"its prompt ({s.req.prompt_tokens} tokens){' ' + what if what else ''} does not fit in "
                            f"the KV cache ({self.m.kv_cache_tokens} tokens)"),
            "priority": s.priority, "preemptions": s.preemptions}

    def _head_blocked(self) -> bool:
        s = self.waiting[0][1]
        n = min(s.to_prefill, self.m.max_num_batched_tokens - len(self.running))
        return self._blocks(s.computed + n) - s.blocks > self.free

    def _jump(self, k: int, end: float) -> None:
        """``k`` decode steps for every running request (KV blocks known to fit)."""
        for s in self.running:
            s.computed += k
            s.generated += k
            need = self._blocks(s.computed) - s.blocks
            self.free -= need
            s.blocks += need
        for s in [s for s in self.running if s.generated >= s.target]:
            self._leave(s, end)


def capacity_rps(cost: CostModel, limits: ServerLimits, prompt_tokens, output_tokens) -> float:
    """Requests/s the engine sustains with ``max_num_seqs`` always running, over this prompt mix: each
    request costs its prefill (beyond a decode step) plus its share of the decode steps it is in,
    ``tokens x step(max_num_seqs, context) / max_num_seqs``."""
    steps = StepCost(cost)
    b = limits.max_num_seqs
    seconds = [steps.prefill(int(p)) + n * steps.decode(b, p + n / 2) / b for p, n in zip(prompt_tokens, output_tokens)]
    return len(seconds) / sum(seconds)
