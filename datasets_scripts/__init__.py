"""Benchmark loaders (MSR-VTT, DiDeMo, LSMDC, ActivityNet Captions, VATEX, MSVD, synthetic) built on `datasets`."""
