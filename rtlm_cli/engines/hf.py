"""The transformers engine: a causal LM on cpu or cuda, generating through ``model.generate``.

Imports torch and transformers; nothing else in rtlm needs to. Stops on the chat template's
end-of-turn token(s), found in the template itself, because ``tokenizer.eos_token_id`` differs
between transformers versions for the same GGUF. Per-token times come from a stopping criterion
that only reads the clock (after a CUDA synchronize), so timing adds no extra device work.
"""

from __future__ import annotations

import inspect
import os
import time

from rtlm_cli.engines.base import BatchResult, Generation, GenerationSettings, ModelInfo
from rtlm_cli.engines.resolve import ensure_converted, resolve
from rtlm_cli.errors import RtlmError

END_OF_TURN_CANDIDATES = (
    "<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>",
)
DTYPES = ("auto", "float32", "float16", "bfloat16")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RtlmError(
                f"device {device!r} was asked for but torch {torch.__version__} sees no CUDA device: use --device cpu or auto"
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise RtlmError(
                f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        return f"cuda:{index}"
    raise RtlmError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")


def device_name(device: str) -> str:
    import platform

    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine() or "cpu"


class HFEngine:
    def __init__(self, model: str = "smollm2", device: str = "auto", dtype: str = "auto"):
        import torch

        if dtype not in DTYPES:
            raise RtlmError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
        self.device = resolve_device(device)
        resolved = resolve(model)
        t0 = time.perf_counter()
        self.tok, self.model = _load(resolved)
        torch_dtype = torch.float32 if dtype == "auto" else getattr(torch, dtype)
        self.model = self.model.to(device=self.device, dtype=torch_dtype).eval()
        self.tok.padding_side = "left"
        self.stop_tokens, self.stop_ids = _stop_tokens(self.tok, self.model)
        if self.tok.pad_token_id is None:
            self.tok.pad_token_id = self.stop_ids[0]
        self.chat = bool(getattr(self.tok, "chat_template", None))
        self.info = ModelInfo(
            model_id=model, resolved=resolved.source, model_hash=resolved.model_hash,
            dtype=str(torch_dtype).replace("torch.", ""), device=self.device,
            device_name=device_name(self.device), stop_tokens=self.stop_tokens,
            load_s=time.perf_counter() - t0,
        )

    # -- helpers --------------------------------------------------------------------------------
    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)

    def _templated(self, prompts: list[str]) -> list[str]:
        if not self.chat:
            return list(prompts)
        return [
            self.tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
            for p in prompts
        ]

    def _encode(self, prompts: list[str]):
        # The template already holds the special tokens: adding them again would double the BOS.
        return self.tok(
            self._templated(prompts), add_special_tokens=not self.chat, padding=True, return_tensors="pt"
        ).to(self.device)

    def prompt_tokens(self, prompts: list[str]) -> list[int]:
        texts = self._templated(prompts)
        return [len(ids) for ids in self.tok(texts, add_special_tokens=not self.chat)["input_ids"]]

    # -- generation ------------------------------------------------------------------------------
    def generate(self, prompts: list[str], settings: GenerationSettings) -> BatchResult:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        sync = self._sync

        class StepClock(StoppingCriteria):
            """Records when each new token exists; never stops anything."""

            def __init__(self):
                self.times: list[float] = []

            def __call__(self, input_ids, scores, **kwargs):
                sync()
                self.times.append(time.perf_counter())
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

        enc = self._encode(prompts)
        clock = StepClock()
        kwargs = dict(
            max_new_tokens=settings.max_new_tokens, eos_token_id=self.stop_ids,
            pad_token_id=self.tok.pad_token_id, stopping_criteria=StoppingCriteriaList([clock]),
            repetition_penalty=settings.repetition_penalty,
        )
        if settings.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=None)
            torch.manual_seed(settings.seed)  # generate() draws from torch's global generator only
        with torch.inference_mode():
            sync()
            t0 = time.perf_counter()
            out = self.model.generate(**enc, **kwargs)
            sync()
            wall = time.perf_counter() - t0
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        stop = set(self.stop_ids)
        gens = []
        for row, plen in zip(new, prompt_lens):
            n, ended = _answer_length(row, stop)
            n = min(n, len(clock.times)) or 1
            gens.append(Generation(
                prompt_tokens=int(plen), output_tokens=n, ended=ended,
                ttft_s=clock.times[0] - t0 if clock.times else wall,
                e2e_s=clock.times[n - 1] - t0 if clock.times else wall,
                text=self.tok.decode(row[:n], skip_special_tokens=True),
            ))
        return BatchResult(gens, wall_s=wall, prefill_s=gens[0].ttft_s if gens else float("nan"))

    def bare_generate(self, prompts: list[str], settings: GenerationSettings) -> int:
        """``model.generate`` with no timing and no bookkeeping (the benchmark's reference): new tokens."""
        import torch

        enc = self._encode(prompts)
        with torch.inference_mode():
            out = self.model.generate(
                **enc, max_new_tokens=settings.max_new_tokens, eos_token_id=self.stop_ids,
                pad_token_id=self.tok.pad_token_id, do_sample=False, temperature=None, top_p=None, top_k=None,
            )
        stop = set(self.stop_ids)
        return sum(_answer_length(row, stop)[0] for row in out[:, enc["input_ids"].shape[1]:].tolist())

    def prefill_probe(self, prompts: list[str], batch_size: int = 8):
        """What the model shows at prefill, per prompt: (entropy of the first-token distribution,
        its top-1 probability, the probability that the answer ends at once, and a vector: the hidden
        states at the last prompt position of the layers at 60%, 80% and 100% of the model's depth, and
        the final layer's averaged over the prompt) as numpy arrays. Prompts are batched by length to
        limit padding. Those layers were chosen by a sweep on the reference profile: ridge probes of
        the answer length on the last position's state rank best from 60% of the depth on, and
        averaging over the prompt ranks worse (docs/research.md has the figures).
        """
        import numpy as np
        import torch

        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        stats = np.zeros((len(prompts), 3), dtype=np.float64)
        size = int(self.model.config.hidden_size)
        hidden = np.zeros((len(prompts), (len(PROBE_DEPTHS) + 1) * size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                enc = self._encode([prompts[i] for i in idx])
                out = self.model(**enc, output_hidden_states=True, logits_to_keep=1)
                logp = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
                prob = logp.exp()
                entropy = -(prob * logp).sum(-1)
                stats[idx, 0] = entropy.cpu().numpy()
                stats[idx, 1] = prob.max(-1).values.cpu().numpy()
                stats[idx, 2] = prob[:, self.stop_ids].sum(-1).cpu().numpy()
                mask = enc["attention_mask"].unsqueeze(-1).float()
                states = out.hidden_states  # embeddings, then one per layer
                depth = len(states) - 1
                parts = [states[round(depth * f)][:, -1, :].float() for f in PROBE_DEPTHS]
                parts.append((states[-1].float() * mask).sum(1) / mask.sum(1))
                hidden[idx] = torch.cat(parts, dim=-1).cpu().numpy()
        return stats[:, 0], stats[:, 1], stats[:, 2], hidden

    def timing_point(self, batch: int, context: int, decode_steps: int) -> tuple[float, float]:
        """Prefill of ``batch`` x ``context`` synthetic tokens, then ``decode_steps`` one-token steps."""
        import torch

        gen = torch.Generator().manual_seed(batch * 100_003 + context)  # this sweep's own generator
        vocab = int(self.model.config.vocab_size)
        ids = torch.randint(100, vocab - 1, (batch, context), generator=gen).to(self.device)
        with torch.inference_mode():
            self._sync()
            t0 = time.perf_counter()
            out = self.model(input_ids=ids, use_cache=True)
            self._sync()
            prefill = time.perf_counter() - t0
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
            # transformers >= 5.2x names the forward argument `cache`; older releases `past_key_values`.
            cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
            t1 = time.perf_counter()
            for _ in range(decode_steps):
                out = self.model(input_ids=nxt, use_cache=True, **{cache_arg: past})
                past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
            self._sync()
            step = (time.perf_counter() - t1) / max(decode_steps, 1)
        return prefill, step


PROBE_DEPTHS = (0.6, 0.8, 1.0)  # layers whose last-position state the prefill probe keeps


def _answer_length(row: list[int], stop: set[int]) -> tuple[int, bool]:
    """(generated tokens up to and including the first stop token, whether one was reached)."""
    end = next((i for i, t in enumerate(row) if t in stop), None)
    return (len(row), False) if end is None else (end + 1, True)


def _load(resolved):
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    source = resolved.source
    if resolved.kind in ("embedded", "gguf"):
        source = str(ensure_converted(resolved))
    try:
        tok = AutoTokenizer.from_pretrained(source)
        lm = AutoModelForCausalLM.from_pretrained(source)
    except OSError as e:
        if resolved.kind == "hub":
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            why = "offline mode is on (HF_HUB_OFFLINE=1)" if offline else "it could not be fetched"
            raise RtlmError(
                f"model {source!r} is not a local path and {why}: pass 'smollm2', a .gguf file or a model directory"
            ) from None
        raise RtlmError(f"cannot load model from {source}: {str(e).splitlines()[0][:200]}") from None
    return tok, lm


def _stop_tokens(tok, model) -> tuple[list[str], list[int]]:
    template = getattr(tok, "chat_template", None) or ""
    vocab = tok.get_vocab()
    names = [t for t in END_OF_TURN_CANDIDATES if t in template and t in vocab]
    ids = [vocab[t] for t in names]
    extra = [tok.eos_token_id, getattr(model.generation_config, "eos_token_id", None)]
    for e in extra:
        for i in (e if isinstance(e, list) else [e]):
            if i is not None and i not in ids:
                ids.append(int(i))
                names.append(tok.convert_ids_to_tokens(int(i)))
    if not ids:
        raise RtlmError("the model's tokenizer names no end-of-turn or EOS token: rtlm cannot tell when an answer ends")
    return names, ids
