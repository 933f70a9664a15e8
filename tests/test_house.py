"""The layout's rules, checked from the source: no import cycles (imports inside functions count),
jobs never import each other, formats and engines import no stage, heavy libraries stay where a
model runs; in ``serve/`` decisions never import where they run (``decide/`` imports neither
``sim/`` nor ``live/``; ``sim/`` never imports ``live/``); no module reads another object's
``_``-prefixed fields; no module over 300 lines, no function body over 60; and adding a policy
takes one class."""

import ast
from pathlib import Path

import pytest

from rtlm_cli.formats.run import load_run
from rtlm_cli.serve.decide.policies import POLICIES, Policy, policy_help, register

PACKAGE = Path(__file__).parent.parent / "rtlm_cli"
# The job of each stage: the function a command calls. Stages share libraries, never jobs.
JOBS = {"rtlm_cli.profile.job", "rtlm_cli.predict.train", "rtlm_cli.predict.job", "rtlm_cli.serve.job",
        "rtlm_cli.gateway.job", "rtlm_cli.report.job"}
STAGES = ("profile", "predict", "serve", "gateway", "report")
HEAVY = ("torch", "transformers", "vllm")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (inside functions too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import module`
    return out


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {m: {i for i in imports_of(p) if i in MODULES and i != m} for m, p in MODULES.items()}


def test_no_import_cycles():
    seen, on_path, cycles = set(), [], []

    def visit(m):
        if m in on_path:
            cycles.append(on_path[on_path.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        on_path.append(m)
        for n in sorted(GRAPH[m]):
            # a package's __init__ is imported with any of its modules; only real edges count
            if not m.startswith(n + "."):
                visit(n)
        on_path.pop()

    for m in sorted(GRAPH):
        visit(m)
    assert not cycles, cycles


def test_jobs_never_import_each_other_and_formats_and_engines_import_no_stage():
    def stage(module: str) -> str:
        return (module.split(".") + [""])[1]

    for m, deps in GRAPH.items():
        for d in deps:
            if d in JOBS and stage(d) != stage(m) and not m.startswith("rtlm_cli.cli"):
                pytest.fail(f"{m} imports another stage's job {d}")
            if stage(m) in ("formats", "engines", "prompts") and stage(d) in STAGES:
                pytest.fail(f"{m} ({stage(m)}) imports the stage module {d}")


def test_heavy_libraries_are_imported_only_where_a_model_runs():
    for m, path in MODULES.items():
        heavy = {i.split(".")[0] for i in imports_of(path)} & set(HEAVY)
        if heavy and not m.startswith("rtlm_cli.engines."):
            pytest.fail(f"{m} imports {sorted(heavy)}: keep them in rtlm_cli/engines/")


MODULE_LINES, BODY_LINES = 300, 60


def test_no_module_over_300_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MODULE_LINES}
    assert not long, long


def body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body, its signature, decorators and docstring aside."""
    body = fn.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def test_no_function_body_over_60_lines():
    long = {f"{m}.{fn.name}": n for m, p in MODULES.items() for fn in ast.walk(ast.parse(p.read_text()))
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and (n := body_lines(fn)) > BODY_LINES}
    assert not long, long


def test_body_lines_counts_what_it_says():
    fn = ast.parse('def f(a,\n      b):\n    """Doc\n    more."""\n    x = 1\n\n    return x\n').body[0]
    assert body_lines(fn) == 3


@pytest.mark.parametrize("folder,never", [("decide", ("sim", "live")), ("sim", ("live",))])
def test_decisions_never_import_where_they_run(folder, never):
    prefix = f"rtlm_cli.serve.{folder}"
    assert any(m.startswith(prefix + ".") for m in MODULES), f"no modules under {prefix}"
    for m, deps in GRAPH.items():
        if m == prefix or m.startswith(prefix + "."):
            bad = sorted(d for d in deps for f in never if d.startswith(f"rtlm_cli.serve.{f}"))
            assert not bad, f"{m} imports {bad}"


def private_reads(path: Path) -> list[str]:
    """``x._field`` where x is not ``self``, ``cls`` or ``super(...)`` (self, through its bases):
    another object's private field."""
    def own(value) -> bool:
        return (isinstance(value, ast.Name) and value.id in ("self", "cls")) or \
            (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super")

    return [f"{path.name}:{node.lineno} {ast.unparse(node)}" for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
            and not own(node.value)]


def test_no_module_reads_another_objects_private_fields(tmp_path):
    found = [hit for p in MODULES.values() for hit in private_reads(p)]
    assert not found, found
    bad = tmp_path / "bad.py"
    bad.write_text("def f(core):\n    return core._waiting\n")
    assert private_reads(bad) == ["bad.py:2 core._waiting"]  # the check can fail


def test_the_cli_help_lists_every_policy(run_cli):
    text = " ".join(run_cli("serve-local", "--help").output.split())
    assert "--backend" in text and "--worker" not in text  # the old spelling works, hidden
    for name in POLICIES.names():
        assert f"{name}:" in text


class LongestPromptFirst(Policy):
    """A toy: the longest prompt first. Everything rtlm needs to know about it is on this class."""

    name = "toy-longest-prompt"
    help = "longest prompt first (a test's toy)"

    def key(self, r):
        return -r.prompt_tokens


@pytest.fixture
def toy_policy():
    register(LongestPromptFirst)
    yield LongestPromptFirst.name
    POLICIES.unregister(LongestPromptFirst.name)


def test_adding_a_policy_is_one_class(toy_policy, run_cli, tmp_path, prompt_file):
    prof = tmp_path / "prof"
    r = run_cli("profile", "--model", "fake", "--prompts", prompt_file, "-n", 6, "--max-new-tokens", 64,
                "--calibrate", "--calibration-batches", "1", "--calibration-contexts", "64", "--out", prof)
    assert r.exit_code == 0, r.output
    assert f"{toy_policy}: longest prompt first" in policy_help()  # what the CLI help is made of
    for mode, extra in (("simulated", ("--simulate",)), ("real", ("--model", "fake", "--no-dashboard"))):
        out = tmp_path / mode
        r = run_cli("serve-local", *extra, "--profile", prof, "--policy", toy_policy, "--arrivals", "burst", "-n", 6,
                    "--out", out)
        assert r.exit_code == 0, r.output
        meta, df = load_run(out)
        assert meta["mode"] == mode and meta["policy"] == toy_policy
        served = df.sort_values("start_s")["prompt_tokens"].tolist()
        assert served == sorted(served, reverse=True)  # a burst served longest prompt first


ROOT = PACKAGE.parent
TESTS = ROOT / "tests"
ALL_CODE = [*PACKAGE.rglob("*.py"), *TESTS.glob("*.py"), *(ROOT / "scripts").rglob("*.py"), *(ROOT / "examples").rglob("*.py")]


def test_no_test_module_is_imported_by_another_module_or_script():
    """Tests share ``tests/helpers.py`` (and ``rtlm_cli.testing``'s fakes), never each other, and no
    script or example puts ``tests/`` on its path."""
    bad = []
    for path in ALL_CODE:
        tops = {name.split(".")[0] for name in imports_of(path)}
        bad += [f"{path.relative_to(ROOT)} imports {t}" for t in sorted(tops) if t.startswith("test_") or t == "conftest"]
        if path.parent != TESTS and "tests" in {n.value for n in ast.walk(ast.parse(path.read_text()))
                                                if isinstance(n, ast.Constant) and isinstance(n.value, str)}:
            bad.append(f"{path.relative_to(ROOT)} names the tests/ folder (a path to import from?)")
    assert not bad, bad


# test modules that assert what the decision core decided: their evidence must not hang on a wall clock
DECISION_TESTS = ("test_decisions", "test_golden", "test_priority_order", "test_ray_queue", "test_upstream",
                  "test_executor", "test_scheduling", "test_continuous", "test_gateway")


def sleeps(tree: ast.AST) -> list[int]:
    """Lines that call ``time.sleep`` (or a ``sleep`` imported from time)."""
    from_time = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "time"
                 for a in n.names if a.name == "sleep"}
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and (
        (isinstance(n.func, ast.Attribute) and n.func.attr == "sleep" and isinstance(n.func.value, ast.Name)
         and n.func.value.id == "time") or (isinstance(n.func, ast.Name) and n.func.id in from_time))]


def test_no_time_sleep_in_tests_that_assert_decisions():
    assert all((TESTS / f"{name}.py").is_file() for name in DECISION_TESTS)
    found = {name: lines for name in DECISION_TESTS if (lines := sleeps(ast.parse((TESTS / f"{name}.py").read_text())))}
    assert not found, f"time.sleep in tests that assert decisions (gate the fake servers instead): {found}"
    assert sleeps(ast.parse("import time\nfrom time import sleep as nap\ntime.sleep(1)\nnap(2)\n")) == [3, 4]


ADAPTER = PACKAGE / "integrations" / "ray_serve" / "adapter.py"


def ray_private_attributes() -> set[str]:
    """``adapter.PRIVATE_ATTRIBUTES``, read from its source (no Ray import needed)."""
    for node in ast.walk(ast.parse(ADAPTER.read_text())):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "PRIVATE_ATTRIBUTES" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError("adapter.py has no PRIVATE_ATTRIBUTES")


def test_rays_private_names_are_used_only_in_the_adapter():
    private = ray_private_attributes()
    assert "_pending_tokens" in private and "_capacity_queue" in private
    bad = []
    for path in ALL_CODE:
        if path == ADAPTER:
            continue
        tree = ast.parse(path.read_text())
        for name in imports_of(path):
            if name.split(".")[0] == "ray" and any(part.startswith("_") for part in name.split(".")):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and n.attr in private and isinstance(n.value, ast.Name) and n.value.id == "self":
                bad.append(f"{path.relative_to(ROOT)}:{n.lineno} self.{n.attr}")
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "super" and len(n.args) == 2:
                bad.append(f"{path.relative_to(ROOT)}:{n.lineno} super(...) with a class: a skip over Ray's own")
    assert not bad, bad


UPSTREAM = "rtlm_cli.engines.upstream"


def test_only_the_upstream_module_opens_a_client_to_a_backend_or_reads_server_sent_events():
    """One way to talk to a backend (engines/upstream): no other module of rtlm opens an HTTP client
    session or reads ``data:`` lines (the fake servers of ``rtlm_cli.testing`` write them)."""
    bad = []
    for m, path in MODULES.items():
        if m.startswith(UPSTREAM) or m.startswith("rtlm_cli.testing"):
            continue
        tree = ast.parse(path.read_text())
        if any(i.split(".")[0] == "httpx" for i in imports_of(path)):
            bad.append(f"{m} imports httpx")
        for n in ast.walk(tree):
            if isinstance(n, (ast.Name, ast.Attribute)) and getattr(n, "id", getattr(n, "attr", None)) == "ClientSession":
                bad.append(f"{m}:{n.lineno} ClientSession")
            if isinstance(n, ast.Constant) and isinstance(n.value, (str, bytes)) and n.value.strip() in ("data:", b"data:"):
                bad.append(f"{m}:{n.lineno} reads server-sent events")
    assert not bad, bad
