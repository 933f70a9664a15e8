"""The README's five-minute tour, read as a newcomer runs it: every command parses with rtlm's own
CLI, and every profile, predictor, timing table and run a step reads is made by an earlier step or
shipped with rtlm. (Its wall time, run as written, is in docs/benchmarks.md.)"""

from pathlib import Path

import typer

from rtlm_cli.cli import app
from rtlm_cli.paths import PREDICTORS, REFERENCES
from rtlm_cli.testing.tour import tour_commands

README = Path(__file__).parent.parent / "README.md"
READS = ("profile", "predictor", "timing", "profiles", "paths")  # parameters that name something to read


def parse(argv: list[str]) -> tuple[str, dict]:
    """(subcommand, its parameters) as rtlm's CLI parses them, without running anything."""
    group = typer.main.get_command(app)
    assert argv[0] == "rtlm", argv
    sub = group.commands[argv[1]]
    ctx = sub.make_context(argv[1], argv[2:])
    return argv[1], ctx.params


def test_every_step_parses_and_reads_only_what_an_earlier_step_made_or_rtlm_ships():
    commands = tour_commands(README.read_text())
    assert len(commands) >= 5
    made: set[str] = set()
    shipped = set(REFERENCES) | set(PREDICTORS)
    for argv in commands:
        name, params = parse(argv)
        for key in READS:
            value = params.get(key)
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if item:
                    assert item in made or item in shipped, f"`{' '.join(argv)}` reads {item}, which no earlier step makes"
        if params.get("out"):
            made.add(params["out"])
    assert {"profiles/mine", "predictors/fast", "runs/sweep", "runs/vllm"} <= made


def test_the_engine_replay_is_priced_by_an_engines_table():
    replays = [parse(a)[1] for a in tour_commands(README.read_text()) if "--engine" in a and a[1] == "serve-local"]
    assert replays and all(p["timing"] == "vllm-cpu" for p in replays)
