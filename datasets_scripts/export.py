"""Export a benchmark to a Hub-style dataset folder (parquet per split + README.md with a YAML `configs:`
section) that `datasets.load_dataset(folder, config, split=...)` reads back, and optionally push it.

    python -m datasets_scripts.export msrvtt --data_dir msrvtt_data --video_dir msrvtt_data/videos/all \\
        --config 9k --out exported/msrvtt [--splits test] [--push_to_hub user/msrvtt-retrieval]

Exporting several configs into the same folder adds one `configs:` entry each (existing entries are kept).
`--video_paths relative` stores video paths relative to the video folder instead of absolute ones (what you
want before publishing: absolute paths name your machine's folders).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import yaml

from model_cards.hub import push_folder

from .loading import make_builder

logger = logging.getLogger(__name__)
README = "README.md"
# Hub metadata saying *retrieval*: the Hub's `text-to-video` category means video generation.
TASK_CATEGORIES = ["text-retrieval"]
TAGS = ["text-to-video-retrieval", "video-text-retrieval", "video", "pig-hf"]


def _read_front_matter(readme: Path) -> tuple[dict, str]:
    """(YAML metadata, body) of an existing dataset card, or ({}, "") when there is none."""
    if not readme.is_file():
        return {}, ""
    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}, text
    end = text.find("\n---", 4)
    if end < 0:
        raise ValueError(f"{readme}: YAML front matter opened with '---' but never closed")
    metadata = yaml.safe_load(text[4:end]) or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"{readme}: YAML front matter is not a mapping")
    return metadata, text[end + 4:].lstrip("\n")


def _card_body(name: str, configs: list[dict], command: str) -> str:
    names = ", ".join(f"`{c['config_name']}`" for c in configs)
    first = configs[0]
    split = first["data_files"][-1]["split"]
    return f"""# {name} (text-to-video retrieval)

Exported with PIG-HF's `datasets_scripts.export` from the benchmark's original annotation files.
Configs: {names}.

```python
from datasets import load_dataset
ds = load_dataset("<this folder or repo id>", "{first['config_name']}", split="{split}")
```

Columns: `video_id`, `video` (path of the video file: absolute on the exporting machine, or relative to the
video folder when exported with `--video_paths relative`; null when the video was missing), `captions` (every
caption of the row is a query for that row's video), `start` / `end` (seconds of the clip inside the file;
null = whole file), plus the protocol fields of the benchmark. Videos are not included, only referenced.

Last export command: `{command}`
"""


def export_benchmark(name: str, data_dir: str | os.PathLike, out: str | os.PathLike, config: str | None = None,
                     splits: list[str] | None = None, video_dir: str | os.PathLike | None = None,
                     missing_videos: str = "error", cache_dir: str | os.PathLike | None = None,
                     video_paths: str = "absolute", command: str | None = None) -> Path:
    """Write one config of a benchmark (all its splits, or `splits`) under `out` and return `out`.

    Files: `out/<config>/<split>-00000-of-00001.parquet` and `out/README.md`, whose YAML `configs:` entry for
    this config points at them. video_paths: "absolute" (as `load_benchmark` returns them) or "relative" (to
    the video folder).
    """
    if video_paths not in ("absolute", "relative"):
        raise ValueError(f"video_paths={video_paths!r}; expected 'absolute' or 'relative'")
    builder = make_builder(name, data_dir, config=config, splits=splits, video_dir=video_dir,
                           missing_videos=missing_videos, cache_dir=cache_dir)
    builder.download_and_prepare()
    config_name = builder.config.name
    out = Path(out)
    config_folder = out / config_name
    config_folder.mkdir(parents=True, exist_ok=True)
    for stale in config_folder.glob("*.parquet"):
        stale.unlink()
    video_root = Path(builder.config.video_dir)
    data_files = []
    for split in builder.requested_splits():
        dataset = builder.as_dataset(split=split)
        if video_paths == "relative":
            dataset = dataset.map(
                lambda row: {"video": None if row["video"] is None else os.path.relpath(row["video"], video_root)},
                desc=f"relative video paths ({split})")
        dataset.to_parquet(str(config_folder / f"{split}-00000-of-00001.parquet"))
        data_files.append({"split": split, "path": f"{config_name}/{split}-*.parquet"})
        logger.info("%s/%s %s: %d rows", name, config_name, split, len(dataset))

    readme = out / README
    metadata, _ = _read_front_matter(readme)
    configs = [c for c in metadata.get("configs", []) if c.get("config_name") != config_name]
    configs.append({"config_name": config_name, "data_files": data_files})
    configs.sort(key=lambda c: c["config_name"])
    metadata["configs"] = configs
    # (a card written by an older export says text-to-video: that category is replaced, others are kept)
    categories = [c for c in metadata.get("task_categories", []) if c != "text-to-video"]
    metadata["task_categories"] = categories + [c for c in TASK_CATEGORIES if c not in categories]
    tags = list(metadata.get("tags", []))
    metadata["tags"] = tags + [t for t in TAGS if t not in tags]
    body = _card_body(name, configs, command or f"export_benchmark({name!r}, config={config_name!r})")
    readme.write_text("---\n" + yaml.safe_dump(metadata, sort_keys=False) + "---\n\n" + body, encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets_scripts.export", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="msrvtt, didemo, activitynet, lsmdc, vatex, msvd or synthetic")
    parser.add_argument("--data_dir", required=True, help="folder with the annotation files (searched recursively)")
    parser.add_argument("--out", required=True, help="output folder (Hub dataset layout)")
    parser.add_argument("--config", default=None, help="setting, e.g. msrvtt 9k / 7k / full (default: the first)")
    parser.add_argument("--splits", nargs="+", default=None, help="only these splits (default: all of the config)")
    parser.add_argument("--video_dir", default=None, help="folder with the videos (default: data_dir)")
    parser.add_argument("--missing_videos", default="error", choices=("error", "drop", "keep"))
    parser.add_argument("--video_paths", default="absolute", choices=("absolute", "relative"),
                        help="store video paths as absolute paths or relative to video_dir")
    parser.add_argument("--cache_dir", default=None, help="datasets cache folder (default: the HF datasets cache)")
    parser.add_argument("--push_to_hub", default=None, metavar="REPO", help="also upload the folder to this dataset repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = "python -m datasets_scripts.export " + " ".join(argv if argv is not None else sys.argv[1:])
    out = export_benchmark(args.name, args.data_dir, args.out, config=args.config, splits=args.splits,
                           video_dir=args.video_dir, missing_videos=args.missing_videos, cache_dir=args.cache_dir,
                           video_paths=args.video_paths, command=command)
    logger.info("wrote %s", out)
    if args.push_to_hub:
        url = push_folder(out, args.push_to_hub, repo_type="dataset", private=args.private,
                          commit_message="Upload benchmark annotations (PIG-HF export)")
        logger.info("pushed to %s", url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
