"""PIGProcessor: CLIP tokenizer + video frames -> model inputs.

Text goes through the real CLIP BPE tokenizer (its vocabulary ships in ``modeling_pig/tokenizer_files``), padded
to ``max_length`` as the authors do. Videos are decoded and sampled by :mod:`modeling_pig.video_io`, then resized
and normalised with CLIP's mean/std into ``pixel_values`` ``float32 [batch, frames, 3, S, S]``.

Two resize modes:

* ``"squash"`` (default; the authors' transform, pig-method.md §6.2): the whole frame is resized to ``S x S``
  (aspect ratio not kept) with bicubic interpolation on float pixels in ``[0, 1]``, no antialiasing, no clamping:
  what ``torchvision.transforms.Resize((S, S), BICUBIC)`` does to a float tensor in the torchvision versions of
  the authors' Docker images (0.9 for CLIP-ViP, 0.12 for F-Pig). Computed with ``torch.nn.functional.interpolate``.
* ``"center_crop"`` (standard CLIP): the short side is resized to ``S`` with PIL's bicubic filter, then the
  centre ``S x S`` is cut out. This reproduces OpenAI's CLIP preprocessing exactly (checked against the reference
  output of ``franz-kafka.jpg`` in ../shared/data/clip).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoProcessor, BatchFeature, CLIPTokenizer, ProcessorMixin

from .configuration_pig import PIGConfig
from .video_io import read_video_frames, sample_frame_indices

__all__ = ["PIGProcessor", "PIGVideoProcessor", "RESIZE_MODES"]

RESIZE_MODES = ("squash", "center_crop")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_TEXT_POSITIONS = 77  # CLIP's text tower has 77 position embeddings
# What transformers records in a loaded tokenizer's init_kwargs about how it was loaded (machine-local; never saved).
LOADING_ONLY_TOKENIZER_KWARGS = ("is_local", "local_files_only")
# The tokenizer's keyword arguments that PIGProcessor.__call__ passes through (as transformers' processors do).
TOKENIZER_CALL_KWARGS = frozenset({
    "padding", "truncation", "max_length", "pad_to_multiple_of", "padding_side", "return_attention_mask",
    "return_token_type_ids", "return_length", "return_special_tokens_mask", "return_offsets_mapping",
    "return_overflowing_tokens", "stride", "add_special_tokens", "verbose",
})
# Where the shipped vocabulary lives (a path, not an import: this file is also copied alone as remote code).
_SHIPPED_TOKENIZER_DIR = Path(__file__).resolve().parent / "tokenizer_files"


def load_shipped_clip_tokenizer():
    """The real CLIP tokenizer (49,408 tokens), built offline from the vocabulary files shipped with the package."""
    if not (_SHIPPED_TOKENIZER_DIR / "vocab.json").is_file():
        raise FileNotFoundError(
            f"the CLIP vocabulary is missing from {_SHIPPED_TOKENIZER_DIR}; reinstall the package or pass "
            "tokenizer=... explicitly"
        )
    return CLIPTokenizer.from_pretrained(_SHIPPED_TOKENIZER_DIR, model_max_length=CLIP_TEXT_POSITIONS)


class PIGVideoProcessor:
    r"""Videos (files, or decoded frames) and images -> ``pixel_values``: frame sampling, resize, CLIP normalisation.

    It is to :class:`PIGProcessor` what ``image_processor`` is to ``CLIPProcessor``; reach it as
    ``processor.video_processor`` (also ``processor.image_processor``). Its settings are saved with the processor.

    Args:
        num_frames: frames sampled from each video (the authors use 12).
        image_size: side ``S`` of the square frames (224 for CLIP ViT-B).
        resize_mode: ``"squash"`` (the authors' resize of the whole frame to ``S x S``) or ``"center_crop"``
            (standard CLIP: short side to ``S``, centre crop); see the module docstring.
    """

    model_input_names = ["pixel_values"]

    def __init__(self, num_frames: int = 12, image_size: int = 224, resize_mode: str = "squash"):
        _check_positive_int("num_frames", num_frames)
        _check_positive_int("image_size", image_size)
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        self.num_frames = int(num_frames)
        self.image_size = int(image_size)
        self.resize_mode = resize_mode

    def to_dict(self) -> dict:
        return {"num_frames": self.num_frames, "image_size": self.image_size, "resize_mode": self.resize_mode}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"

    def __call__(self, videos=None, images=None, return_tensors: str | None = "pt", **sampling) -> BatchFeature:
        """``videos`` (see :meth:`process_videos`, whose keyword arguments ``sampling`` are) or ``images`` -> a
        ``BatchFeature`` with ``pixel_values`` ``[n, T, 3, S, S]`` (torch for ``"pt"``, numpy otherwise)."""
        if (videos is None) == (images is None):
            raise ValueError("give videos or images (one of them)")
        pixels = self.process_videos(videos, **sampling) if videos is not None else self.process_images(images)
        return BatchFeature({"pixel_values": pixels if return_tensors == "pt" else pixels.numpy()})

    def process_videos(self, videos, num_frames: int | None = None, mode: str = "test",
                       generator: torch.Generator | None = None, starts=None, ends=None) -> torch.Tensor:
        """Videos (paths, or decoded ``uint8 [T, H, W, 3]`` frames as numpy or torch) -> ``float32 [n, T', 3, S, S]``.

        Files and decoded frames are sampled alike, to ``num_frames`` frames (this call's, else the processor's) by
        :func:`~modeling_pig.video_io.sample_frame_indices` with ``mode`` and ``generator``: 30 decoded frames and
        the file they came from give the same pixels. ``starts``/``ends`` (lists aligned with ``videos``, seconds or
        ``None``) cut clips from files.
        """
        if isinstance(videos, (str, os.PathLike)) or (hasattr(videos, "ndim") and videos.ndim == 4):
            videos = [videos]
        if not isinstance(videos, (list, tuple)) or not videos:
            raise ValueError("videos must be a path, a frame array [T, H, W, 3], or a non-empty list of them")
        starts = _per_video("starts", starts, len(videos))
        ends = _per_video("ends", ends, len(videos))
        clips = []
        for i, video in enumerate(videos):
            if isinstance(video, (str, os.PathLike)):
                clips.append(self.load_video(video, mode=mode, generator=generator, start=starts[i], end=ends[i],
                                             num_frames=num_frames))
            else:
                if starts[i] is not None or ends[i] is not None:
                    raise ValueError(f"videos[{i}] is a frame array: starts/ends apply to video files only")
                frames = self.sample_frames(video, num_frames=num_frames, mode=mode, generator=generator)
                clips.append(self.preprocess_frames(frames))
        return torch.stack(clips)  # [n_video, T, 3, S, S]

    def process_images(self, images) -> torch.Tensor:
        """Images (paths or ``PIL.Image``) -> 1-frame videos ``float32 [n_image, 1, 3, S, S]``."""
        if isinstance(images, (str, os.PathLike, Image.Image)):
            images = [images]
        if not isinstance(images, (list, tuple)) or not images:
            raise ValueError("images must be a path, a PIL image, or a non-empty list of them")
        return torch.stack([self.load_image(image) for image in images])  # [n_image, 1, 3, S, S]

    def sample_frames(self, frames, num_frames: int | None = None, mode: str = "test",
                      generator: torch.Generator | None = None) -> np.ndarray:
        """All decoded frames of a video ``uint8 [T, H, W, 3]`` -> the ``num_frames`` a file would give."""
        frames = _as_uint8_frames(frames)
        num_frames = self.num_frames if num_frames is None else num_frames
        return frames[sample_frame_indices(frames.shape[0], num_frames, mode=mode, generator=generator)]

    def load_video(self, path, mode: str = "test", generator: torch.Generator | None = None,
                   start: float | None = None, end: float | None = None, num_frames: int | None = None) -> torch.Tensor:
        """Decode ``num_frames`` (default: the processor's) frames of one video file: ``float32 [T, 3, S, S]``.

        Sampling as in :func:`modeling_pig.video_io.read_video_frames`; raises its ``VideoDecodeError``.
        """
        num_frames = self.num_frames if num_frames is None else num_frames
        frames = read_video_frames(path, num_frames=num_frames, mode=mode, start=start, end=end, generator=generator)
        return self.preprocess_frames(frames)

    def load_image(self, image) -> torch.Tensor:
        """One image (path or ``PIL.Image``) as a 1-frame video: ``float32 [1, 3, S, S]``."""
        if isinstance(image, (str, os.PathLike)):
            try:
                image = open_rgb_image(image)
            except (OSError, ValueError) as err:
                raise ValueError(f"{os.fspath(image)}: not a readable image ({type(err).__name__}: {err})") from err
        elif isinstance(image, Image.Image):
            image = image.convert("RGB")
        else:
            raise ValueError(f"an image must be a path or a PIL.Image, got {type(image).__name__}")
        return self.preprocess_frames(np.asarray(image)[None])

    def preprocess_frames(self, frames) -> torch.Tensor:
        """Decoded RGB frames ``uint8 [T, H, W, 3]`` (numpy or torch) -> ``float32 [T, 3, S, S]``, CLIP-normalised.

        Every given frame is kept (no sampling: see :meth:`sample_frames`)."""
        frames = _as_uint8_frames(frames)
        if self.resize_mode == "squash":
            pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)  # [T, 3, H, W] in [0, 1]
            pixels = F.interpolate(
                pixels, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False, antialias=False
            )  # [T, 3, S, S]
        else:
            pixels = torch.from_numpy(np.stack([self._center_crop(frame) for frame in frames]))  # [T, S, S, 3] uint8
            pixels = pixels.permute(0, 3, 1, 2).float().div_(255.0)  # [T, 3, S, S]
        mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        return (pixels - mean) / std

    def _center_crop(self, frame: np.ndarray) -> np.ndarray:
        """OpenAI CLIP's resize (short side to S, PIL bicubic) and centre crop of one ``uint8 [H, W, 3]`` frame."""
        height, width = frame.shape[:2]
        size = self.image_size
        if width <= height:
            new_width, new_height = size, int(size * height / width)
        else:
            new_width, new_height = int(size * width / height), size
        resized = np.asarray(Image.fromarray(frame).resize((new_width, new_height), Image.BICUBIC))
        top, left = (new_height - size) // 2, (new_width - size) // 2
        return resized[top : top + size, left : left + size]


class PIGProcessor(ProcessorMixin):
    r"""Turns captions and videos (or images) into the inputs of :class:`~modeling_pig.PIGModel`.

    Args:
        tokenizer: a CLIP tokenizer; ``None`` builds the real one from the vocabulary shipped with the package.
        num_frames, image_size, resize_mode: the settings of :class:`PIGVideoProcessor`
            (``processor.video_processor``, also ``processor.image_processor``; ``processor.num_frames`` etc. read
            and write them).
        max_length: text length in tokens, special tokens included; by default every caption is padded (with
            ``<|endoftext|>``) or truncated to it (the authors use 50).

    ``num_frames``, ``image_size``, ``max_length`` and ``resize_mode`` are saved by :meth:`save_pretrained` in
    ``processor_config.json`` (the tokenizer files next to it), and restored by :meth:`from_pretrained` and
    ``AutoProcessor.from_pretrained``.

    Example::

        processor = PIGProcessor()
        inputs = processor(text=["a man plays a guitar"], videos=["a.mp4", "b.mp4"], return_tensors="pt")
        inputs["input_ids"].shape      # [1, 50]
        inputs["pixel_values"].shape   # [2, 12, 3, 224, 224]
        processor(text=["a cat", "a dog on a skateboard"], padding=True)["input_ids"].shape  # [2, 8]: longest
        processor(videos="a.mp4", num_frames=8)["pixel_values"].shape                       # [1, 8, 3, 224, 224]
    """

    tokenizer_class = "AutoTokenizer"

    def __init__(self, tokenizer=None, num_frames: int = 12, image_size: int = 224, max_length: int = 50,
                 resize_mode: str = "squash", **kwargs):
        if tokenizer is None:
            tokenizer = load_shipped_clip_tokenizer()
        for key in LOADING_ONLY_TOKENIZER_KWARGS:  # how this machine loaded it: not a setting to save
            tokenizer.init_kwargs.pop(key, None)
        _check_positive_int("max_length", max_length)
        if max_length < 2:
            raise ValueError(f"max_length must leave room for the start and end tokens (>= 2), got {max_length}")
        self.video_processor = PIGVideoProcessor(num_frames=num_frames, image_size=image_size, resize_mode=resize_mode)
        self.max_length = int(max_length)
        super().__init__(tokenizer, **kwargs)

    # The frame settings live on the video processor; these read and write them there.
    num_frames = property(lambda self: self.video_processor.num_frames,
                          lambda self, value: setattr(self.video_processor, "num_frames", value))
    image_size = property(lambda self: self.video_processor.image_size,
                          lambda self, value: setattr(self.video_processor, "image_size", value))
    resize_mode = property(lambda self: self.video_processor.resize_mode,
                           lambda self, value: setattr(self.video_processor, "resize_mode", value))

    @property
    def image_processor(self) -> PIGVideoProcessor:
        """The video processor, under the name ``CLIPProcessor`` / ``XCLIPProcessor`` users reach for."""
        return self.video_processor

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]

    def to_dict(self) -> dict:
        """``ProcessorMixin``'s dict plus the video processor's settings (what ``processor_config.json`` holds)."""
        return {**super().to_dict(), **self.video_processor.to_dict()}

    # ----------------------------------------------------------------------------------------------------------
    # the call

    def __call__(self, text=None, videos=None, images=None, return_tensors: str | None = "pt", mode: str = "test",
                 generator: torch.Generator | None = None, starts=None, ends=None, num_frames: int | None = None,
                 **text_kwargs) -> BatchFeature:
        """Tokenise captions and turn videos (or images) into frames.

        Args:
            text: a caption or a list of captions. Empty or whitespace-only captions raise ``ValueError``.
            videos: a video (path, or decoded ``uint8`` frames ``[T, H, W, 3]``, numpy or torch) or a list of them,
                each sampled to ``num_frames`` frames (files and frame arrays alike; ``mode``, ``generator``,
                ``starts``/``ends`` apply).
            images: an image (path or ``PIL.Image``) or a list of them; each becomes a 1-frame video
                (stage-1 pre-training). Not together with ``videos``.
            return_tensors: ``"pt"`` (torch), ``"np"`` (numpy) or ``None`` (the tokenizer's lists, numpy frames).
            mode: frame sampling, ``"test"`` (evenly spaced) or ``"train"`` (jittered ends).
            generator: random source for ``mode="train"``.
            starts, ends: optional per-video clip bounds in seconds (lists aligned with ``videos``, ``None``
                entries meaning the whole video); video files only.
            num_frames: frames per video for this call (default: the processor's ``num_frames``).
            **text_kwargs: the tokenizer's keyword arguments (``padding``, ``truncation``, ``max_length``, ...);
                the default is ``padding="max_length", truncation=True, max_length=self.max_length``.

        Returns:
            ``BatchFeature`` with ``input_ids`` and ``attention_mask`` ``[n_text, length]`` when ``text`` is given,
            and ``pixel_values`` ``float32 [n_video, T, 3, S, S]`` when ``videos`` or ``images`` are.

        Raises:
            ValueError: bad arguments or an empty caption. TypeError: an unknown keyword argument.
            VideoDecodeError: a video that cannot be decoded.
        """
        unknown = sorted(set(text_kwargs) - TOKENIZER_CALL_KWARGS)
        if unknown:
            raise TypeError(f"PIGProcessor got unexpected keyword arguments: {unknown} (tokenizer arguments: "
                            f"{sorted(TOKENIZER_CALL_KWARGS)}; frame arguments: num_frames, mode, generator, "
                            "starts, ends)")
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        if text is None and videos is None and images is None:
            raise ValueError("give at least one of text, videos or images")
        if videos is not None and images is not None:
            raise ValueError("give videos or images, not both: they make pixel_values of different frame counts")
        if num_frames is not None:
            _check_positive_int("num_frames", num_frames)
        data = {}
        if text is not None:
            data.update(self.tokenize(text, return_tensors=return_tensors, **text_kwargs))
        if videos is not None:
            data["pixel_values"] = self.video_processor.process_videos(
                videos, num_frames=num_frames, mode=mode, generator=generator, starts=starts, ends=ends
            )
        if images is not None:
            data["pixel_values"] = self.video_processor.process_images(images)
        if return_tensors != "pt" and "pixel_values" in data:
            data["pixel_values"] = data["pixel_values"].numpy()
        return BatchFeature(data=data, tensor_type=return_tensors)

    def tokenize(self, text, return_tensors: str | None = "pt", **text_kwargs) -> dict:
        """Captions -> ``input_ids`` and ``attention_mask`` ``[n_text, length]``; by default padded and truncated to
        ``max_length`` (``text_kwargs`` are the tokenizer's and override that)."""
        texts = [text] if isinstance(text, str) else text
        if not isinstance(texts, (list, tuple)) or not texts:
            raise ValueError(f"text must be a string or a non-empty list of strings, got {type(text).__name__}")
        for i, caption in enumerate(texts):
            if not isinstance(caption, str):
                raise ValueError(f"text[{i}] must be a string, got {type(caption).__name__}")
            if not caption.strip():
                raise ValueError(f"text[{i}] is empty or whitespace only: {caption!r}")
        options = {"padding": "max_length", "truncation": True, "max_length": self.max_length, **text_kwargs}
        return dict(self.tokenizer(list(texts), return_tensors=return_tensors, **options))

    # ----------------------------------------------------------------------------------------------------------
    # the video processor's pieces, here too for a trainer or an indexer that holds the processor

    def process_videos(self, videos, **sampling) -> torch.Tensor:
        """See :meth:`PIGVideoProcessor.process_videos`."""
        return self.video_processor.process_videos(videos, **sampling)

    def process_images(self, images) -> torch.Tensor:
        """See :meth:`PIGVideoProcessor.process_images`."""
        return self.video_processor.process_images(images)

    def load_video(self, path, mode: str = "test", generator: torch.Generator | None = None,
                   start: float | None = None, end: float | None = None, num_frames: int | None = None) -> torch.Tensor:
        """See :meth:`PIGVideoProcessor.load_video`: ``float32 [T, 3, S, S]``."""
        return self.video_processor.load_video(path, mode=mode, generator=generator, start=start, end=end,
                                               num_frames=num_frames)

    def load_image(self, image) -> torch.Tensor:
        """See :meth:`PIGVideoProcessor.load_image`: ``float32 [1, 3, S, S]``."""
        return self.video_processor.load_image(image)

    def preprocess_frames(self, frames) -> torch.Tensor:
        """See :meth:`PIGVideoProcessor.preprocess_frames`: ``float32 [T, 3, S, S]``, every given frame."""
        return self.video_processor.preprocess_frames(frames)


def open_rgb_image(source) -> Image.Image:
    """An RGB ``PIL.Image`` from a path, a ``PIL.Image``, or a ``datasets`` ``Image(decode=False)`` record
    ``{"bytes": ..., "path": ...}``. An unreadable file raises PIL's ``OSError`` (``UnidentifiedImageError``)."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, dict):
        if source.get("bytes"):
            source = io.BytesIO(source["bytes"])
        elif source.get("path"):
            source = source["path"]
        else:
            raise ValueError(f"image record {source!r} has neither bytes nor path")
    with Image.open(source) as image:
        image.load()
        return image.convert("RGB")


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _per_video(name: str, values, count: int) -> list:
    if values is None:
        return [None] * count
    if isinstance(values, (int, float)):
        raise ValueError(f"{name} must be a list with one entry (seconds or None) per video")
    values = list(values)
    if len(values) != count:
        raise ValueError(f"{name} has {len(values)} entries for {count} videos")
    return values


def _as_uint8_frames(frames) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        shape = getattr(frames, "shape", None)
        raise ValueError(f"frames must be an array [T, H, W, 3] with T >= 1, got {type(frames).__name__} {shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB (0..255), got {frames.dtype}")
    if not (frames.flags.c_contiguous and frames.flags.writeable):  # e.g. np.asarray(PIL image) is read-only
        frames = np.array(frames, order="C")
    return frames


AutoProcessor.register(PIGConfig, PIGProcessor, exist_ok=True)
PIGProcessor.register_for_auto_class("AutoProcessor")
