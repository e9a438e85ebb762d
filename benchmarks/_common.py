"""Helpers shared by the Hybrid-Tower cost benchmarks.

Used by ``bench_query_cost.py``, ``bench_video_cost.py`` and ``bench_train_step.py`` (run as scripts from
the repository root: ``python benchmarks/<script>.py``). Everything here runs on random weights: the
benchmarks measure cost, never accuracy.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

# --------------------------------------------------------------------------------------------------
# Model shapes and variants
# --------------------------------------------------------------------------------------------------

# CLIP shapes. "b32"/"b16" are the OpenAI ViT-B/32 and ViT-B/16 CLIP shapes (text width 512, 12 layers,
# 8 heads; vision width 768, 12 layers, 12 heads; projection 512). "tiny" is for the smoke test only.
_TEXT_B = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
               num_attention_heads=8, max_position_embeddings=77, bos_token_id=49406,
               eos_token_id=49407, pad_token_id=49407)
_VISION_B = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 image_size=224)
SHAPES: dict[str, dict] = {
    "tiny": dict(
        text_config=dict(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=97,
                         eos_token_id=98, pad_token_id=98),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=24,
    ),
    "b32": dict(text_config=_TEXT_B, vision_config={**_VISION_B, "patch_size": 32}, projection_dim=512),
    "b16": dict(text_config=_TEXT_B, vision_config={**_VISION_B, "patch_size": 16}, projection_dim=512),
}

# The compared video towers, as PIGConfig overrides (the agreed config switches).
VARIANTS: dict[str, dict] = {
    "PIG": {},
    "CLIP-ViP": {"use_pseudo_query": False},
    "meanP": {"video_tower": "meanp", "use_pseudo_query": False},
}

TEXT_LENGTH = 50  # tokens per query (PIGProcessor max_length; pad-to-max as in training)


def clip_config_dict(shape: str) -> dict:
    """Return a fresh CLIP config dict for ``shape`` ("tiny", "b32" or "b16")."""
    if shape not in SHAPES:
        raise ValueError(f"unknown model shape {shape!r}; expected one of {sorted(SHAPES)}")
    spec = SHAPES[shape]
    return {key: dict(value) if isinstance(value, dict) else value for key, value in spec.items()}


def build_model(shape: str, variant: str, num_frames: int = 12, seed: int = 0, **overrides):
    """Build a randomly initialised ``PIGModel`` of the given shape and variant, in eval mode.

    ``variant`` is a key of ``VARIANTS`` ("PIG", "CLIP-ViP", "meanP"); ``overrides`` go to ``PIGConfig``.
    Each call builds its own config object (transformers mutates a config when it builds a model).
    """
    from modeling_pig import PIGConfig, PIGModel

    if variant not in VARIANTS:
        raise ValueError(f"unknown model variant {variant!r}; expected one of {sorted(VARIANTS)}")
    torch.manual_seed(seed)
    config = PIGConfig(clip_config=clip_config_dict(shape), num_frames=num_frames,
                       **{**VARIANTS[variant], **overrides})
    return PIGModel(config).eval()


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def random_text_inputs(clip_config: dict, num_texts: int, length: int = TEXT_LENGTH,
                       generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Random CLIP-style token ids: ``[bos, w_1..w_n, eos, pad...]`` padded to ``length``.

    Returns ``input_ids`` and ``attention_mask``, both ``[num_texts, length]`` int64. The number of words n
    is drawn in [5, 20] (a typical caption); the text encoder runs all ``length`` positions regardless.
    """
    text = clip_config["text_config"]
    bos, eos, pad = text["bos_token_id"], text["eos_token_id"], text["pad_token_id"]
    low_id = min(bos, eos, pad)  # ordinary word ids lie below the special ids
    input_ids = torch.full((num_texts, length), pad, dtype=torch.long)
    attention_mask = torch.zeros((num_texts, length), dtype=torch.long)
    for row in range(num_texts):
        num_words = int(torch.randint(5, min(20, length - 2) + 1, (1,), generator=generator))
        words = torch.randint(0, low_id, (num_words,), generator=generator)
        input_ids[row, 0] = bos
        input_ids[row, 1:1 + num_words] = words
        input_ids[row, 1 + num_words] = eos
        attention_mask[row, :num_words + 2] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def random_pixel_values(clip_config: dict, batch: int, num_frames: int,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Random normalised frames ``[batch, num_frames, 3, S, S]`` float32 (S = the vision image size)."""
    size = clip_config["vision_config"]["image_size"]
    return torch.randn(batch, num_frames, 3, size, size, generator=generator)


# --------------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------------

def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Run ``fn`` once; return (seconds, its result)."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def timed_cpu(fn: Callable[[], object]) -> tuple[float, float, object]:
    """Run ``fn`` once; return (wall seconds, CPU seconds of this process, its result).

    The CPU time counts only the time this process ran on a core (all its threads together): on a shared
    machine it leaves out the time spent waiting for a core, which wall time includes. It is the core-seconds
    the work costs, the steadier measure when other jobs compete for the cores.
    """
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall_start, time.process_time() - cpu_start, result


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    if not values:
        raise ValueError("median of an empty sequence: no repeat was measured")
    return statistics.median(values)


# torch's FlopCounterMode has no formula for the CPU flash-attention kernel that
# F.scaled_dot_product_attention dispatches to on CPU, so attention would count as 0 FLOPs there.
# The CPU kernels take (query, key, value, ...) and (grad_out, query, key, value, ...) like the GPU
# ones, so the standard counts apply. A mask does not reduce the work of these kernels (a causal
# mask is counted as full attention, as torch does for the GPU kernels).
def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                            **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


_CPU_SDPA_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
}


def count_flops(fn: Callable[[], object], depth: int = 3) -> tuple[int, dict[str, int]]:
    """FLOPs of one call of ``fn`` (a multiply-add counts 2), with a per-module breakdown.

    Returns ``(total, {module_path: flops})`` where module paths come from torch's ModuleTracker
    (e.g. ``"PIGModel.clip.vision_model"``), down to ``depth`` levels. Matmuls, convolutions and
    scaled-dot-product attention (including the CPU kernel) are counted; elementwise ops are not.
    """
    counter = FlopCounterMode(display=False, depth=depth, custom_mapping=_CPU_SDPA_FLOPS)
    with counter:
        fn()
    per_module = {name: int(sum(ops.values())) for name, ops in counter.get_flop_counts().items()}
    return int(counter.get_total_flops()), per_module


def add_threads_argument(parser, quick_default: int = 1) -> None:
    """Add ``--threads`` to a benchmark's argument parser (resolve it with ``resolve_threads``)."""
    parser.add_argument("--threads", type=int, default=None,
                        help=f"torch intra-op threads (default: torch's default, {quick_default} with --quick). On "
                             "a shared machine 1 thread gives steadier numbers: OpenMP threads that wait for a "
                             "descheduled sibling at every barrier can make small operations 100x slower")


def resolve_threads(threads: int | None, quick: bool, quick_default: int = 1) -> int:
    """Set torch's intra-op thread count (``threads``; ``quick_default`` in quick mode; else torch's default).

    Returns the thread count in effect. Call it before any timing and before ``machine_description``.
    """
    if threads is None and quick:
        threads = quick_default
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


# glibc's malloc hands large freed blocks back to the kernel (munmap, heap trimming) and raises its mmap
# threshold only as far as the largest block freed so far, so a tensor just above that size (here around 7 MiB:
# B/32 ViP activations [1, 604, 3072], everything at B/16) gets fresh pages, and page faults, at every
# allocation: measured 25 ms instead of 4 ms for one quick-GELU on [604, 3072]. Fixed thresholds keep such
# blocks for reuse. Pass --default-malloc to measure with glibc's defaults instead.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers (glibc malloc.h)
MMAP_THRESHOLD_BYTES = 256 * 2**20  # blocks above this (galleries, weights) are still mmapped and returned
TRIM_THRESHOLD_BYTES = 512 * 2**20


def add_allocator_argument(parser) -> None:
    """Add ``--default-malloc`` to a benchmark's argument parser (resolve it with ``configure_allocator``)."""
    parser.add_argument("--default-malloc", action="store_true",
                        help="keep glibc malloc's default (dynamic) mmap and trim thresholds; by default they are "
                             f"fixed at {MMAP_THRESHOLD_BYTES // 2**20} MiB and {TRIM_THRESHOLD_BYTES // 2**20} MiB so "
                             "that activation-sized blocks are reused instead of faulted in afresh")


def configure_allocator(default_malloc: bool) -> str:
    """Fix glibc malloc's mmap/trim thresholds (unless ``default_malloc``); return a description for the report.

    Same effect as the environment variables ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``, set from
    inside the process. Raises on a glibc system where ``mallopt`` refuses; says so where there is no glibc.
    """
    if default_malloc:
        return "malloc: glibc defaults (dynamic thresholds)"
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return f"malloc: not glibc ({name}), thresholds unchanged"
    for parameter, value in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)):
        if mallopt(parameter, value) != 1:
            raise RuntimeError(f"mallopt({parameter}, {value}) failed in {name}")
    return (f"malloc: glibc, mmap threshold {MMAP_THRESHOLD_BYTES // 2**20} MiB, trim threshold "
            f"{TRIM_THRESHOLD_BYTES // 2**20} MiB (fixed)")


class LiveBytesSampler:
    """The peak of the bytes malloc has handed out and not had back (glibc `mallinfo2`: in-use heap blocks of every
    arena + mmapped blocks), sampled every `interval` seconds by a background thread while the block runs.

    Unlike the peak RSS it does not count memory that was freed but stayed in the process (fragmented heap), so
    it is the CPU counterpart of `torch.cuda.max_memory_allocated`, up to what happens between two samples.
    `peak` is None where there is no glibc."""

    def __init__(self, interval: float = 0.005):
        import ctypes
        import ctypes.util

        self.interval = interval
        self.peak: int | None = None
        self.baseline: int | None = None
        self._mallinfo2 = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"))

            class MallInfo2(ctypes.Structure):
                _fields_ = [(name, ctypes.c_size_t) for name in (
                    "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                    "keepcost")]

            libc.mallinfo2.restype = MallInfo2
            self._mallinfo2 = libc.mallinfo2
        except (OSError, AttributeError, TypeError):
            pass

    def live(self) -> int | None:
        if self._mallinfo2 is None:
            return None
        info = self._mallinfo2()
        return int(info.uordblks + info.hblkhd)

    def __enter__(self):
        import threading

        self.baseline = self.peak = self.live()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        if self._mallinfo2 is not None:
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            value = self.live()
            if value > self.peak:
                self.peak = value

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        value = self.live()
        if value is not None and value > self.peak:
            self.peak = value
        return False


def rss_bytes() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in bytes, from /proc/self/status (VmRSS, VmHWM)."""
    values = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024  # reported in kB
    if set(values) != {"VmRSS", "VmHWM"}:
        raise RuntimeError(f"/proc/self/status lacks VmRSS/VmHWM (got {sorted(values)}); Linux is required")
    return values["VmRSS"], values["VmHWM"]


def machine_description() -> str:
    """One line describing the machine and the software, for the header of every table."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass  # not Linux: keep platform.processor()
    try:
        import psutil

        memory = f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        memory = "RAM unknown"
    load = os.getloadavg()
    return (f"{cpu}, {os.cpu_count()} CPU cores, {memory}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), load average at start {load[0]:.2f}")


def load_average() -> float:
    """The 1-minute load average (how many runnable processes compete for the cores)."""
    return os.getloadavg()[0]


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------

def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render a markdown table; every row must have one cell per header."""
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"table row {list(row)} has {len(row)} cells, expected {len(headers)}")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def format_seconds(seconds: float) -> str:
    """Human-readable duration: ms below 1 s, s above."""
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def format_bytes(num_bytes: float) -> str:
    """Human-readable size in binary units."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(num_bytes) < 1024 or unit == "GiB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    raise AssertionError("unreachable")


def write_json(path: str | None, payload: dict) -> None:
    """Write ``payload`` as JSON to ``path`` (no-op when ``path`` is None)."""
    if path is not None:
        Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")
