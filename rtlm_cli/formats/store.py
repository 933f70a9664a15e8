"""Artifact directories on disk: atomic writes, ``meta.json`` with provenance, sharded records.

Every finished artifact (a predictor, a run) is written by ``artifact_dir``: into a hidden temporary
directory beside it, then renamed into place, so a failed or interrupted job leaves the old one
intact; ``check_output`` is the one refusal of an existing output without ``--overwrite``. A
profile is the exception: it grows request by request and resumes, so it journals (below).

A record directory (``requests/`` of a profile) holds Parquet shards ``part-NNNNN.parquet`` and,
while a job runs, a journal ``.journal.jsonl`` that gets one fsync'd line per finished request,
so that a kill loses nothing. Journal lines are folded into a new shard every few requests and at
the end. Readers (``read_records``) take the shards plus any journal left by a killed job. Files
whose names start with '.' are skipped by pyarrow and duckdb directory readers.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from rtlm_cli.errors import RtlmError

JOURNAL = ".journal.jsonl"
TRACKED_PACKAGES = ("rtlm", "torch", "transformers", "datasets", "pandas", "pyarrow", "lightgbm", "numpy")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # mkstemp makes 0600 files; artifacts are meant to be shared


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output(out: Path, overwrite: bool, option: str = "--out", remedy: str = "pass --overwrite") -> None:
    """Refuse an existing, non-empty output unless ``overwrite`` (it is replaced only once the new one is
    written); the error says to choose another ``option`` or ``remedy``."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise RtlmError(f"output {out} already exists: choose another {option} or {remedy}")


@contextlib.contextmanager
def artifact_dir(out: Path):
    """Yields an empty temporary directory beside ``out``; when the block succeeds it becomes ``out``
    (an old ``out`` is moved aside, then deleted), when it fails it is deleted and ``out`` is untouched."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 directories
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _json_default(obj):
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _clean(obj):
    """NaN/inf -> None, so that meta.json is strict JSON any reader accepts."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(_clean(obj), indent=2, default=_json_default) + "\n").encode())


def atomic_write_parquet(df, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False, compression="zstd")
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_meta(directory: Path, kind: str) -> dict:
    path = directory / "meta.json"
    if not path.is_file():
        raise RtlmError(f"{directory} is not an rtlm {kind}: it has no meta.json")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RtlmError(f"{path} is unreadable ({e}): the {kind} is damaged") from None
    if meta.get("kind") != f"rtlm.{kind}":
        raise RtlmError(f"{directory} is not an rtlm {kind}: its meta.json says {meta.get('kind')!r}")
    return meta


def package_versions() -> dict[str, str | None]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def git_revision(ignore: Path | None = None, where: Path | None = None) -> str | None:
    """The git revision of the rtlm source tree (or of the tree ``where`` lies in), or None when rtlm
    runs from an installed copy; ``+dirty`` when a tracked file differs from it, ``ignore`` (a file
    being written, such as a benchmark's own record, when it lies in the tree) aside."""
    here = Path(where) if where is not None else Path(__file__).resolve().parent

    def git(*args):
        return subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=5)

    try:
        rev, top = git("rev-parse", "HEAD"), git("rev-parse", "--show-toplevel")
        if rev.returncode != 0 or top.returncode != 0:
            return None
        root, spec = Path(top.stdout.strip()).resolve(), []
        if ignore is not None and Path(ignore).resolve().is_relative_to(root):
            spec = ["--", ":(top)", f":(top,exclude){Path(ignore).resolve().relative_to(root)}"]
        dirty = git("status", "--porcelain", "--untracked-files=no", *spec)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if dirty.returncode != 0:
        return rev.stdout.strip() + "+unknown"
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def provenance(ignore: Path | None = None) -> dict:
    return {
        "versions": package_versions(),
        "git_revision": git_revision(ignore),
        "host": {"machine": platform.machine(), "system": platform.system(), "cpu_count": os.cpu_count()},
    }


class RecordShards:
    """Append-only records in ``directory``: a journal line per record, Parquet shards in batches."""

    def __init__(self, directory: Path, key: str, flush_every: int = 32):
        self.dir = directory
        self.key = key
        self.flush_every = flush_every
        self.pending: list[dict] = []
        self._journal = None

    def _next_shard(self) -> Path:
        parts = sorted(self.dir.glob("part-*.parquet"))
        n = int(parts[-1].stem.split("-")[1]) + 1 if parts else 0
        return self.dir / f"part-{n:05d}.parquet"

    def recover(self) -> int:
        """Fold a journal left by a killed job into a shard; the number of records recovered."""
        rows = _read_journal(self.dir / JOURNAL)
        if rows:
            # A kill between writing a shard and deleting the journal leaves both: keep one copy.
            have = set(read_records(self.dir, exclude_journal=True).get(self.key, []))
            rows = [r for r in rows if r.get(self.key) not in have]
        if rows:
            import pandas as pd

            atomic_write_parquet(pd.DataFrame(rows), self._next_shard())
        (self.dir / JOURNAL).unlink(missing_ok=True)
        return len(rows)

    def append(self, records: list[dict]) -> None:
        if self._journal is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._journal = open(self.dir / JOURNAL, "a", encoding="utf-8")
        for rec in records:
            self._journal.write(json.dumps(rec, default=_json_default) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())
        self.pending.extend(records)
        if len(self.pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        import pandas as pd

        atomic_write_parquet(pd.DataFrame(self.pending), self._next_shard())
        self.pending = []
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        (self.dir / JOURNAL).unlink(missing_ok=True)

    def close(self) -> None:
        self.flush()


def _read_journal(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by the kill: everything before it is whole
    return rows


def read_records(directory: Path, key: str | None = None, exclude_journal: bool = False):
    """All records of a record directory as one DataFrame (shards, then any journal left behind)."""
    import pandas as pd

    frames = [pd.read_parquet(p) for p in sorted(directory.glob("part-*.parquet"))]
    journal = [] if exclude_journal else _read_journal(directory / JOURNAL)
    if journal:
        frames.append(pd.DataFrame(journal))
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    if key is not None and key in df:
        df = df.drop_duplicates(subset=key, keep="first").reset_index(drop=True)
    return df


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
