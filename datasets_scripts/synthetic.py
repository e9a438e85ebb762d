"""The embedded synthetic benchmark: short procedurally generated videos with compositional captions.

Each video shows `num_events` coloured shapes on a dark background; each shape does one thing, one after the
other ("a red square moves left, then a blue circle appears at the top"). Retrieval therefore depends on
fine-grained detail: colour, shape, action and the order of events. The test set is built in *families*: a base
scene plus variants that change exactly one attribute (a colour, a shape, an action, or the order of events), so
every test video has distractors that share most of its description.

Files (all written by `generate_synthetic`, once, into a cache folder):
    manifest.json                  generation parameters and counts; written last (its presence = complete)
    annotations/{train,test,images}.jsonl
    videos/{train,test}/<video_id>.mp4   h264, yuv420p, `resolution` x `resolution`, `fps`
    images/<image_id>.png          static scenes for stage-1 image-text pre-training

Load with `load_benchmark("synthetic", data_dir=cache_dir, split="train" | "test" | "images")`. The "images"
split has the same columns; its `video` is a png path (a one-frame video) and its captions describe where the
shapes are ("a red square at the top left and a blue circle in the center").

Everything is drawn from `numpy.random.default_rng(seed)` streams, converted to yuv420p with integer numpy math
and encoded by a single-threaded libx264, so the same seed gives identical captions, identical mp4 bytes and
identical decoded pixels, in any process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
import datasets
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .common import BenchmarkBuilder, BenchmarkConfig, BenchmarkFileError, base_features

logger = logging.getLogger(__name__)

# Bump when the drawing, the captions or the file layout change: old caches are then regenerated.
GENERATOR_VERSION = 2  # 2: RGB -> yuv420p in integer numpy (was swscale)
MANIFEST = "manifest.json"
SPLITS = ("train", "test", "images")

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "white": (240, 240, 240),
    "purple": (170, 60, 210),
}
SHAPES = ("square", "circle", "triangle", "cross")
BACKGROUND = (25, 25, 30)
# action -> (caption phrase, paraphrase)
ACTIONS = {
    "move_left": ("moves left", "slides to the left"),
    "move_right": ("moves right", "slides to the right"),
    "move_up": ("moves up", "travels upwards"),
    "move_down": ("moves down", "travels downwards"),
    "appear_top": ("appears at the top", "shows up at the top"),
    "appear_bottom": ("appears at the bottom", "shows up at the bottom"),
    "appear_left": ("appears on the left", "shows up on the left"),
    "appear_right": ("appears on the right", "shows up on the right"),
    "disappear": ("disappears", "vanishes"),
    "grow": ("grows", "gets bigger"),
    "shrink": ("shrinks", "gets smaller"),
}
# 3x3 grid cells of the image split: (row, col) -> phrase
POSITIONS = {
    (0, 0): "at the top left", (0, 1): "at the top", (0, 2): "at the top right",
    (1, 0): "on the left", (1, 1): "in the center", (1, 2): "on the right",
    (2, 0): "at the bottom left", (2, 1): "at the bottom", (2, 2): "at the bottom right",
}
OBJECT_RADIUS = 0.09      # half size of a shape, as a fraction of the frame side
MOVE_FROM, MOVE_TO = 0.8, 0.2
SCALE_GROW, SCALE_SHRINK = 1.8, 0.45
MAX_LAYOUT_TRIES = 200
AVCOL_SPC_SMPTE170M, AVCOL_RANGE_MPEG = 6, 1  # FFmpeg's AVColorSpace BT.601 (525) and AVColorRange limited


@dataclass(frozen=True)
class Event:
    """One thing that happens: a shape of a colour performs an action."""
    colour: str
    shape: str
    action: str

    def phrase(self, paraphrase: bool = False) -> str:
        return f"a {self.colour} {self.shape} {ACTIONS[self.action][int(paraphrase)]}"


Scene = tuple[Event, ...]  # events in the order they happen; one object per event, objects distinct


def caption(scene: Scene, template: int = 0) -> str:
    """Caption of a scene. Template 0 is the canonical (test) form; 1 and 2 are paraphrases, 2 states the
    events in reverse with "after" so that word order alone does not give the order of events."""
    if template == 0 or len(scene) == 1 and template == 2:
        return ", then ".join(e.phrase() for e in scene)
    parts = [e.phrase(paraphrase=True) for e in scene]
    if template == 1:
        if len(scene) == 1:
            return f"in this video {parts[0]}"
        return "first " + ", then ".join(parts[:-1]) + ", and after that " + parts[-1]
    if template == 2:
        return f"{scene[-1].phrase()} after " + ", then ".join(e.phrase() for e in scene[:-1])
    raise ValueError(f"caption template {template} does not exist (0, 1 or 2)")


# --------------------------------------------------------------------------------------------------------------
# scenes

def _random_object(rng: np.random.Generator, taken: set[tuple[str, str]]) -> tuple[str, str]:
    while True:
        obj = (str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)))
        if obj not in taken:
            return obj


def random_scene(rng: np.random.Generator, num_events: int) -> Scene:
    """A scene of `num_events` distinct objects (colour, shape), each with a random action."""
    taken: set[tuple[str, str]] = set()
    events = []
    for _ in range(num_events):
        colour, shape = _random_object(rng, taken)
        taken.add((colour, shape))
        events.append(Event(colour, shape, str(rng.choice(list(ACTIONS)))))
    return tuple(events)


def scene_variant(scene: Scene, rng: np.random.Generator) -> Scene:
    """The scene with exactly one attribute changed: one colour, one shape, one action, or the event order."""
    kinds = ["colour", "shape", "action"] + (["order"] if len(scene) > 1 else [])
    kind = str(rng.choice(kinds))
    if kind == "order":
        return tuple(reversed(scene)) if len(scene) == 2 else tuple(scene[i] for i in rng.permutation(len(scene)))
    index = int(rng.integers(len(scene)))
    event = scene[index]
    others = {(e.colour, e.shape) for i, e in enumerate(scene) if i != index}
    if kind == "action":
        new = Event(event.colour, event.shape, str(rng.choice([a for a in ACTIONS if a != event.action])))
    elif kind == "colour":
        choices = [c for c in COLOURS if c != event.colour and (c, event.shape) not in others]
        new = Event(str(rng.choice(choices)), event.shape, event.action)
    else:
        choices = [s for s in SHAPES if s != event.shape and (event.colour, s) not in others]
        new = Event(event.colour, str(rng.choice(choices)), event.action)
    return scene[:index] + (new,) + scene[index + 1:]


# --------------------------------------------------------------------------------------------------------------
# layout and drawing

def _event_frames(num_frames: int, num_events: int, index: int) -> tuple[int, int]:
    """Frames [a, b) during which event `index` happens (the video is cut into equal parts)."""
    return round(index * num_frames / num_events), round((index + 1) * num_frames / num_events)


def _layout(scene: Scene, rng: np.random.Generator) -> list[dict]:
    """Random start/end centres (fractions of the frame) consistent with each action."""
    layout = []
    for event in scene:
        free = rng.uniform(0.2, 0.8, size=2)
        start = end = (float(free[0]), float(free[1]))
        side = float(rng.uniform(0.3, 0.7))
        if event.action == "move_left":
            start, end = (MOVE_FROM, start[1]), (MOVE_TO, start[1])
        elif event.action == "move_right":
            start, end = (MOVE_TO, start[1]), (MOVE_FROM, start[1])
        elif event.action == "move_up":
            start, end = (start[0], MOVE_FROM), (start[0], MOVE_TO)
        elif event.action == "move_down":
            start, end = (start[0], MOVE_TO), (start[0], MOVE_FROM)
        elif event.action == "appear_top":
            start = end = (side, MOVE_TO)
        elif event.action == "appear_bottom":
            start = end = (side, MOVE_FROM)
        elif event.action == "appear_left":
            start = end = (MOVE_TO, side)
        elif event.action == "appear_right":
            start = end = (MOVE_FROM, side)
        layout.append({"start": start, "end": end})
    return layout


def _object_states(scene: Scene, layout: list[dict], num_frames: int) -> np.ndarray:
    """Per frame and object: (visible, x, y, scale). Returns float array [T, n_objects, 4]."""
    states = np.zeros((num_frames, len(scene), 4))
    for index, (event, place) in enumerate(zip(scene, layout)):
        a, b = _event_frames(num_frames, len(scene), index)
        for t in range(num_frames):
            progress = min(max((t - a) / max(b - a - 1, 1), 0.0), 1.0)
            x = place["start"][0] + progress * (place["end"][0] - place["start"][0])
            y = place["start"][1] + progress * (place["end"][1] - place["start"][1])
            visible, scale = 1.0, 1.0
            if event.action.startswith("appear"):
                visible = float(t >= a and progress > 0.3)
            elif event.action == "disappear":
                visible = float(t < a or progress < 0.5)
            elif event.action == "grow":
                scale = 1.0 + progress * (SCALE_GROW - 1.0)
            elif event.action == "shrink":
                scale = 1.0 + progress * (SCALE_SHRINK - 1.0)
            states[t, index] = (visible, x, y, scale)
    return states


def _separated(states: np.ndarray, resolution: int) -> bool:
    """True when no two visible objects' bounding boxes touch in any frame (so every object stays readable)."""
    radius = OBJECT_RADIUS * resolution
    for frame in states:
        for i in range(len(frame)):
            for j in range(i + 1, len(frame)):
                if frame[i, 0] and frame[j, 0]:
                    gap = max(abs(frame[i, 1] - frame[j, 1]), abs(frame[i, 2] - frame[j, 2])) * resolution
                    if gap <= radius * (frame[i, 3] + frame[j, 3]) + 2:
                        return False
    return True


def _plan(scene: Scene, rng: np.random.Generator, num_frames: int, resolution: int) -> np.ndarray | None:
    """Object states [T, n, 4] of a layout where objects never overlap, or None if none was found."""
    for _ in range(MAX_LAYOUT_TRIES):
        states = _object_states(scene, _layout(scene, rng), num_frames)
        if _separated(states, resolution):
            return states
    return None


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Boolean mask of a shape centred at the origin; dx, dy are pixel offsets [H, W]."""
    if shape == "square":
        return (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
    if shape == "circle":
        return dx ** 2 + dy ** 2 <= radius ** 2
    if shape == "triangle":  # pointing up: width grows from the apex (dy = -radius) to the base (dy = radius)
        return (dy >= -radius) & (dy <= radius) & (np.abs(dx) <= (dy + radius) / 2)
    if shape == "cross":
        arm = radius / 3
        return (((np.abs(dx) <= radius) & (np.abs(dy) <= arm))
                | ((np.abs(dy) <= radius) & (np.abs(dx) <= arm)))
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render_frame(objects: list[tuple[str, str, float, float, float]], resolution: int) -> np.ndarray:
    """Draw (colour, shape, x, y, scale) objects, later ones on top. Returns uint8 [resolution, resolution, 3]."""
    frame = np.empty((resolution, resolution, 3), dtype=np.uint8)
    frame[:] = BACKGROUND
    ys, xs = np.mgrid[0:resolution, 0:resolution].astype(np.float64) + 0.5  # pixel centres, [H, W] each
    for colour, shape, x, y, scale in objects:
        mask = _shape_mask(shape, xs - x * resolution, ys - y * resolution, OBJECT_RADIUS * resolution * scale)
        frame[mask] = COLOURS[colour]
    return frame


def render_video(scene: Scene, states: np.ndarray, resolution: int) -> np.ndarray:
    """Frames of a scene from its object states [T, n, 4]. Returns uint8 [T, resolution, resolution, 3]."""
    frames = []
    for frame_states in states:
        objects = [(e.colour, e.shape, s[1], s[2], s[3]) for e, s in zip(scene, frame_states) if s[0]]
        frames.append(render_frame(objects, resolution))
    return np.stack(frames)


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """BT.601 limited-range yuv420p planes of a uint8 RGB frame [H, W, 3] (H, W even), in exact integer math.

    Returns uint8 [H * 3 // 2, W]: the Y plane, then the U and V planes (each H/2 x W/2) laid out row after row,
    which is the layout `av.VideoFrame.from_ndarray(..., format="yuv420p")` takes. Chroma is the mean of each 2x2
    block (centre siting). Integer arithmetic only, so the planes depend on nothing but the pixels: not on
    swscale's code path (SIMD level, slice threads, buffer alignment) nor on any state left in the process.
    """
    r, g, b = (frame[..., channel].astype(np.int32) for channel in range(3))
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16            # the usual 8-bit BT.601 coefficients (x256)

    def block_sum(channel):                                       # sum of each 2x2 block, 0..1020
        return channel[0::2, 0::2] + channel[0::2, 1::2] + channel[1::2, 0::2] + channel[1::2, 1::2]

    rs, gs, bs = block_sum(r), block_sum(g), block_sum(b)
    u = ((-38 * rs - 74 * gs + 112 * bs + 512) >> 10) + 128       # (x256 coefficients) x (4 pixels) = >> 10
    v = ((112 * rs - 94 * gs - 18 * bs + 512) >> 10) + 128
    height, width = y.shape
    planes = [y.reshape(-1), u.reshape(-1), v.reshape(-1)]
    return np.concatenate(planes).astype(np.uint8).reshape(height * 3 // 2, width)


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int) -> None:
    """Encode uint8 RGB frames [T, H, W, 3] (H, W even) as h264/yuv420p mp4 (BT.601, limited range), reproducibly.

    The RGB -> yuv420p conversion is `rgb_to_yuv420p` (integer numpy), so the encoder gets frames in its own
    pixel format and swscale never runs; libx264 runs with one thread (its SEI records `threads=1`), which makes
    it deterministic. Same frames -> same bytes, whatever ran before in the process.
    """
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "12", "preset": "fast",
                                                                    "threads": "1"})
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        context = stream.codec_context
        context.thread_count = 1
        context.colorspace, context.color_range = AVCOL_SPC_SMPTE170M, AVCOL_RANGE_MPEG  # what rgb_to_yuv420p makes
        for array in frames:
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(array), format="yuv420p")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


# --------------------------------------------------------------------------------------------------------------
# generation

def _video_records(split: str, planned: list[tuple[Scene, np.ndarray]], params: dict, out: Path,
                   bar: tqdm) -> list[dict]:
    """Render, encode and describe the videos of one split (scenes with their object states)."""
    records = []
    folder = out / "videos" / split
    folder.mkdir(parents=True, exist_ok=True)
    templates = [0] if split == "test" else list(range(params["captions_per_train_video"]))
    for index, (scene, states) in enumerate(planned):
        video_id = f"synthetic-{split}-{index:05d}"
        frames = render_video(scene, states, params["resolution"])  # [T, R, R, 3]
        write_mp4(folder / f"{video_id}.mp4", frames, params["fps"])
        records.append({
            "video_id": video_id,
            "relative_path": f"videos/{split}/{video_id}.mp4",
            "captions": [caption(scene, t) for t in templates],
            "attributes": [f"{e.colour} {e.shape} {e.action}" for e in scene],
        })
        bar.update(1)
    return records


def _test_scenes(rng: np.random.Generator, params: dict) -> list[tuple[Scene, np.ndarray]]:
    """Families of scenes: a random base then variants differing from it in one attribute; all distinct.
    Returns (scene, object states [T, n, 4]) pairs."""
    planned: list[tuple[Scene, np.ndarray]] = []
    seen: set[Scene] = set()
    frames, resolution = params["num_frames_per_video"], params["resolution"]
    while len(planned) < params["num_test"]:
        base = random_scene(rng, params["num_events"])
        states = None if base in seen else _plan(base, rng, frames, resolution)
        if states is None:
            continue
        family = [(base, states)]
        members = {base}
        for _ in range(20 * params["test_family_size"]):
            if len(family) >= min(params["test_family_size"], params["num_test"] - len(planned)):
                break
            variant = scene_variant(base, rng)
            if variant in seen or variant in members:
                continue
            states = _plan(variant, rng, frames, resolution)
            if states is not None:
                family.append((variant, states))
                members.add(variant)
        planned.extend(family)
        seen.update(members)
    return planned


def _train_scenes(rng: np.random.Generator, params: dict, exclude: set[Scene]) -> list[tuple[Scene, np.ndarray]]:
    """Distinct random scenes, none of them a test scene, with their object states [T, n, 4]."""
    planned: list[tuple[Scene, np.ndarray]] = []
    seen = set(exclude)
    tries = 0
    while len(planned) < params["num_train"]:
        tries += 1
        if tries > 1000 * (params["num_train"] + 10):
            raise RuntimeError(f"could not draw {params['num_train']} distinct training scenes with "
                               f"{params['num_events']} events; ask for fewer videos")
        scene = random_scene(rng, params["num_events"])
        if scene in seen:
            continue
        states = _plan(scene, rng, params["num_frames_per_video"], params["resolution"])
        if states is not None:
            planned.append((scene, states))
            seen.add(scene)
    return planned


def _image_records(rng: np.random.Generator, params: dict, out: Path, bar: tqdm) -> list[dict]:
    """Static scenes of 1-3 shapes in distinct cells of a 3x3 grid, written as png, with two captions each."""
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    cells = list(POSITIONS)
    for index in range(params["num_images"]):
        count = int(rng.integers(1, 4))
        taken: set[tuple[str, str]] = set()
        chosen = [cells[i] for i in rng.choice(len(cells), size=count, replace=False)]
        objects, phrases = [], []
        for row, col in chosen:
            colour, shape = _random_object(rng, taken)
            taken.add((colour, shape))
            jitter = rng.uniform(-0.04, 0.04, size=2)
            objects.append((colour, shape, 0.2 + 0.3 * col + float(jitter[0]), 0.2 + 0.3 * row + float(jitter[1]),
                            1.0))
            phrases.append(f"a {colour} {shape} {POSITIONS[(row, col)]}")
        image_id = f"synthetic-image-{index:05d}"
        Image.fromarray(render_frame(objects, params["resolution"])).save(folder / f"{image_id}.png")
        records.append({
            "video_id": image_id,
            "relative_path": f"images/{image_id}.png",
            "captions": [_join_phrases(phrases), "there is " + _join_phrases(phrases[::-1])],
            "attributes": [f"{c} {s} {POSITIONS[cell].split(' ', 1)[1].removeprefix('the ').replace(' ', '_')}"
                           for (c, s, *_), cell in zip(objects, chosen)],
        })
        bar.update(1)
    return records


def _join_phrases(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True) + "\n")


def _write_benchmark(out: Path, params: dict, progress: bool) -> None:
    """Everything but the move into place: scenes, videos, images, annotations, then the manifest (last)."""
    seed = params["seed"]
    # independent streams: the test set does not change when num_train changes, and so on
    test_rng, train_rng, image_rng = (np.random.default_rng([seed, k]) for k in range(3))
    test_scenes = _test_scenes(test_rng, params)
    train_scenes = _train_scenes(train_rng, params, exclude={scene for scene, _ in test_scenes})
    total = params["num_train"] + params["num_test"] + params["num_images"]
    with tqdm(total=total, desc="synthetic benchmark", unit="file", disable=not progress) as bar:
        records = {
            "train": _video_records("train", train_scenes, params, out, bar),
            "test": _video_records("test", test_scenes, params, out, bar),
            "images": _image_records(image_rng, params, out, bar),
        }
    for split, split_records in records.items():
        _write_jsonl(out / "annotations" / f"{split}.jsonl", split_records)
    manifest = {
        "format": "pig-hf synthetic benchmark",
        "params": params,
        "counts": {split: len(split_records) for split, split_records in records.items()},
        "files": {split: f"annotations/{split}.jsonl" for split in records},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_manifest(cache_dir: str | os.PathLike) -> dict | None:
    """The manifest of a complete synthetic benchmark in `cache_dir`, or None when there is none."""
    path = Path(cache_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); delete the folder to regenerate") from error


def generate_synthetic(cache_dir: str | os.PathLike, seed: int = 0, num_train: int = 300, num_test: int = 100,
                       num_images: int = 300, num_frames_per_video: int = 16, resolution: int = 64, fps: int = 8,
                       num_events: int = 2, captions_per_train_video: int = 3, test_family_size: int = 4,
                       progress: bool = True) -> Path:
    """Generate the synthetic benchmark into `cache_dir` (once) and return its absolute path.

    If `cache_dir` already holds a benchmark generated with the same parameters nothing is done; with other
    parameters it is replaced. Generation happens in a temporary sibling folder that is renamed into place when
    complete, so an interrupted run never leaves something that looks finished. A non-empty `cache_dir` that
    is not a synthetic benchmark is refused (FileExistsError) rather than overwritten.

    num_train / num_test / num_images: videos per split and stage-1 images; num_frames_per_video, fps: length of
    each mp4; resolution: frame side in pixels (even); num_events: events (= objects) per video;
    captions_per_train_video: 1-3 paraphrases per training video (test videos get one caption each);
    test_family_size: test videos per family of near-duplicates (1 = no deliberate distractors).
    """
    params = {"version": GENERATOR_VERSION, "seed": int(seed), "num_train": int(num_train),
              "num_test": int(num_test), "num_images": int(num_images),
              "num_frames_per_video": int(num_frames_per_video), "resolution": int(resolution), "fps": int(fps),
              "num_events": int(num_events), "captions_per_train_video": int(captions_per_train_video),
              "test_family_size": int(test_family_size)}
    _validate(params)
    target = Path(cache_dir).resolve()
    existing = read_manifest(target)
    if existing is not None and existing.get("params") == params:
        return target
    if target.exists() and existing is None and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists and is not a synthetic benchmark (no {MANIFEST}); "
                              "choose an empty or new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        logger.info("generating the synthetic benchmark in %s (%s)", target, params)
        _write_benchmark(staging, params, progress)
        _move_into_place(staging, target, params)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def _move_into_place(staging: Path, target: Path, params: dict) -> None:
    """Replace `target` by the complete `staging` folder with renames (the old one is removed afterwards)."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent)) / "data"
        os.rename(target, old)
    try:
        os.rename(staging, target)
    except OSError:
        # another process put a benchmark there in between: fine if it is the one we wanted
        finished = read_manifest(target)
        if finished is None or finished.get("params") != params:
            raise
    finally:
        if old is not None:
            shutil.rmtree(old.parent)


def _validate(params: dict) -> None:
    if params["resolution"] < 16 or params["resolution"] % 2:
        raise ValueError(f"resolution={params['resolution']}: expected an even number >= 16 (yuv420p)")
    if params["num_frames_per_video"] < 2 * params["num_events"]:
        raise ValueError(f"num_frames_per_video={params['num_frames_per_video']}: expected at least 2 frames "
                         f"per event ({params['num_events']} events)")
    if not 1 <= params["num_events"] <= 3:
        raise ValueError(f"num_events={params['num_events']}: expected 1, 2 or 3")
    if not 1 <= params["captions_per_train_video"] <= 3:
        raise ValueError(f"captions_per_train_video={params['captions_per_train_video']}: expected 1, 2 or 3")
    for key in ("num_train", "num_test", "num_images"):
        if params[key] < 0:
            raise ValueError(f"{key}={params[key]}: expected >= 0")
    if params["test_family_size"] < 1 or params["fps"] < 1:
        raise ValueError("test_family_size and fps must be >= 1")


# --------------------------------------------------------------------------------------------------------------
# the datasets builder

class SyntheticBenchmark(BenchmarkBuilder):
    """The synthetic benchmark generated by `generate_synthetic` (data_dir = its cache folder)."""

    BENCHMARK_NAME = "synthetic"
    BUILDER_CONFIGS = [BenchmarkConfig(name="default", split_names=SPLITS,
                                       description="train: 1-3 captions per video; test: one caption per video "
                                                   "(square protocol); images: png scenes for stage 1")]

    def _features(self) -> datasets.Features:
        # attributes: "colour shape action" per event (videos) or "colour shape position" per object (images)
        return base_features(attributes=datasets.List(datasets.Value("string")))

    @classmethod
    def split_files(cls, config, split, data_dir):
        manifest = read_manifest(data_dir)
        if manifest is None:
            raise BenchmarkFileError(f"{data_dir} holds no synthetic benchmark ({MANIFEST} missing); create it with "
                                     "datasets_scripts.synthetic.generate_synthetic(cache_dir)")
        annotations = Path(data_dir) / manifest["files"][split]
        if not annotations.is_file():
            raise BenchmarkFileError(f"{annotations}: listed in {MANIFEST} but missing; regenerate the benchmark")
        return {"manifest": Path(data_dir) / MANIFEST, "annotations": annotations}

    def _rows_for_split(self, split, files):
        rows = []
        with open(files["annotations"], encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, 1):
                record = json.loads(line)
                missing = {"video_id", "relative_path", "captions", "attributes"} - set(record)
                if missing:
                    raise ValueError(f"{files['annotations']}:{line_number}: missing field(s) {sorted(missing)}")
                rows.append({**record, "start": None, "end": None})
        return rows
