"""Cheap text queries for a cold `pig search`: the index's text tower saved next to the index.

Why: loading a PIG model means reading its weights and building it with transformers' modelling code; with the
tiny demo model that costs more CPU than `import torch, transformers` itself, and a search that runs as its own
process pays it on every call. So:

* `save_text_encoder` writes `text_encoder.pt` into the index folder: the text tower (token ids -> L2-normalised
  embedding) traced with `torch.jit.trace` at the processor's fixed text length, the processor's tokenizer as a
  `tokenizers` JSON with its padding and truncation, and the fingerprint of the weights it was traced from. Before
  writing, the traced tower and the tokenizer are checked against the eager model and processor on real queries
  (equal token ids; embeddings within 1e-4); the batch dimension is used only if a batch gave the same result.
* `load_text_encoder` reads it back with `torch.jit.load` and `tokenizers` only (no transformers model code, no model
  folder), and only when its fingerprint equals the index's: an index rebuilt with other weights ignores it.

TorchScript is deprecated in recent torch; when tracing or loading fails, searches fall back to the model: slower,
never wrong.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = ["TextEncoder", "save_text_encoder", "load_text_encoder", "TEXT_ENCODER_FILE"]

TEXT_ENCODER_FILE = "text_encoder.pt"
_METADATA_NAME = "pig_text_encoder.json"  # an extra file inside the TorchScript archive
_FORMAT = 1
_TOLERANCE = 1e-4


class _TextTower(torch.nn.Module):
    """token ids `[B, L]`, attention mask `[B, L]` -> L2-normalised text embedding `[B, D]` float32."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        features = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return F.normalize(features.float(), dim=-1)


class TextEncoder:
    """Text queries -> embeddings `[Q, D]` with a traced text tower and a `tokenizers` tokenizer (no transformers).

    Attributes:
        fingerprint: the weights fingerprint of the model the tower was traced from.
        max_length: the fixed token length the tower was traced at.
        batched: whether several texts may go through in one call (checked when the file was written).
    """

    def __init__(self, module, tokenizer, metadata: dict):
        self.module, self.tokenizer = module, tokenizer
        self.fingerprint = metadata["model_fingerprint"]
        self.max_length = int(metadata["max_length"])
        self.batched = bool(metadata["batched"])

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """`input_ids`, `attention_mask` `int64 [len(texts), max_length]`, as the processor makes them."""
        encoded = self.tokenizer.encode_batch(list(texts))
        return (torch.tensor([e.ids for e in encoded], dtype=torch.int64),
                torch.tensor([e.attention_mask for e in encoded], dtype=torch.int64))

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not a single string")
        bad = [i for i, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
        if bad:
            raise ValueError(f"texts[{bad[0]}] = {texts[bad[0]]!r} is not a non-empty string")
        input_ids, attention_mask = self.tokenize(texts)
        with torch.no_grad():
            if self.batched:
                return self.module(input_ids, attention_mask)
            return torch.cat([self.module(input_ids[i:i + 1], attention_mask[i:i + 1]) for i in range(len(texts))])


def _configured_tokenizer(processor):
    """A `tokenizers.Tokenizer` that pads and truncates to `processor.max_length` like `processor.tokenize`."""
    from tokenizers import Tokenizer

    tokenizer = processor.tokenizer
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.enable_truncation(processor.max_length)
    backend.enable_padding(length=processor.max_length, pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token,
                           direction=tokenizer.padding_side)
    return backend


def save_text_encoder(model, processor, index_dir: str | os.PathLike, fingerprint: str,
                      check_texts: Sequence[str] = ()) -> Path | None:
    """Trace `model`'s text tower and write it with the tokenizer to `index_dir/text_encoder.pt`.

    Args:
        model, processor: the index's model (its weights have `fingerprint`) and processor.
        index_dir: the index folder.
        fingerprint: the index's `model_fingerprint` (the caller has checked that `model` has these weights).
        check_texts: queries to check the traced tower and the tokenizer on (a few fixed ones are added).

    Returns:
        the file written, or None when the traced tower did not reproduce the model or the folder is not
        writable (logged: the searches then use the model).
    """
    texts = list(check_texts) + ["a man plays a guitar", "two dogs run on a beach at sunset while a child laughs " * 6]
    tokenizer = _configured_tokenizer(processor)
    expected = processor.tokenize(texts)
    device = next(model.parameters()).device
    tower = _TextTower(model).eval()
    encoder_metadata = {"format": _FORMAT, "model_fingerprint": fingerprint, "max_length": processor.max_length,
                        "batched": False}
    with torch.no_grad():
        reference = tower(expected["input_ids"].to(device), expected["attention_mask"].to(device)).cpu()
        try:
            with warnings.catch_warnings():  # torch.jit's deprecation notice and tracer hints: checked below
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(tower.cpu(), (expected["input_ids"][:1], expected["attention_mask"][:1]),
                                         check_trace=False)
        except Exception as err:  # TorchScript cannot trace this model: searches keep using the model
            logger.info("text tower not traced (%s: %s); text searches load the model", type(err).__name__, err)
            return None
        finally:
            model.to(device)
    encoder = TextEncoder(traced, tokenizer, encoder_metadata)
    ids, mask = encoder.tokenize(texts)
    if not (torch.equal(ids, expected["input_ids"]) and torch.equal(mask, expected["attention_mask"])):
        logger.warning("the tokenizers copy of the tokenizer differs from the processor: no %s", TEXT_ENCODER_FILE)
        return None
    if (encoder(texts) - reference).abs().max() > _TOLERANCE:
        logger.warning("the traced text tower differs from the model: no %s written", TEXT_ENCODER_FILE)
        return None
    encoder.batched = True
    with torch.no_grad():
        encoder_metadata["batched"] = bool((encoder(texts) - reference).abs().max() <= _TOLERANCE)
    path = Path(index_dir) / TEXT_ENCODER_FILE
    tmp = path.with_name(path.name + ".tmp")
    extra = {_METADATA_NAME: json.dumps({**encoder_metadata, "tokenizer": tokenizer.to_str()})}
    try:
        with warnings.catch_warnings():  # TorchScript's deprecation notice (see the module docstring)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(traced, str(tmp), _extra_files=extra)
        os.replace(tmp, path)
    except OSError as err:
        logger.info("cannot write %s (%s); text searches load the model", path, err)
        return None
    return path


def load_text_encoder(index_dir: str | os.PathLike, fingerprint: str | None) -> TextEncoder | None:
    """The text encoder saved in `index_dir`, if there is one for weights `fingerprint`; else None."""
    path = Path(index_dir) / TEXT_ENCODER_FILE
    if fingerprint is None or not path.is_file():
        return None
    from tokenizers import Tokenizer

    extra = {_METADATA_NAME: ""}
    try:
        with warnings.catch_warnings():  # TorchScript's deprecation notice (see the module docstring)
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        metadata = json.loads(extra[_METADATA_NAME])
    except Exception as err:  # another torch version, a damaged file: the model path still works
        logger.info("ignoring %s (%s: %s)", path, type(err).__name__, err)
        return None
    if metadata.get("format") != _FORMAT or metadata.get("model_fingerprint") != fingerprint:
        logger.info("ignoring %s: made for other weights than the index's", path)
        return None
    return TextEncoder(module.eval(), Tokenizer.from_str(metadata["tokenizer"]), metadata)
