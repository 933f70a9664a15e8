"""How a replay runs, resolved once from the options: where (simulated | real), how the engine batches
(static | continuous), how requests reach it (batches | direct | gateway) and what executes (hf
workers | a serving engine). Six modes are possible; every other combination is a one-line error.

| where     | batching   | dispatch | executes       | run by                              |
| --------- | ---------- | -------- | -------------- | ----------------------------------- |
| simulated | static     | batches  | hf-workers     | sim/static.py                       |
| simulated | continuous | direct   | serving-engine | sim/continuous.py (simulate_direct) |
| simulated | continuous | gateway  | serving-engine | sim/continuous.py (simulate_gateway)|
| real      | static     | batches  | hf-workers     | live/workers.py                     |
| real      | continuous | direct   | serving-engine | live/streams.py (run_direct)        |
| real      | continuous | gateway  | serving-engine | live/streams.py (run_gateway)       |
"""

from __future__ import annotations

from dataclasses import dataclass

from rtlm_cli.errors import RtlmError

WHERE = ("simulated", "real")
BATCHING = ("static", "continuous")
DISPATCH = ("batches", "direct", "gateway")


@dataclass(frozen=True)
class Mode:
    where: str
    batching: str
    dispatch: str

    @property
    def simulated(self) -> bool:
        return self.where == "simulated"

    @property
    def executes(self) -> str:
        """What generates: rtlm's hf workers (static batches) or a serving engine (continuous)."""
        return "hf-workers" if self.batching == "static" else "serving-engine"

    @property
    def name(self) -> str:
        return f"{self.where} {self.batching} {self.dispatch}"

    def describe(self) -> dict:
        """What a run's meta.json records of its mode."""
        return {"mode": self.where, "batching": self.batching, "dispatch": self.dispatch, "executes": self.executes}

    @classmethod
    def resolve(cls, simulate: bool, batching: str | None, dispatch: str | None, engine: str) -> "Mode":
        """The mode the options name; defaults: a server batches continuously and is sent requests
        directly, the hf engine runs static batches, the simulator simulates the hf engine."""
        server = engine in ("vllm", "openai")
        if batching is not None and batching not in BATCHING:
            raise RtlmError(f"unknown --batching {batching!r}: use {' or '.join(BATCHING)}")
        if dispatch is not None and dispatch not in DISPATCH:
            raise RtlmError(f"unknown --dispatch {dispatch!r}: use {', '.join(DISPATCH)}")
        if simulate and server:
            raise RtlmError(f"--simulate runs no engine: drop --engine {engine} (or --simulate)")
        if not simulate and batching == "continuous" and not server:
            raise RtlmError("--batching continuous is a simulation (--simulate); real continuous batching is "
                            "--engine vllm|openai")
        if server and batching == "static":
            raise RtlmError(f"--engine {engine} batches continuously: --batching static is the hf engine's")
        batching = batching or ("continuous" if server else "static")
        if batching == "static" and dispatch in ("direct", "gateway"):
            raise RtlmError(f"--dispatch {dispatch} fronts serving engines: use --engine vllm|openai, or --simulate "
                            "--batching continuous")
        if batching == "continuous" and dispatch == "batches":
            raise RtlmError("--dispatch batches is rtlm's hf workers' (static batches); a serving engine takes "
                            "--dispatch direct or gateway")
        dispatch = dispatch or ("batches" if batching == "static" else "direct")
        return cls("simulated" if simulate else "real", batching, dispatch)
