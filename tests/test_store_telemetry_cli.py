import json
import math

import pandas as pd
import pytest

from rtlm_cli import __version__
from rtlm_cli.errors import RtlmError
from rtlm_cli.formats.store import (
    JOURNAL,
    RecordShards,
    atomic_write_json,
    read_records,
)
from rtlm_cli.profile.telemetry import TelemetrySampler
from rtlm_cli.registry import Registry


def test_shards_journal_and_recovery(tmp_path):
    d = tmp_path / "rec"
    s = RecordShards(d, key="id", flush_every=3)
    s.append([{"id": "a", "x": 1.0}, {"id": "b", "x": 2.0}])
    assert (d / JOURNAL).is_file() and not list(d.glob("part-*"))
    assert len(read_records(d)) == 2  # a reader sees journaled records of a killed job
    s.append([{"id": "c", "x": float("nan")}])  # reaches flush_every: one shard, no journal
    assert len(list(d.glob("part-*.parquet"))) == 1 and not (d / JOURNAL).exists()
    s.append([{"id": "d", "x": 4.0}])
    s._journal.close()  # the process dies here: 'd' lives only in the journal
    # a kill between a shard write and the journal delete leaves a duplicate line: it is dropped
    with open(d / JOURNAL, "a") as f:
        f.write(json.dumps({"id": "a", "x": 1.0}) + "\n" + '{"id": "e", "x"')  # and a cut line
    assert RecordShards(d, key="id").recover() == 1
    df = pd.read_parquet(d)
    assert sorted(df["id"]) == ["a", "b", "c", "d"] and math.isnan(df.set_index("id").loc["c", "x"])


def test_atomic_json_is_strict(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"a": float("nan"), "b": [1, float("inf")]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": None, "b": [1, None]}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_telemetry_without_gpu_is_absent_not_a_crash():
    with TelemetrySampler("cuda:99", interval_s=0.01) as t:  # no such GPU here, with or without CUDA
        pass
    assert not t.has_gpu
    w = t.window(0, 1e12)
    assert w["rss_bytes"] > 0 and math.isnan(w["gpu_mem_bytes"]) and math.isnan(w["gpu_power_w"])


def test_registry_did_you_mean():
    r = Registry("policy")
    r.register("fcfs")(object)
    with pytest.raises(ValueError):
        r.register("fcfs")(object)
    with pytest.raises(RtlmError, match="did you mean 'fcfs'"):
        r.get("fcfx")


def test_version_and_help(run_cli):
    r = run_cli("--version")
    assert r.exit_code == 0 and __version__ in r.output
    r = run_cli("profile", "--help")
    assert r.exit_code == 0 and "--max-new-tokens" in r.output and "--calibrate" in r.output


def test_artifact_dir_replaces_only_once_the_new_one_is_written(tmp_path):
    from rtlm_cli.formats.store import artifact_dir

    out = tmp_path / "art"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with artifact_dir(out) as tmp:
            (tmp / "new.txt").write_text("half")
            raise RuntimeError("the job failed")
    assert [p.name for p in tmp_path.iterdir()] == ["art"] and (out / "old.txt").read_text() == "old"
    with artifact_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["art"] and [p.name for p in out.iterdir()] == ["new.txt"]


def test_a_revision_is_dirty_when_a_tracked_file_changed_but_the_record_being_written(tmp_path):
    import subprocess

    from rtlm_cli.formats.store import git_revision

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "record.json").write_text("{}\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    sub = tmp_path / "bench"  # asked from a subdirectory, as rtlm asks from its package's
    clean = git_revision(where=sub)
    assert clean and "+" not in clean
    (sub / "record.json").write_text('{"rows": 1}\n')
    assert git_revision(where=sub) == clean + "+dirty"
    assert git_revision(sub / "record.json", where=sub) == clean  # the record itself does not count
    assert git_revision(tmp_path / "elsewhere.json", where=sub) == clean + "+dirty"
    (tmp_path / "code.py").write_text("x = 2\n")
    (sub / "record.json").write_text("{}\n")
    assert git_revision(sub / "record.json", where=sub) == clean + "+dirty"  # a change elsewhere in the tree does


def test_a_growing_runs_summary_costs_at_most_a_small_share_of_its_writer(tmp_path, monkeypatch):
    """A long-lived service's run: past SUMMARY_EVERY_FLUSH rows, meta.json's summary is recomputed only
    once the time since the last one is 1/SUMMARY_COST_SHARE times what that one cost (every row is still
    written at each flush); a run that ends gets the whole summary."""
    from types import SimpleNamespace

    from rtlm_cli.formats import run as runfmt

    clock, perf, calls = [0.0], [0.0], []
    real = runfmt.summarize

    def summarize(df, goodput=None):  # costs 0.1 s on the fake clock: the next one waits 0.1 / 0.02 = 5 s
        calls.append(len(df))
        perf[0] += 0.1
        return real(df, goodput)

    monkeypatch.setattr(runfmt, "time", SimpleNamespace(monotonic=lambda: clock[0], perf_counter=lambda: perf[0]))
    monkeypatch.setattr(runfmt, "summarize", summarize)
    monkeypatch.setattr(runfmt, "SUMMARY_EVERY_FLUSH", 5)
    writer = runfmt.RunWriter(tmp_path / "run", {"mode": "real"}, flush_s=1.0)

    def row(i):  # a finished request; one without a first token (None) among them
        return {"rid": f"r{i}", "status": "finished", "arrival_s": float(i), "start_s": float(i),
                "first_token_s": None if i == 2 else i + 0.1, "last_token_s": i + 1.0, "finish_s": i + 1.0,
                "deadline_s": math.nan, "output_tokens": 10, "batch_size": 1, "in_flight": 1, "prediction_cost_s": 0.0}

    def meta():
        return json.loads((tmp_path / "run" / "meta.json").read_text())

    for i in range(12):
        clock[0] = float(i)
        writer.add(row(i))  # one flush a row (flush_s 1.0, a second apart)
        parts = runfmt.load_run(tmp_path / "run")[1]
        assert len(parts) == i + 1  # every row written at once
        summary = meta()["summary"]
        # rows 1-4: under the threshold, every flush; then at t = 3 + 5 = 8 (9 rows), not between
        expected = i + 1 if i < 4 else 4 if i < 8 else 9
        assert summary["requests"] == expected, (i, summary["requests"])
    assert calls == [1, 2, 3, 4, 9]
    done = writer.close()
    assert done["complete"] and done["summary"]["requests"] == 12 and done["summary"]["completed"] == 12
    meta_, df = runfmt.load_run(tmp_path / "run")
    assert meta_["complete"] and len(df) == 12 and math.isnan(df.set_index("rid").loc["r2", "first_token_s"])
