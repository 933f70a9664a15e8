"""The headline of a report: runs grouped by what makes them comparable, every policy in a group set
against a baseline (fcfs by default) — ratios of mean, median and p99 response time and TTFT,
goodput and deadline misses, and the share of the oracle's gain when the group has an oracle — and
one sentence per policy that says it. Runs that cannot be compared are kept apart, with the reason.

Comparable means the same workload on the same machine model: profile and token cap, mode, engine
and batching mode, static batch limit, arrival process, load (or rate), number of requests and seed.
How a policy is applied (direct or gateway dispatch, in-flight limit, offloading) is part of the
run's label, not of its group: a gateway run is set against the engine's own FCFS.
"""

from __future__ import annotations

import math

GROUP_KEYS = ("profile", "cap", "mode", "engine", "batching", "max_batch", "arrivals", "load", "num_requests", "seed")


def group_key(row: dict) -> tuple:
    return tuple(row.get(k) for k in GROUP_KEYS)


def label(row: dict) -> str:
    """A run's policy and how it was applied: 'rtlm', 'rtlm gateway K=16', 'rtlm offload'."""
    parts = [row["policy"]]
    if row.get("dispatch") == "gateway":
        parts.append(f"gateway K={row.get('inflight')}")
    if row.get("offload"):
        parts.append("offload")
    return " ".join(parts)


def describe_group(key: tuple) -> str:
    g = dict(zip(GROUP_KEYS, key))
    where = f"{g['mode']}" + (f" on {g['engine']}" if g["engine"] else "") + f", {g['batching']} batching"
    if g["max_batch"] and g["max_batch"] > 1:
        where += f" (batches of up to {g['max_batch']})"
    load = f"load {g['load']:.2f}" if isinstance(g["load"], float) else f"{g['arrivals']}"
    return f"{g['profile']} (cap {g['cap']}), {where}, {load}, {g['num_requests']} requests, seed {g['seed']}"


def _ratio(a, b):
    if a is None or b is None or not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        return None
    if math.isnan(a) or math.isnan(b) or b == 0:
        return None
    return a / b


def headline(rows: list[dict], baseline: str = "fcfs") -> tuple[list[dict], list[dict]]:
    """(comparison rows, runs kept apart with the reason)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(group_key(r), []).append(r)
    out, apart = [], []
    for key, runs in groups.items():
        base = [r for r in runs if label(r) == baseline] or [r for r in runs if r["policy"] == baseline]
        if not base:
            apart += [{"run": r["run"], "why": f"no {baseline} run of the same workload to compare with "
                                                f"({describe_group(key)})"} for r in runs]
            continue
        b = base[0]
        oracles = {r.get("dispatch"): r for r in runs if r["policy"] == "oracle"}
        for r in runs:
            if r is b:
                continue
            oracle = oracles.get(r.get("dispatch")) or next(iter(oracles.values()), None)
            gain = None
            if oracle is not None and r["policy"] != "oracle":
                span = b["e2el_mean_s"] - oracle["e2el_mean_s"]
                gain = (b["e2el_mean_s"] - r["e2el_mean_s"]) / span if span > 0 else None
            row = {"group": describe_group(key), "workload": describe_group(key[:-1] + ("*",)), "run": r["run"], "policy": label(r), "baseline": b["run"],
                   "e2el_mean_vs_baseline": _ratio(r["e2el_mean_s"], b["e2el_mean_s"]),
                   "e2el_p50_vs_baseline": _ratio(r["e2el_p50_s"], b["e2el_p50_s"]),
                   "e2el_p99_vs_baseline": _ratio(r["e2el_p99_s"], b["e2el_p99_s"]),
                   "ttft_mean_vs_baseline": _ratio(r["ttft_mean_s"], b["ttft_mean_s"]),
                   "ttft_p50_vs_baseline": _ratio(r["ttft_p50_s"], b["ttft_p50_s"]),
                   "ttft_p99_vs_baseline": _ratio(r["ttft_p99_s"], b["ttft_p99_s"]),
                   "goodput_vs_baseline": _ratio(r.get("request_goodput_rps") or r.get("goodput_rps"),
                                                 b.get("request_goodput_rps") or b.get("goodput_rps")),
                   "deadline_miss_rate": r.get("deadline_miss_rate"),
                   "baseline_deadline_miss_rate": b.get("deadline_miss_rate"),
                   "oracle_gain_share": gain,
                   "oracle_vs_baseline": _ratio(oracle["e2el_mean_s"], b["e2el_mean_s"]) if oracle else None,
                   "real": r.get("mode") == "real", "batching": r.get("batching"),
                   "oracle_policy": oracle["policy"] if oracle else None}
            row["sentence"] = sentence(row, baseline)
            out.append(row)
        if len(runs) == 1:
            apart.append({"run": b["run"], "why": "the only run of its workload: nothing to compare with"})
    return out, apart


def _change(ratio: float) -> tuple[str, str]:
    return ("cut", f"by {1 - ratio:.0%}") if ratio < 1 else ("raised", f"by {ratio - 1:.0%}")


def sentence(row: dict, baseline: str) -> str:
    """E.g. 'rtlm cut the mean response time by 12% and the median by 58% against fcfs, took 68% of
    what the oracle could, and paid 3.2x fcfs's p99.'"""
    m, p50, p99 = row["e2el_mean_vs_baseline"], row["e2el_p50_vs_baseline"], row["e2el_p99_vs_baseline"]
    if m is None:
        return f"{row['policy']}: no finished request to compare"
    verb, by = _change(m)
    text = f"{row['policy']} {verb} the mean response time {by}"
    if p50 is not None:
        verb50, by50 = _change(p50)
        text += f" and {'the' if verb50 == verb else verb50 + ' the'} median {by50}"
    text += f" against {baseline}"
    if row["oracle_gain_share"] is not None:
        text += f", took {row['oracle_gain_share']:.0%} of what the oracle could"
    if p99 is not None:
        text += f", and {'paid' if p99 > 1 else 'kept'} {p99:.2g}x {baseline}'s p99"
    return text + "." + "".join(f" {note}" for note in trust_notes(row))


def trust_notes(row: dict) -> list[str]:
    """What keeps a comparison from being trusted as it stands: an oracle that was beaten (no bound
    in that run, and the likely reason), a real comparison from a single draw."""
    notes = []
    if row["oracle_gain_share"] is not None and row["oracle_gain_share"] > 1:
        why = ("real runs of one workload differ by several percent from draw to draw" if row.get("real")
               else "shortest true answer first is the best order for one request at a time, not always "
                    "for an engine that batches")
        notes.append(f"The oracle was no bound in this run ({row['policy']} beat it): {why}.")
    if row.get("real"):
        notes.append("One real draw: identical real runs here differ by about 8%; repeat with other --seed values "
                     "for an interval (rtlm report shows one across seeds).")
    return notes


def across_seeds(rows: list[dict]) -> list[dict]:
    """Each policy over the seeds (draws) of one workload, where there are two or more: its mean
    response time against the baseline with a 95% t-interval over the draws, the range of its median
    and p99 ratios, and the oracle's gain share (mean of the draws') with its range."""
    from scipy import stats

    by: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["e2el_mean_vs_baseline"] is not None:
            by.setdefault((r["workload"], r["policy"]), []).append(r)
    out = []
    for (workload, policy), rs in by.items():
        if len(rs) < 2:
            continue
        ratios = [r["e2el_mean_vs_baseline"] for r in rs]
        mean = sum(ratios) / len(ratios)
        sd = math.sqrt(sum((x - mean) ** 2 for x in ratios) / (len(ratios) - 1))
        shares = [r["oracle_gain_share"] for r in rs if r["oracle_gain_share"] is not None]
        others = {k: [r[k] for r in rs if r[k] is not None] for k in ("e2el_p50_vs_baseline", "e2el_p99_vs_baseline")}
        out.append({"workload": workload, "policy": policy, "draws": len(rs), "e2el_mean_vs_baseline": mean,
                    "ci95": float(stats.t.ppf(0.975, len(rs) - 1) * sd / math.sqrt(len(rs))),
                    **{k: [min(v), max(v)] if v else None for k, v in others.items()},
                    "oracle_gain_share_mean": sum(shares) / len(shares) if shares else None,
                    "oracle_gain_share_range": [min(shares), max(shares)] if shares else None})
    return out


def across_line(a: dict, baseline: str) -> str:
    """'rtlm: mean response 0.91x fcfs's ± 0.03 (95% interval over 3 seeds), 62% of the oracle's gain (draws 40% to 81%)'"""
    text = f"{a['policy']}: mean response {a['e2el_mean_vs_baseline']:.3f}x {baseline}'s ± {a['ci95']:.3f} (95% interval)"
    if a["oracle_gain_share_mean"] is not None:
        lo, hi = a["oracle_gain_share_range"]
        text += f", {a['oracle_gain_share_mean']:.0%} of the oracle's gain (draws {lo:.0%} to {hi:.0%})"
    return text
