"""Bring existing checkpoints in: the authors' PIG / F-Pig, CLIP-ViP and CLIP4Clip weights -> a PIG model folder.

    pig convert --from pig|fpig|clip-vip|clip4clip CHECKPOINT --out DIR [--clip CLIP] [--config CONFIG.json]
                [--pig-init]

    from modeling_pig.convert import convert_checkpoint
    convert_checkpoint("pig", "model_best.pt", "pig-msrvtt/", config="msrvtt_retrieval_pig_base_32.json")

The folder holds `model.safetensors`, `config.json`, the processor files and a model card (README.md) that records
the source file, its sha256, the settings read from the source's config, the tensor mapping and what was dropped
and why (`conversion.json` has the same, complete). `PIGModel.from_pretrained(DIR)` loads it.

Rules: every source tensor is mapped or dropped with a reason; a tensor left over, missing or of the wrong shape
stops the conversion with an error that lists the keys. Checkpoints are read with `torch.load(weights_only=True)`;
one that needs arbitrary unpickling is refused. The key maps per source are in `convert_sources.py`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError

from .convert_sources import (
    ConversionError,
    KeyMap,
    SourceConfig,
    infer_clip_config,
    plan_clip4clip,
    plan_clip_vip,
    plan_pig_family,
)

SOURCES = {
    "pig": ("the authors' PIG release (github.com/lbx73737373/PIG)", "hf", "encoder.clipmodel."),
    "fpig": ("the authors' earlier F-Pig release (github.com/lbx73737373/fpig)", "hf", "encoder.clipmodel."),
    "clip-vip": ("CLIP-ViP (github.com/microsoft/XPretrain, CLIP-ViP)", "hf", "clipmodel."),
    "clip4clip": ("CLIP4Clip meanP (github.com/ArrowLuo/CLIP4Clip)", "openai", "clip."),
}
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")

__all__ = ["SOURCES", "ConversionError", "ConversionReport", "convert_checkpoint", "load_checkpoint"]


@dataclass
class ConversionReport:
    """What `convert_checkpoint` wrote: the folder, the source's sha256 and the mapping record."""

    out_dir: Path
    source: str
    sha256: str
    mapped: list = field(default_factory=list)
    dropped: list = field(default_factory=list)
    filled: list = field(default_factory=list)


# -------------------------------------------------------------------------------------------------- reading


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A flat `{name: tensor}` dict from a `torch.save`d state dict (or a `.safetensors` file), and notes.

    Loading never runs code from the file (`weights_only=True`). A `{"state_dict": {...}}`-style wrapper is
    unwrapped and a DataParallel `module.` prefix removed (both noted).
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such checkpoint file")
    notes = []
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj = load_file(path)
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            if "Weights only load failed" not in str(err):
                raise ConversionError(f"{path}: not a readable torch checkpoint ({_first_line(err)})") from None
            raise ConversionError(
                f"{path}: refused: it stores Python objects besides tensors and loading it would run arbitrary "
                "unpickling code; if you trust the file, load it yourself and torch.save() its state_dict (a dict "
                "of tensors) or save it as safetensors, then convert that"
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError) as err:
            raise ConversionError(f"{path}: not a readable torch checkpoint ({_first_line(err)})") from None
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if wrapper is not None:
            others = sorted(str(k) for k in obj if k != wrapper)
            ignored = f" (ignored: {others})" if others else ""
            notes.append(f"tensors taken from the file's {wrapper!r} entry{ignored}")
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: holds a {type(obj).__name__}, not a state dict (name -> tensor)")
    not_tensors = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ConversionError(f"{path}: entries that are not tensors: {_listing(not_tensors)}; this looks like a "
                              "training-state file (optimizer, step), not model weights")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
        notes.append("the DataParallel prefix 'module.' was removed from every key")
    return obj, notes


def read_source_config(path) -> SourceConfig:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConversionError(f"--config {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConversionError(f"--config {path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConversionError(f"--config {path}: expected a JSON object, got {type(data).__name__}")
    return SourceConfig(data, str(path))


def resolve_clip_config(clip, state_dict, layout: str, prefix: str) -> tuple[dict, str]:
    """The CLIP config: from `--clip` (hub id or folder), else read off the checkpoint's shapes."""
    if clip is None:
        return infer_clip_config(state_dict, layout, prefix), ("read off the checkpoint's tensor shapes (OpenAI "
                                                               "CLIP conventions: 64-wide heads, quick-GELU)")
    from transformers import CLIPConfig

    try:
        config = CLIPConfig.from_pretrained(str(clip))
    except (OSError, ValueError) as err:
        raise ConversionError(f"--clip {clip}: no CLIP config could be loaded ({_first_line(err)}); pass a local "
                              "folder that holds the CLIP config.json") from None
    return config.to_dict(), f"--clip {clip}"


def pick_tokenizer(clip, vocab_size: int):
    """CLIP's BPE tokenizer (shipped with the package) when the vocabulary matches, else `--clip`'s tokenizer."""
    from transformers import AutoTokenizer

    from .processing_pig import load_shipped_clip_tokenizer

    shipped = load_shipped_clip_tokenizer()
    if len(shipped) == vocab_size:
        return shipped
    if clip is not None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(clip))
        except (OSError, ValueError):
            tokenizer = None
        if tokenizer is not None and len(tokenizer) == vocab_size:
            return tokenizer
    raise ConversionError(f"the text tower has {vocab_size} token rows but CLIP's tokenizer has {len(shipped)}; "
                          "pass --clip with a folder that holds the matching tokenizer")


# ---------------------------------------------------------------------------------------------- conversion


def convert_checkpoint(source: str, checkpoint, out_dir, *, clip=None, config=None,
                       pig_init: bool = False) -> ConversionReport:
    """Convert `checkpoint` of `source` ("pig", "fpig", "clip-vip", "clip4clip") into the model folder `out_dir`.

    Args:
        clip: CLIP hub id or folder giving the CLIP config (default: read off the tensor shapes).
        config: the source's JSON config (required for pig / fpig: top-k, head reduction, generator variant, ...;
            optional for clip-vip, and for clip4clip a JSON of its command-line arguments).
        pig_init: clip-vip only: write a PIG model (use_pseudo_query) whose CLIP and ViP weights are CLIP-ViP's
            and whose new modules are initialised as `PIGModel.from_clip` does, instead of the CLIP-ViP baseline.
    Raises:
        ConversionError: with one line naming the file, field or keys at fault.
    """
    from .configuration_pig import PIGConfig
    from .modeling_pig import PIGModel
    from .processing_pig import PIGProcessor

    if source not in SOURCES:
        raise ConversionError(f"--from {source!r}: expected one of {', '.join(SOURCES)}")
    if pig_init and source != "clip-vip":
        raise ConversionError("--pig-init applies to --from clip-vip only")
    if config is None and source in ("pig", "fpig"):
        raise ConversionError(f"--from {source} needs --config (the run's JSON config): the checkpoint does not record "
                              "the ITS top-k, head reduction, generator variant or attention temperature")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConversionError(f"--out {out}: exists and is not an empty folder")
    label, layout, prefix = SOURCES[source]
    state_dict, notes = load_checkpoint(checkpoint)
    source_config = read_source_config(config) if config is not None else None
    clip_dict, clip_origin = resolve_clip_config(clip, state_dict, layout, prefix)
    try:
        probe = PIGConfig(clip_config=clip_dict, use_pseudo_query=False)
    except (TypeError, ValueError, StrictDataclassError) as err:
        raise ConversionError(f"the CLIP config ({clip_origin}) makes no valid PIGConfig: {err}") from None
    bos_eos = (probe.generator_bos_token_id, probe.generator_eos_token_id)

    keys = KeyMap(state_dict)
    if source in ("pig", "fpig"):
        fields, processor_settings = plan_pig_family(source, keys, source_config, bos_eos)
    elif source == "clip-vip":
        fields, processor_settings = plan_clip_vip(keys, source_config, pig_init)
    else:
        fields, processor_settings = plan_clip4clip(keys, source_config)
    try:
        pig_config = PIGConfig(clip_config=clip_dict, **fields)
    except (TypeError, ValueError, StrictDataclassError) as err:
        raise ConversionError(f"the settings read from the source make no valid PIGConfig: {err}") from None

    image_size = pig_config.clip_config.vision_config.image_size
    input_res = None if source_config is None else source_config.get("input_res", None)
    if input_res is not None and list(input_res) != [image_size, image_size]:
        raise ConversionError(f"{source_config.path}: input_res = {input_res}, but the checkpoint's vision tower "
                              f"takes {image_size} x {image_size} frames")
    text = pig_config.clip_config.text_config
    if processor_settings["max_length"] > text.max_position_embeddings:
        raise ConversionError(f"max text length {processor_settings['max_length']} exceeds the "
                              f"{text.max_position_embeddings} text positions")
    tokenizer = pick_tokenizer(clip, text.vocab_size)
    if pig_config.use_pseudo_query:
        ids = tuple(tokenizer.convert_tokens_to_ids(t) for t in ("<|startoftext|>", "<|endoftext|>"))
        if ids != bos_eos:
            raise ConversionError(f"the tokenizer's <|startoftext|>/<|endoftext|> ids {ids} differ from the rows "
                                  f"{bos_eos} used for the generator's [bos]/[eos]")
    try:
        processor = PIGProcessor(tokenizer=tokenizer, image_size=image_size, **processor_settings)
    except ValueError as err:
        raise ConversionError(f"processor settings read from the source are invalid: {err}") from None

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the only random tensors are pig-init's video_mapper: reproducible
        model = PIGModel(pig_config).eval()
    _check_keys(checkpoint, keys, model.state_dict(), new_modules=pig_init)
    state = model.state_dict()
    state.update(keys.target)
    model.load_state_dict(state)
    if pig_init:
        _init_new_modules(model, keys)

    record = {
        "source": source, "source_label": label, "checkpoint": Path(checkpoint).name,
        "checkpoint_bytes": Path(checkpoint).stat().st_size, "sha256": sha256_of(Path(checkpoint)),
        "source_config": None if config is None else {"file": Path(config).name, "sha256": sha256_of(Path(config))},
        "clip_config": clip_origin, "notes": notes, "pig_init": pig_init,
        "source_settings": [] if source_config is None else [[f, v] for f, v in source_config.used],
        "pig_config_fields": fields, "processor": processor_settings,
        "mapped": keys.mapped, "dropped": keys.dropped, "filled": keys.filled,
    }
    _write_folder(out, model, processor, record)
    return ConversionReport(out, source, record["sha256"], keys.mapped, keys.dropped, keys.filled)


def _check_keys(checkpoint, keys: KeyMap, expected: dict, new_modules: bool):
    """Every source tensor used, every model tensor provided, every shape right; else one error listing keys."""
    new = ("generator.", "interaction.", "vip.frame_cls")
    source_of = {target: source for source, target, _ in keys.mapped}
    problems = {
        "source tensors not mapped": keys.leftovers(),
        "source tensors missing": sorted(set(keys.missing)),
        "source tensors with no place in PIGModel": [f"{source_of.get(k, '(filled)')} -> {k}"
                                                     for k in sorted(set(keys.target) - set(expected))],
        "PIGModel tensors the source lacks": sorted(k for k in expected if k not in keys.target
                                                    and not (new_modules and k.startswith(new))),
        "wrong shapes": [f"{source_of.get(k, k)} -> {k}: {list(t.shape)} vs {list(expected[k].shape)}"
                         for k, t in sorted(keys.target.items()) if k in expected and t.shape != expected[k].shape],
    }
    problems = {kind: found for kind, found in problems.items() if found}
    if problems:
        raise ConversionError(f"{checkpoint}: " + "; ".join(f"{kind} ({len(found)}): {_listing(found)}"
                                                            for kind, found in problems.items()))


@torch.no_grad()
def _init_new_modules(model, keys: KeyMap):
    """pig-init: the new modules start as `PIGModel.from_clip` starts them, from the converted CLIP-ViP weights."""
    clip = model.clip
    model.vip.frame_cls.copy_(clip.vision_model.embeddings.class_embedding)
    for target, source in model.generator.clip_weight_pairs(clip, model.config.generator_bos_token_id,
                                                            model.config.generator_eos_token_id):
        target.copy_(source)
    rows = f"{model.config.generator_bos_token_id}/{model.config.generator_eos_token_id}"
    keys.filled += [
        ("vip.frame_cls", "copy of clip.vision_model.embeddings.class_embedding (what PIG's run script does)"),
        ("generator.* (but video_mapper)", f"copy of the converted text tower, text_projection and token rows {rows}"),
        ("generator.video_mapper.*", "PyTorch's default Linear init, seed 0"),
        ("interaction.*", "identity weights, zero biases, default LayerNorms (§5)"),
    ]


# --------------------------------------------------------------------------------------------------- writing


def _write_folder(out: Path, model, processor, record: dict):
    """Write into a temporary sibling folder, then rename: an interrupted conversion leaves no half folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "conversion.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
        (tmp / "README.md").write_text(render_card(record, model.config))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _pattern(key: str) -> str:
    return re.sub(r"\.\d+\.", ".{i}.", key)


def _grouped(rows) -> list[tuple[tuple, int]]:
    counts: dict[tuple, int] = {}
    for row in rows:
        pattern = tuple(_pattern(cell) if i < 2 else cell for i, cell in enumerate(row))
        counts[pattern] = counts.get(pattern, 0) + 1
    return list(counts.items())


def render_card(record: dict, config) -> str:
    """The model card: source, sha256, settings, mapping, dropped and filled tensors, how to load."""
    source_config = record["source_config"]
    lines = [
        "---", "library_name: transformers", "tags:", "- pig", "- video-text-retrieval", "- converted", "---", "",
        f"# {record['checkpoint']} converted to PIG-HF", "",
        f"Converted from {record['source_label']} by `pig convert --from {record['source']}`"
        + (" --pig-init" if record["pig_init"] else "") + ". "
        + ("PIG (pseudo-query generator + pseudo interaction)." if config.use_pseudo_query else
           "CLIP-ViP baseline (no pseudo-query)." if config.video_tower == "vip" else "CLIP4Clip meanP baseline."),
        "", "## Source", "", "| | file | sha256 |", "| --- | --- | --- |",
        f"| checkpoint | `{record['checkpoint']}` ({record['checkpoint_bytes']:,} bytes) | `{record['sha256']}` |",
    ]
    if source_config:
        lines.append(f"| config | `{source_config['file']}` | `{source_config['sha256']}` |")
    lines += ["", f"CLIP config: {record['clip_config']}."] + [f"Note: {note}." for note in record["notes"]]
    if record["source_settings"]:
        lines += ["", "## Settings read from the source config", "", "| field | value |", "| --- | --- |"]
        lines += [f"| `{name}` | `{json.dumps(value)}` |" for name, value in record["source_settings"]]
    lines += ["", "## PIGConfig and processor settings set by the conversion", "", "| setting | value |",
              "| --- | --- |"]
    lines += [f"| `{name}` | `{json.dumps(value)}` |" for name, value in record["pig_config_fields"].items()]
    lines += [f"| processor `{name}` | `{json.dumps(value)}` |" for name, value in record["processor"].items()]
    lines += ["", "## Tensor mapping", "", "`{i}` stands for a layer index.", "",
              "| source tensor | PIG-HF tensor | count | how |", "| --- | --- | ---: | --- |"]
    lines += [f"| `{src}` | `{dst}` | {n} | {_cell(how)} |" for (src, dst, how), n in _grouped(record["mapped"])]
    if record["dropped"]:
        lines += ["", "## Dropped source tensors", "", "| source tensor | count | why |", "| --- | ---: | --- |"]
        lines += [f"| `{src}` | {n} | {_cell(why)} |" for (src, why), n in _grouped(record["dropped"])]
    if record["filled"]:
        lines += ["", "## Tensors without a source tensor", "", "| PIG-HF tensor | value |", "| --- | --- |"]
        lines += [f"| `{dst}` | {_cell(how)} |" for dst, how in record["filled"]]
    lines += ["", "`conversion.json` lists every tensor.", "", "## Use", "", "```python",
              "from modeling_pig import PIGModel, PIGProcessor", "",
              'model = PIGModel.from_pretrained("path/to/this/folder")',
              'processor = PIGProcessor.from_pretrained("path/to/this/folder")', "```", ""]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Text for a markdown table cell (a `|`, as in `<|endoftext|>`, would end the cell)."""
    return str(text).replace("|", "\\|")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _listing(items, limit: int = 20) -> str:
    items = list(items)
    return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


# ------------------------------------------------------------------------------------------------------ CLI


def add_convert_parser(subparsers) -> argparse.ArgumentParser:
    """The `pig convert` subcommand (registered by modeling_pig.cli)."""
    parser = subparsers.add_parser(
        "convert", help="turn a PIG / F-Pig / CLIP-ViP / CLIP4Clip checkpoint into a PIG model folder",
        description="Convert the authors' PIG or F-Pig checkpoints, CLIP-ViP weights or CLIP4Clip meanP "
                    "checkpoints into a folder that PIGModel.from_pretrained loads (see docs/convert.md).")
    parser.add_argument("--from", dest="source", required=True, metavar="|".join(SOURCES), help="source format")
    parser.add_argument("checkpoint", help="the source checkpoint (.pt / .bin / pytorch_model.bin.N / .safetensors)")
    parser.add_argument("--out", required=True, help="model folder to write (must not exist or be empty)")
    parser.add_argument("--clip", default=None, help="CLIP hub id or folder for the CLIP config (default: read "
                                                     "off the tensor shapes)")
    parser.add_argument("--config", default=None, help="the source run's JSON config (required for pig / fpig)")
    parser.add_argument("--pig-init", action="store_true", help="clip-vip: write a PIG model initialised from "
                                                                "CLIP-ViP instead of the CLIP-ViP baseline")
    return parser


def run_convert(args) -> int:
    """Handler of `pig convert`: 0 on success, 2 with one `error: ...` line for a bad input."""
    try:
        report = convert_checkpoint(args.source, args.checkpoint, args.out, clip=args.clip, config=args.config,
                                    pig_init=args.pig_init)
    except ConversionError as err:
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        return 2
    print(f"wrote {report.out_dir}: {len(report.mapped)} tensors mapped, {len(report.dropped)} dropped, "
          f"{len(report.filled)} filled (see its README.md); source sha256 {report.sha256}")
    return 0
