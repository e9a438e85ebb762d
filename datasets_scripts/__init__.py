"""Benchmark loaders (MSR-VTT, DiDeMo, LSMDC, ActivityNet Captions, VATEX, MSVD, synthetic) built on `datasets`.

    from datasets_scripts import load_benchmark
    test = load_benchmark("msrvtt", data_dir="msrvtt_data", config="9k", split="test", video_dir="videos/all")
"""

from .loading import BENCHMARKS, get_builder_class, load_benchmark, make_builder

__all__ = ["BENCHMARKS", "get_builder_class", "load_benchmark", "make_builder"]
