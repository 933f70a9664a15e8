"""The rows a predictor is trained on: profiles of one model, one token cap and one decoding (a
sampled profile contributes every answer), and seeded splits by prompt (a prompt's answers are never
on both sides)."""

from __future__ import annotations

import numpy as np

from rtlm_cli.errors import RtlmError
from rtlm_cli.formats import profile as profile_format


def _sampling(meta: dict) -> tuple:
    """What makes two profiles' lengths one distribution: greedy, or sampling at a temperature and top-p."""
    d = meta.get("decoding", {})
    return ("greedy",) if not d.get("temperature") else ("sampling", d["temperature"], d.get("top_p", 1.0))


def load_training_data(paths: tuple[str, ...]):
    """(rows, metas) of profiles that share a model, a token cap and a decoding; duplicate answers
    dropped (by prompt; in sampled profiles by answer, every answer of a prompt kept)."""
    import pandas as pd

    frames, metas = [], []
    for p in paths:
        meta, df = profile_format.load_nonempty(p, f": run `rtlm profile --out {p}` first", samples_ok=True)
        if profile_format.SAMPLE_KEY not in df:
            df = df.assign(**{profile_format.SAMPLE_KEY: df["prompt_id"]})
        frames.append(df.assign(_profile=str(p)))
        metas.append(meta)
    base = metas[0]
    for p, m in zip(paths[1:], metas[1:]):
        if m["model"]["model_hash"] != base["model"]["model_hash"]:
            raise RtlmError(f"profile {p} was made with another model than {paths[0]}: train on one model's profiles")
        if profile_format.cap(m) != profile_format.cap(base):
            raise RtlmError(f"profile {p} used another --max-new-tokens than {paths[0]}: lengths are not comparable")
        if _sampling(m) != _sampling(base):
            raise RtlmError(f"profile {p} was decoded {'/'.join(map(str, _sampling(m)))} but {paths[0]} "
                            f"{'/'.join(map(str, _sampling(base)))}: train on profiles of one decoding")
    df = pd.concat(frames, ignore_index=True).drop_duplicates(profile_format.SAMPLE_KEY).reset_index(drop=True)
    return df, metas


def sampled(metas: list[dict]) -> bool:
    return any(profile_format.samples(m) > 1 for m in metas)


def split_by_prompt(prompt_ids, test_size: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows: a seeded share of the distinct prompts."""
    ids = np.asarray(sorted(set(prompt_ids)))
    rng = np.random.default_rng(seed)  # the split's own generator
    held = set(rng.choice(ids, size=max(1, int(round(len(ids) * test_size))), replace=False))
    return np.asarray([pid in held for pid in prompt_ids])
