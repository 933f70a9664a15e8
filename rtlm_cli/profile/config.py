"""Settings of each job as plain dataclasses. Building one touches no disk and loads nothing."""

from __future__ import annotations

from dataclasses import dataclass, field

from rtlm_cli.engines import EngineConfig
from rtlm_cli.engines.base import GenerationSettings
from rtlm_cli.errors import RtlmError

# --calibrate's default grid fits a few minutes on a 2-core CPU; --full-calibration sweeps the full one
CPU_CALIBRATION_BATCHES = (1, 4, 16)
CUDA_CALIBRATION_BATCHES = (1, 8, 32, 128)
CALIBRATION_CONTEXTS = (128, 512)
FULL_CPU_CALIBRATION_BATCHES = (1, 2, 4, 8, 16)
FULL_CALIBRATION_CONTEXTS = (128, 512, 1024)


@dataclass(frozen=True)
class ProfileConfig:
    out: str = field(default="profiles/smollm2-sharegpt", metadata={"help": "Profile directory to write. Rerunning the same command resumes it."})
    model: str = field(default="smollm2", metadata={"help": "'smollm2' (embedded, offline), a .gguf file, a transformers model directory, a hub name (online), or 'fake' (test double)."})
    prompts: str = field(default="sharegpt", metadata={"help": "'sharegpt' (bundled ShareGPT V3 first user turns), a .json/.jsonl/.csv/.parquet/.txt file, or a hub dataset name (online)."})
    text_column: str | None = field(default=None, metadata={"help": "Column holding the prompt text in a prompt file (default: prompt, text, instruction, question, input or conversations)."})
    num_prompts: int = field(default=16, metadata={"help": "How many prompts to profile: a seeded random sample of the source (a larger -n with the same seed extends a smaller one)."})
    seed: int = field(default=0, metadata={"help": "Seed of the prompt sample and of sampling (each sampled answer's own seed is derived from it and recorded: sample_seed)."})
    samples: int = field(default=1, metadata={"help": "Answers per prompt (with --temperature > 0): each its own row (sample 0..S-1) with its own recorded seed, so a request with that seed reproduces it through a server that honours seeds (vLLM)."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N."})
    dtype: str = field(default="auto", metadata={"help": "auto (float32), float32, float16 or bfloat16."})
    batch_size: int = field(default=1, metadata={"help": "Requests generated together (padded batch)."})
    max_prompt_tokens: int = field(default=1024, metadata={"help": "Skip prompts longer than this many tokens (after the chat template)."})
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    calibrate: bool = field(default=False, metadata={"help": "Also sweep batch sizes x context lengths with synthetic tokens: the device's timing table (timing.parquet)."})
    calibration_batches: tuple[int, ...] | None = field(default=None, metadata={"help": f"Batch sizes to sweep, e.g. 1,2,4,8 (default: {','.join(map(str, CPU_CALIBRATION_BATCHES))} on CPU, {','.join(map(str, FULL_CPU_CALIBRATION_BATCHES))} with --full-calibration; {','.join(map(str, CUDA_CALIBRATION_BATCHES))} on CUDA)."})
    calibration_contexts: tuple[int, ...] | None = field(default=None, metadata={"help": f"Context lengths to sweep (default: {','.join(map(str, CALIBRATION_CONTEXTS))}; {','.join(map(str, FULL_CALIBRATION_CONTEXTS))} with --full-calibration)."})
    full_calibration: bool = field(default=False, metadata={"help": "--calibrate's full grid (about four times the default's time on a CPU): more batch sizes and context 1024."})
    engine: EngineConfig = field(default_factory=EngineConfig)
    max_concurrency: int = field(default=64, metadata={"help": "vllm/openai engines: requests in flight at once while profiling (the server batches them continuously; more than it runs at once keeps it full)."})
    calibration_steps: int = field(default=16, metadata={"help": "Decode steps timed per cell of the timing table (more: steadier cells where a step is a few milliseconds, as on a GPU)."})
    calibration_repeats: int = field(default=3, metadata={"help": "Times each cell is measured (the table keeps the median)."})
    flush_every: int = 32

    def validate(self) -> "ProfileConfig":
        g = self.generation
        checks = [
            (self.num_prompts >= 0, f"--num-prompts must be >= 0, got {self.num_prompts}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (g.max_new_tokens >= 1, f"--max-new-tokens must be >= 1, got {g.max_new_tokens}"),
            (self.max_prompt_tokens >= 1, f"--max-prompt-tokens must be >= 1, got {self.max_prompt_tokens}"),
            (self.calibration_steps >= 2, f"--calibration-steps must be >= 2, got {self.calibration_steps}"),
            (self.calibration_repeats >= 1, f"--calibration-repeats must be >= 1, got {self.calibration_repeats}"),
            (g.temperature >= 0, f"--temperature must be >= 0, got {g.temperature}"),
            (0 < g.top_p <= 1, f"--top-p must be in (0, 1], got {g.top_p}"),
            (g.repetition_penalty > 0, f"--repetition-penalty must be > 0, got {g.repetition_penalty}"),
            (all(b >= 1 for b in self.calibration_batches or (1,)), "calibration batch sizes must be >= 1"),
            (all(c >= 1 for c in self.calibration_contexts or (1,)), "calibration contexts must be >= 1"),
            (self.num_prompts > 0 or self.calibrate, "--num-prompts 0 profiles nothing: add --calibrate or ask for prompts"),
            (self.max_concurrency >= 1, f"--max-concurrency must be >= 1, got {self.max_concurrency}"),
            (self.samples >= 1, f"--samples must be >= 1, got {self.samples}"),
            (self.samples == 1 or not g.greedy, f"--samples {self.samples} needs --temperature > 0: greedy answers to one prompt are all the same"),
            (self.samples == 1 or self.engine.is_server or self.batch_size == 1,
             "--samples > 1 on the hf engine needs --batch-size 1 (each answer its own seed; a padded batch shares one): "
             "or profile through a server (--engine vllm)"),
            (not self.engine.is_server or self.batch_size == 1, "--batch-size is for the hf engine: a server batches by itself (use --max-concurrency)"),
        ]
        for ok, message in checks:
            if not ok:
                raise RtlmError(message)
        self.engine.validate()
        return self
