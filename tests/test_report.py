"""rtlm report on small hand-made runs with known percentiles, plus profiles and predictors."""

import base64
import json
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from helpers import one_line_error

from rtlm_cli.formats.run import SCHEMA_VERSION, load_run, write_run


def make_run(path, e2e, policy="fcfs", load=0.5, status=None, schema=None, profile="prof-a", seed=0, mode="simulated"):
    n = len(e2e)
    recs = []
    for i, e in enumerate(e2e):
        recs.append({"rid": i, "prompt_id": f"p{i}", "arrival_s": float(i), "start_s": float(i) + 0.1 * e,
                     "first_token_s": float(i) + 0.2 * e, "last_token_s": float(i) + e, "finish_s": float(i) + e, "backend": "w0", "batch_id": i,
                     "batch_size": 1, "in_flight": 1, "prompt_tokens": 10, "output_tokens": 11, "true_tokens": 11,
                     "predicted_tokens": 30.0 * (i + 1), "p90_tokens": 40.0, "uncertainty": 0.5, "predicted_service_s": 1.0,
                     "deadline_s": float(i) + 5.0, "prediction_cost_s": 2e-4,
                     "status": (status or ["finished"] * n)[i], "ended": True, "error": ""})
    meta = write_run(path, recs, {"policy": policy, "mode": mode, "engine": None, "max_batch": 1, "cap": 256,
                                  "profile": profile, "seed": seed, "workers": [{"name": "w0"}],
                                  "workload": {"offered_load": load, "rate_rps": load, "arrivals": "poisson",
                                               "num_requests": n}})
    if schema is not None:
        m = json.loads((path / "meta.json").read_text())
        m["schema_version"] = schema
        if schema == 1:  # what rtlm wrote before the mode/engine split
            del m["mode"]
            m["engine"] = "simulator"
        (path / "meta.json").write_text(json.dumps(m))
    return meta


def test_known_percentiles_and_slo(run_cli, tmp_path):
    e2e = [1.0, 2.0, 3.0, 4.0, 10.0]
    make_run(tmp_path / "a", e2e)
    r = run_cli("report", tmp_path / "a", "--json")
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)["runs"][0]
    assert row["e2el_mean_s"] == pytest.approx(4.0)
    assert row["e2el_p50_s"] == pytest.approx(3.0)
    assert row["e2el_p90_s"] == pytest.approx(np.percentile(e2e, 90))
    assert row["e2el_p99_s"] == pytest.approx(np.percentile(e2e, 99))
    assert row["ttft_p50_s"] == pytest.approx(0.6) and row["queue_p50_s"] == pytest.approx(0.3)
    assert row["tpot_p50_s"] == pytest.approx(0.24)  # (3.0 - 0.6) / 10
    assert row["deadline_miss_rate"] == pytest.approx(0.2)  # only the 10 s one misses its 5 s deadline
    assert row["throughput_rps"] == pytest.approx(5 / 14.0)  # last finish 4 + 10 = 14
    assert row["prediction_cost_us"] == pytest.approx(200)
    buckets = json.loads(r.stdout)["run_buckets"]
    # buckets are the run's own quartiles of predicted length (30, 60, 90, 120, 150 tokens)
    assert {b["predicted_tokens"]: b["requests"] for b in buckets} == {"30-60": 2, "60-90": 1, "90-120": 1, "120-150": 1}


def test_failed_requests_are_counted_not_timed(run_cli, tmp_path):
    make_run(tmp_path / "f", [1.0, 2.0, 30.0], status=["finished", "finished", "failed"])
    row = json.loads(run_cli("report", tmp_path / "f", "--json").stdout)["runs"][0]
    assert row["completed"] == 2 and row["failed"] == 1 and row["e2el_mean_s"] == pytest.approx(1.5)


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables = [], 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self.tables += tag == "table"


def test_sweep_plots_html_csv(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    for pol, scale in (("fcfs", 2.0), ("rtlm", 1.0)):
        for load in (0.5, 0.9):
            make_run(sweep / f"{pol}-load{load}", list(np.linspace(1, 5, 20) * scale * (1 + load)), policy=pol, load=load)
    r = run_cli("report", sweep, "--plots", tmp_path / "figs", "--html", tmp_path / "r.html", "--csv", tmp_path / "csv")
    assert r.exit_code == 0, r.output
    pngs = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert pngs == ["latency_vs_load.png", "queue_length.png", "response_cdf.png"]
    for p in (tmp_path / "figs").iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    parser = _Images()
    parser.feed((tmp_path / "r.html").read_text())
    assert len(parser.images) == 3 and parser.tables >= 2
    for src in parser.images:  # self-contained: every figure is inline and decodes as a PNG
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    assert len(pd.read_csv(tmp_path / "csv" / "runs.csv")) == 4
    assert "fcfs-load0.9" in r.output


def test_profile_and_predictor_reports(run_cli, tmp_path, prompt_file):
    prof = tmp_path / "prof"
    assert run_cli("profile", "--model", "fake", "-n", 40, "--out", prof).exit_code == 0
    assert run_cli("train-predictor", prof, "--out", tmp_path / "pred", "--rounds", 20, "--no-ablation").exit_code == 0
    r = run_cli("report", prof, tmp_path / "pred", "--json", "--plots", tmp_path / "figs")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["profiles"][0]["requests"] == 40 and data["profiles"][0]["spearman_tokens_vs_uncertainty_score"] > 0.5
    assert [q["quartile"] for q in data["profile_quartiles"]["prof"]][0] == "Q1 (least)"
    assert any(p["kind"] == "chosen" for p in data["predictors"])
    assert {"predicted_vs_actual.png", "latency_vs_uncertainty.png"} <= {p.name for p in (tmp_path / "figs").iterdir()}


def test_schema_1_runs_are_read_and_upgraded(run_cli, tmp_path):
    make_run(tmp_path / "old", [1.0, 2.0], schema=1)
    make_run(tmp_path / "new", [1.0, 3.0])
    meta, df = load_run(tmp_path / "old")
    assert meta["schema_version"] == SCHEMA_VERSION and meta["upgraded_from"] == 1
    assert (meta["mode"], meta["engine"], meta["batching"], meta["dispatch"]) == ("simulated", None, "static", "batches")
    assert (df["in_flight"] == df["batch_size"]).all()  # a static batch is what its worker held
    r = run_cli("report", tmp_path / "old", tmp_path / "new", "--json")
    assert r.exit_code == 0, r.output
    assert [row["mode"] for row in json.loads(r.stdout)["runs"]] == ["simulated", "simulated"]


def test_schema_2_server_runs_move_in_flight_out_of_batch_size(tmp_path):
    make_run(tmp_path / "old", [1.0, 2.0], schema=2)
    m = json.loads((tmp_path / "old" / "meta.json").read_text())
    m.update(batching="continuous", dispatch="gateway", engine_settings={"priority_order": "higher-first"})
    (tmp_path / "old" / "meta.json").write_text(json.dumps(m))
    df = pd.read_parquet(tmp_path / "old" / "requests.parquet").drop(columns="in_flight").assign(batch_size=[3, 5])
    df.to_parquet(tmp_path / "old" / "requests.parquet")  # schema 2: batch_size held "in flight at the send"
    meta, df = load_run(tmp_path / "old")
    assert (meta["dispatch"], meta["executes"], meta["priority_order"]) == ("gateway", "serving-engine", "higher-first")
    assert df["in_flight"].tolist() == [3, 5] and (df["batch_size"] == 0).all()


def test_bad_inputs(run_cli, tmp_path):
    def bad(*args):
        r = run_cli("report", *args)
        assert r.exit_code == 2, r.output
        return one_line_error(r)

    (tmp_path / "plain").mkdir()
    assert "not an rtlm run" in bad(tmp_path / "plain")
    assert "not a directory" in bad(tmp_path / "missing")
    make_run(tmp_path / "v2", [1.0, 2.0])
    make_run(tmp_path / "v9", [1.0, 2.0], schema=9)
    assert "schema version 9" in bad(tmp_path / "v2", tmp_path / "v9") and "upgrade rtlm" in bad(tmp_path / "v9")
    empty = tmp_path / "empty"
    make_run(empty, [1.0])
    pd.DataFrame(columns=pd.read_parquet(empty / "requests.parquet").columns).to_parquet(empty / "requests.parquet")
    assert "holds no requests" in bad(empty)


def test_the_headline_compares_only_comparable_runs(run_cli, tmp_path):
    e2e = list(np.linspace(1, 9, 9))
    make_run(tmp_path / "fcfs", e2e, "fcfs", 0.9)
    make_run(tmp_path / "rtlm", [x * 0.8 for x in e2e], "rtlm", 0.9)
    make_run(tmp_path / "oracle", [x * 0.6 for x in e2e], "oracle", 0.9)
    make_run(tmp_path / "rtlm-other-load", e2e, "rtlm", 0.5)  # no fcfs at load 0.5
    make_run(tmp_path / "fcfs-other-profile", e2e, "fcfs", 0.9, profile="prof-b")  # another workload
    r = run_cli("report", *(tmp_path / n for n in ("fcfs", "rtlm", "oracle", "rtlm-other-load", "fcfs-other-profile")),
                "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert list(data)[:2] == ["headline", "kept_apart"]  # the comparison comes first
    rows = {h["policy"]: h for h in data["headline"]}
    assert set(rows) == {"rtlm", "oracle"} and {h["baseline"] for h in data["headline"]} == {"fcfs"}
    rt = rows["rtlm"]
    assert rt["e2el_mean_vs_baseline"] == pytest.approx(0.8) and rt["e2el_p99_vs_baseline"] == pytest.approx(0.8)
    assert rt["oracle_gain_share"] == pytest.approx(0.5)  # (5 - 4) / (5 - 3)
    assert rt["sentence"] == ("rtlm cut the mean response time by 20% and the median by 20% against fcfs, took 50% of "
                              "what the oracle could, and kept 0.8x fcfs's p99.")
    apart = {a["run"]: a["why"] for a in data["kept_apart"]}
    assert "no fcfs run of the same workload" in apart["rtlm-other-load"]
    assert "the only run of its workload" in apart["fcfs-other-profile"]
    r = run_cli("report", tmp_path / "fcfs", tmp_path / "rtlm", "--baseline", "rtlm", "--json")
    assert json.loads(r.stdout)["headline"][0]["e2el_mean_vs_baseline"] == pytest.approx(1.25)
    text = " ".join(run_cli("report", tmp_path / "fcfs", tmp_path / "rtlm", tmp_path / "oracle").output.split())
    assert "against fcfs" in text and "0.80x" in text and "50%" in text  # human units in the terminal


def test_a_beaten_oracle_and_a_single_real_draw_are_said_and_seeds_give_an_interval(run_cli, tmp_path):
    e2e = list(np.linspace(1, 9, 9))
    for seed, (rtlm, oracle) in enumerate([(0.7, 0.8), (0.8, 0.6), (0.9, 0.7)]):
        make_run(tmp_path / f"fcfs{seed}", e2e, "fcfs", seed=seed, mode="real")
        make_run(tmp_path / f"rtlm{seed}", [x * rtlm for x in e2e], "rtlm", seed=seed, mode="real")
        make_run(tmp_path / f"oracle{seed}", [x * oracle for x in e2e], "oracle", seed=seed, mode="real")
    r = run_cli("report", *sorted(tmp_path.iterdir()), "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    beaten = next(h for h in data["headline"] if h["policy"] == "rtlm" and h["oracle_gain_share"] > 1)  # seed 0
    assert "The oracle was no bound in this run (rtlm beat it)" in beaten["sentence"]
    assert all("One real draw" in h["sentence"] for h in data["headline"])
    across = {a["policy"]: a for a in data["across_seeds"]}
    assert across["rtlm"]["draws"] == 3 and across["rtlm"]["e2el_mean_vs_baseline"] == pytest.approx(0.8)
    assert across["rtlm"]["ci95"] == pytest.approx(4.303 * 0.1 / 3 ** 0.5, rel=1e-3)  # t(0.975, 2) x sd / sqrt(n)
    assert across["rtlm"]["oracle_gain_share_range"] == pytest.approx([1 / 3, 1.5])  # 0.1/0.3 .. 0.3/0.2
    runs = sorted(tmp_path.iterdir())
    text = " ".join(run_cli("report", *runs, "--html", tmp_path / "r.html").output.split())
    assert "over 3 seeds of" in text and "0.800x fcfs's ± 0.248 (95% interval)" in text
    assert "The oracle was no bound in this run (rtlm beat it)" in text
    page = (tmp_path / "r.html").read_text()
    assert "The oracle was no bound in this run (rtlm beat it)" in page and "Over 3 seeds of" in page


def test_human_units():
    from rtlm_cli.report.units import gib, human, ratio, seconds, share

    assert (seconds(0.0123), seconds(12.345), seconds(1234.4), seconds(None)) == ("12.3 ms", "12.3 s", "1,234 s", "-")
    assert (ratio(0.876), share(0.684), gib(2**31)) == ("0.88x", "68%", "2.00 GiB")
    assert human("e2el_p99_s", 3.21) == "3.21 s" and human("deadline_miss_rate", 0.05) == "5%"


@pytest.mark.browser
def test_the_page_in_a_real_browser(run_cli, tmp_path, prompt_file):
    """Headless Chromium at 1280 px: the headline table is visible, every figure decodes, and the page
    does not scroll sideways (Chromium comes from scripts/test.sh, which installs it)."""
    from browser import evaluate

    sweep = tmp_path / "sweep"
    for pol, scale in (("fcfs", 2.0), ("rtlm", 1.2), ("oracle", 1.0)):
        for load in (0.5, 0.9):
            make_run(sweep / f"{pol}-load{load}", list(np.linspace(1, 5, 30) * scale * (1 + load)), policy=pol, load=load)
    prof = tmp_path / "prof"
    assert run_cli("profile", "--model", "fake", "-n", 40, "--out", prof).exit_code == 0
    assert run_cli("train-predictor", prof, "--out", tmp_path / "pred", "--rounds", 20, "--no-ablation").exit_code == 0
    page = tmp_path / "report.html"
    assert run_cli("report", sweep, prof, tmp_path / "pred", "--html", page).exit_code == 0
    got = evaluate(page.as_uri(), """({
        headline: (() => { const t = document.querySelector('#headline table');
                           if (!t) return false; const r = t.getBoundingClientRect();
                           return r.width > 0 && r.height > 0 && r.top < window.innerHeight * 2; })(),
        images: Array.from(document.images).map(i => i.naturalWidth),
        scroll: document.documentElement.scrollWidth, width: document.documentElement.clientWidth,
        viewport: window.innerWidth})""")
    assert got["headline"] is True
    assert len(got["images"]) >= 4 and min(got["images"]) > 0  # every figure decoded
    assert got["viewport"] == 1280 and got["scroll"] <= got["width"]  # nothing sideways at 1280 px
