"""PIG against the CLIP-ViP and CLIP4Clip meanP baselines on the synthetic benchmark, several seeds each.

    nice -n 10 .venv/bin/python training/compare.py --output_dir outputs/compare --update_doc docs/results.md

Every run is `python training/train.py` (one process, sequentially) with the same stage-2 budget; flags after
`--` go to every run (e.g. `-- --num_train_epochs 10`). The variants differ only in the model:

* PIG: `--use_pseudo_query true --video_tower vip --stage both` (stage 1 trains only the generator on the
  benchmark's still images, CLIP frozen; stage 2 is the shared budget);
* CLIP-ViP: `--use_pseudo_query false --video_tower vip --stage 2` (no generator, so no stage 1);
* CLIP4Clip meanP: `--use_pseudo_query false --video_tower meanp --stage 2`.

The seed (`--seed`) changes the model initialisation, the data order, the caption drawn per visit and the frame
jitter; the benchmark itself is generated once (`--synthetic_seed` stays fixed) into output_dir/.cache/synthetic.
Writes output_dir/results.json (every run's final metrics, argv and wall time) and output_dir/results.md
(mean ± sample standard deviation over seeds, then the per-seed values); with `--update_doc FILE`, the part of
FILE between the markers below is replaced by that table. A run folder whose `compare_run.json` records the
same argv and whose metrics.json exists is reused, so an interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO / "training" / "train.py"
VARIANTS: dict[str, list[str]] = {
    "PIG": ["--use_pseudo_query", "true", "--video_tower", "vip", "--stage", "both"],
    "CLIP-ViP": ["--use_pseudo_query", "false", "--video_tower", "vip", "--stage", "2"],
    "CLIP4Clip meanP": ["--use_pseudo_query", "false", "--video_tower", "meanp", "--stage", "2"],
}
# (metric key, column title, higher is better)
COLUMNS = (("t2v_R@1", "t2v R@1", True), ("t2v_R@5", "t2v R@5", True), ("t2v_R@10", "t2v R@10", True),
           ("t2v_MdR", "t2v MdR", False), ("v2t_R@1", "v2t R@1", True), ("v2t_R@5", "v2t R@5", True),
           ("v2t_R@10", "v2t R@10", True), ("v2t_MdR", "v2t MdR", False))
BEGIN_MARKER = "<!-- compare.py results: begin -->"
END_MARKER = "<!-- compare.py results: end -->"
RUN_RECORD = "compare_run.json"


def run_folder(output_dir: Path, variant: str, seed: int) -> Path:
    """output_dir/<variant slug>-seed<seed>."""
    slug = variant.lower().replace(" ", "-").replace("/", "-")
    return Path(output_dir) / f"{slug}-seed{seed}"


def train_argv(variant: str, seed: int, folder: Path, data_dir: Path, extra: Sequence[str]) -> list[str]:
    """The train.py arguments of one run (the variant's flags, then `extra`, which may override anything)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {list(VARIANTS)}")
    return ["--output_dir", str(folder), "--data_dir", str(data_dir), "--seed", str(seed), "--overwrite_output_dir",
            *VARIANTS[variant], *extra]


def run_training(argv: Sequence[str], folder: Path, reuse: bool = True) -> dict:
    """Run train.py with `argv` (log in folder/train.log) unless a finished run with the same argv is there.

    Returns {"metrics": final metrics, "chance_R@1", "num_eval_videos", "wall_seconds", "argv", "reused"}.
    Raises RuntimeError (with the end of the log) when train.py fails.
    """
    folder = Path(folder)
    record_path = folder / RUN_RECORD
    if reuse and record_path.is_file() and (folder / "metrics.json").is_file():
        record = json.loads(record_path.read_text())
        if record.get("argv") == list(argv):
            return {**record, "reused": True}
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "train.log"
    command = [sys.executable, str(TRAIN_SCRIPT), *argv]
    started = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        result = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    wall = time.time() - started
    if result.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"train.py failed (exit {result.returncode}) for {folder}; end of {log_path}:\n{tail}")
    saved = json.loads((folder / "metrics.json").read_text())
    record = {"argv": list(argv), "metrics": saved["final"], "chance_R@1": saved["chance_R@1"],
              "num_eval_videos": saved["num_eval_videos"], "wall_seconds": wall}
    record_path.write_text(json.dumps(record, indent=1))
    return {**record, "reused": False}


def summarise(values: Sequence[float]) -> dict:
    """mean, sample standard deviation (0 for one value), min and max of `values`."""
    if not values:
        raise ValueError("no values to summarise")
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": len(values)}


def aggregate(runs: Mapping[str, Mapping[int, Mapping[str, float]]]) -> dict:
    """{variant: {seed: metrics}} -> {variant: {metric key: summarise(values over seeds)}} for COLUMNS."""
    return {variant: {key: summarise([float(metrics[key]) for metrics in by_seed.values()])
                      for key, _, _ in COLUMNS}
            for variant, by_seed in runs.items()}


def markdown_tables(runs: Mapping[str, Mapping[int, Mapping[str, float]]]) -> str:
    """Mean ± sample std over seeds (best mean in bold), then one row per variant and seed."""
    summary = aggregate(runs)
    header = "| model | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "| --- |" + " ---: |" * len(COLUMNS)
    best = {}
    for key, _, higher in COLUMNS:
        means = [summary[v][key]["mean"] for v in summary]
        best[key] = max(means) if higher else min(means)
    lines = [header, rule]
    for variant, stats in summary.items():
        n = next(iter(stats.values()))["n"]
        cells = []
        for key, _, _ in COLUMNS:
            text = f"{stats[key]['mean']:.1f} ± {stats[key]['std']:.1f}"
            cells.append(f"**{text}**" if len(summary) > 1 and stats[key]["mean"] == best[key] else text)
        lines.append(f"| {variant} (n={n}) | " + " | ".join(cells) + " |")
    lines += ["", "Per seed:", "", "| model | seed | " + " | ".join(t for _, t, _ in COLUMNS) + " |",
              "| --- | ---: |" + " ---: |" * len(COLUMNS)]
    for variant, by_seed in runs.items():
        for seed, metrics in by_seed.items():
            lines.append(f"| {variant} | {seed} | " + " | ".join(f"{float(metrics[k]):.1f}" for k, _, _ in COLUMNS)
                         + " |")
    return "\n".join(lines)


def replace_between_markers(text: str, block: str, where: str = "the document") -> str:
    """`text` with everything between BEGIN_MARKER and END_MARKER replaced by `block`.

    Raises ValueError naming `where` when the markers are missing or out of order.
    """
    begin, end = text.find(BEGIN_MARKER), text.find(END_MARKER)
    if begin < 0 or end < 0 or end < begin:
        raise ValueError(f"{where}: needs the lines {BEGIN_MARKER!r} and then {END_MARKER!r} around the table")
    return text[:begin + len(BEGIN_MARKER)] + "\n" + block.strip() + "\n" + text[end:]


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """This script's flags, and the train.py flags after `--`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="outputs/compare", help="one folder per run + results.json/.md")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--update_doc", default=None, help="markdown file whose marked table is replaced")
    parser.add_argument("--no_reuse", action="store_true", help="retrain runs that are already complete")
    return parser.parse_args(argv), extra


def main(argv: Sequence[str] | None = None) -> dict:
    """Run every variant x seed, write results.json / results.md, optionally update a document."""
    args, extra = parse_args(argv)
    out = Path(args.output_dir).resolve()
    data_dir = out / ".cache" / "synthetic"
    runs: dict[str, dict[int, dict]] = {v: {} for v in args.variants}
    records = []
    started = time.time()
    jobs = [(variant, seed) for variant in args.variants for seed in args.seeds]
    for variant, seed in tqdm(jobs, desc="runs", unit="run"):
        folder = run_folder(out, variant, seed)
        record = run_training(train_argv(variant, seed, folder, data_dir, extra), folder, reuse=not args.no_reuse)
        runs[variant][seed] = record["metrics"]
        records.append({"variant": variant, "seed": seed, "folder": str(folder), **record})
        tqdm.write(f"{variant} seed {seed}: t2v R@1 {record['metrics']['t2v_R@1']:.1f}, "
                   f"v2t R@1 {record['metrics']['v2t_R@1']:.1f} ({record['wall_seconds']:.0f} s"
                   f"{', reused' if record['reused'] else ''})")
    tables = markdown_tables(runs)
    first = records[0]
    footer = (f"\n\nTest split: {first['num_eval_videos']} videos, one caption each (chance R@1 = "
              f"{first['chance_R@1']:.1f}%, chance median rank ≈ {(first['num_eval_videos'] + 1) / 2:.1f}). "
              f"Wall time per run: {min(r['wall_seconds'] for r in records):.0f}-"
              f"{max(r['wall_seconds'] for r in records):.0f} s. Extra train.py flags: "
              f"`{shlex.join(extra) if extra else '(none: the demo defaults)'}`.")
    summary = {"runs": records, "aggregate": aggregate(runs), "extra_train_args": extra,
               "seeds": args.seeds, "wall_seconds": time.time() - started}
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    (out / "results.md").write_text(tables + footer + "\n")
    print(tables + footer)
    if args.update_doc:
        path = Path(args.update_doc)
        path.write_text(replace_between_markers(path.read_text(), tables + footer, str(path)))
        print(f"updated {path}")
    return summary


if __name__ == "__main__":
    main()
