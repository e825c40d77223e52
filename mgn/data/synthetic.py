"""The embedded synthetic re-ID data set: generated on first use, in Market-1501 layout and naming.

Every identity has a coarse appearance (upper and lower clothing colour, body shape, skin, hair)
shared with one other identity of its "family", and fine local details of its own (a chest emblem
of some shape, colour and height, a belt, shoes, a bag on one side), so that part features have
something to find that a global colour summary misses. Every camera has its own background
texture, illumination and colour cast, person scale, viewpoint shift, front or back view (the back
hides the emblem), blur and chance of partial occlusion; every image adds pose, placement and
noise. Gallery junk (``-1``: background and fragments) and distractors (``0000``: people outside
the identity set) are included, and ``gt_bbox`` holds extra images for the multiple-query protocol.

Each image is drawn from its own seeded generator (seed, kind, identity, index), so the same
``SyntheticConfig`` gives the same bytes, whatever the order of generation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mgn.config import SyntheticConfig
from mgn.processes import alive

T = TypeVar("T")

GENERATOR_VERSION = 1  # bump when the drawing changes: it is part of the cache folder name
HEIGHT, WIDTH = 128, 64  # Market-1501 crop size
JPEG_QUALITY = 92
MULTI_QUERY_PER_QUERY = 2

PALETTE = np.array(
    [
        (200, 30, 30), (30, 60, 190), (240, 240, 235), (25, 25, 25), (40, 150, 60), (235, 200, 40),
        (120, 120, 125), (130, 60, 160), (240, 120, 30), (110, 70, 40), (80, 200, 210), (230, 120, 170),
    ],
    dtype=np.float32,
)  # fmt: skip
SKIN = np.array([(240, 200, 170), (205, 150, 110), (150, 100, 70), (95, 60, 40)], dtype=np.float32)
EMBLEMS = ("circle", "square", "triangle", "cross", "hstripes", "vstripes")
TEXTURES = ("hgradient", "vstripes", "checker", "noise")


@dataclass(frozen=True)
class Identity:
    upper: int
    lower: int
    skin: int
    hair: int
    body_width: float
    body_height: float
    emblem: str
    emblem_color: int
    emblem_y: float  # fraction of the torso height
    belt: int  # palette index, -1 = none
    shoes: int
    bag_side: int  # -1 left, 0 none, 1 right
    bag_color: int
    long_sleeves: bool


@dataclass(frozen=True)
class Camera:
    background: tuple[float, float, float]
    texture: str
    gain: float
    cast: tuple[float, float, float]
    scale: float  # person height as a fraction of the crop
    shift: float  # viewpoint shift, fraction of the width
    back_view: bool
    blur: float
    occlusion: float  # probability of a partial occluder


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def make_identity(rng: np.random.Generator, coarse: Identity | None = None) -> Identity:
    """A random identity; with ``coarse`` given, keep its coarse look and redraw only the details."""
    colors = rng.choice(len(PALETTE), size=2, replace=False)
    base = coarse or Identity(
        upper=int(colors[0]), lower=int(colors[1]), skin=int(rng.integers(len(SKIN))),
        hair=int(rng.choice([3, 9, 5, 6])), body_width=float(rng.uniform(0.85, 1.15)),
        body_height=float(rng.uniform(0.9, 1.05)), emblem="", emblem_color=0, emblem_y=0.0,
        belt=-1, shoes=0, bag_side=0, bag_color=0, long_sleeves=bool(rng.integers(2)),
    )  # fmt: skip
    detail_colors = [c for c in range(len(PALETTE)) if c != base.upper]
    return Identity(
        upper=base.upper, lower=base.lower, skin=base.skin, hair=base.hair,
        body_width=base.body_width, body_height=base.body_height, long_sleeves=base.long_sleeves,
        emblem=str(rng.choice(EMBLEMS)), emblem_color=int(rng.choice(detail_colors)),
        emblem_y=float(rng.uniform(0.2, 0.6)), belt=int(rng.choice([-1, *detail_colors[:6]])),
        shoes=int(rng.choice(len(PALETTE))), bag_side=int(rng.choice([-1, 0, 1])),
        bag_color=int(rng.choice(len(PALETTE))),
    )  # fmt: skip


def _triple(values: Iterable[T]) -> tuple[T, T, T]:
    a, b, c = values
    return a, b, c


def make_camera(rng: np.random.Generator) -> Camera:
    return Camera(
        background=_triple(float(v) for v in rng.uniform(40, 200, size=3)),
        texture=str(rng.choice(TEXTURES)), gain=float(rng.uniform(0.65, 1.25)),
        cast=_triple(float(v) for v in rng.uniform(0.85, 1.15, size=3)), scale=float(rng.uniform(0.72, 0.95)),
        shift=float(rng.uniform(-0.08, 0.08)), back_view=bool(rng.random() < 0.3),
        blur=float(rng.choice([0.0, 0.5, 1.0])), occlusion=float(rng.uniform(0.0, 0.35)),
    )  # fmt: skip


def _background(camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32 background in the camera's texture."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = np.array(camera.background, dtype=np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    if camera.texture == "hgradient":
        pattern = (y / HEIGHT - 0.5) * 80
    elif camera.texture == "vstripes":
        pattern = 30 * np.sign(np.sin(x / 3.0 + phase))
    elif camera.texture == "checker":
        pattern = 25 * np.sign(np.sin(x / 5.0 + phase) * np.sin(y / 5.0))
    else:
        pattern = rng.normal(0, 18, size=(HEIGHT, WIDTH)).astype(np.float32)
    background: np.ndarray = np.clip(base[None, None, :] + pattern[..., None], 0, 255)
    return background


def _draw_person(
    draw: ImageDraw.ImageDraw, who: Identity, camera: Camera, rng: np.random.Generator, jitter: float
) -> None:
    def color(index: int, spread: float = 12) -> tuple[int, int, int]:
        return _triple(int(v) for v in np.clip(PALETTE[index] + rng.normal(0, spread, 3), 0, 255))

    height = HEIGHT * camera.scale * who.body_height * rng.uniform(0.95, 1.05)
    cx = WIDTH / 2 + WIDTH * (camera.shift + rng.normal(0, jitter))
    top = (HEIGHT - height) / 2 + HEIGHT * rng.normal(0, jitter)
    half = 0.17 * height * 0.5 * who.body_width * 2  # torso half-width
    head_r = 0.075 * height
    neck = top + 2 * head_r
    waist = neck + 0.36 * height
    feet = top + height
    skin = tuple(int(v) for v in SKIN[who.skin])
    # legs, with a random stride
    stride = rng.uniform(0.0, 0.5) * half
    leg = 0.45 * half
    for sign in (-1, 1):
        x0 = cx + sign * (0.5 * half + stride / 2) - leg
        draw.rectangle([x0, waist, x0 + 2 * leg * 0.9, feet - 0.04 * height], fill=color(who.lower))
        draw.rectangle([x0 - 1, feet - 0.05 * height, x0 + 2 * leg, feet], fill=color(who.shoes, 6))
    # arms (sleeves in the upper colour, hands in skin)
    arm = 0.28 * half
    swing = rng.uniform(-0.06, 0.06) * height
    sleeve = color(who.upper)
    for sign in (-1, 1):
        x0 = cx + sign * (half + arm) - arm
        bottom = waist + 0.06 * height + sign * swing
        sleeve_end = bottom if who.long_sleeves else neck + 0.15 * height
        draw.rectangle([x0, neck + 2, x0 + 2 * arm, bottom], fill=skin)
        draw.rectangle([x0, neck + 2, x0 + 2 * arm, sleeve_end], fill=sleeve)
    # torso
    draw.rectangle([cx - half, neck, cx + half, waist], fill=color(who.upper))
    if who.belt >= 0:
        draw.rectangle([cx - half, waist - 0.03 * height, cx + half, waist], fill=color(who.belt, 4))
    # the chest emblem: a fine detail visible only from the front
    if not camera.back_view:
        ey = neck + who.emblem_y * (waist - neck)
        r = 0.26 * half
        box = [cx - r, ey - r, cx + r, ey + r]
        ink = color(who.emblem_color, 6)
        if who.emblem == "circle":
            draw.ellipse(box, fill=ink)
        elif who.emblem == "square":
            draw.rectangle(box, fill=ink)
        elif who.emblem == "triangle":
            draw.polygon([(cx, ey - r), (cx - r, ey + r), (cx + r, ey + r)], fill=ink)
        elif who.emblem == "cross":
            draw.rectangle([cx - r, ey - r / 3, cx + r, ey + r / 3], fill=ink)
            draw.rectangle([cx - r / 3, ey - r, cx + r / 3, ey + r], fill=ink)
        elif who.emblem == "hstripes":
            for k in range(3):
                y0 = ey - r + k * (2 * r / 3)
                draw.rectangle([cx - half + 1, y0, cx + half - 1, y0 + r / 4], fill=ink)
        else:
            for k in range(3):
                x0 = cx - r + k * r
                draw.rectangle([x0, neck + 2, x0 + r / 3, waist - 2], fill=ink)
    # a bag on one side (mirrored in the back view)
    if who.bag_side != 0:
        side = -who.bag_side if camera.back_view else who.bag_side
        bx = cx + side * (half + 2 * arm)
        draw.rectangle(
            [bx - 0.5 * half, waist - 0.1 * height, bx + 0.5 * half, waist + 0.1 * height],
            fill=color(who.bag_color),
        )
    # head and hair
    draw.ellipse([cx - head_r, top, cx + head_r, top + 2 * head_r], fill=skin)
    draw.chord([cx - head_r, top - 1, cx + head_r, top + 1.6 * head_r], 180, 360, fill=color(who.hair, 8))


def render(
    who: Identity | None, camera: Camera, rng: np.random.Generator, jitter: float, fragment: bool = False
) -> Image.Image:
    """One 128x64 crop of ``who`` (None: background only) seen by ``camera``."""
    canvas = Image.fromarray(_background(camera, rng).astype(np.uint8))
    if who is not None:
        _draw_person(ImageDraw.Draw(canvas), who, camera, rng, jitter)
    if fragment:  # junk: a badly cut detection, most of the crop is one corner
        x0, y0 = int(rng.integers(0, WIDTH // 2)), int(rng.integers(0, HEIGHT // 2))
        canvas = canvas.crop((x0, y0, x0 + WIDTH // 2, y0 + HEIGHT // 2)).resize((WIDTH, HEIGHT))
    draw = ImageDraw.Draw(canvas)
    if rng.random() < camera.occlusion:  # a partial occluder (car, pole, another pedestrian)
        shade = _triple(int(v) for v in rng.uniform(20, 220, 3))
        if rng.random() < 0.5:
            draw.rectangle([0, HEIGHT * rng.uniform(0.65, 0.8), WIDTH, HEIGHT], fill=shade)
        else:
            left = rng.uniform(-0.1, 0.7) * WIDTH
            draw.rectangle([left, 0, left + rng.uniform(0.15, 0.3) * WIDTH, HEIGHT], fill=shade)
    if camera.blur > 0:
        canvas = canvas.filter(ImageFilter.GaussianBlur(camera.blur))
    pixels = np.asarray(canvas, dtype=np.float32)
    light = camera.gain * rng.uniform(0.9, 1.1) * np.array(camera.cast, dtype=np.float32)
    pixels = pixels * light[None, None, :] + rng.normal(0, 6, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _name(pid: int, camid: int, frame: int, box: int) -> str:
    pid_text = "-1" if pid == -1 else f"{pid:04d}"
    return f"{pid_text}_c{camid + 1}s1_{frame:06d}_{box:02d}.jpg"


def _plan(config: SyntheticConfig) -> list[tuple[str, int, int, int, int]]:
    """Every image to draw: (split folder, pid, camera, per-id index, box number)."""
    rng = _rng(config.seed, 1)
    plan: list[tuple[str, int, int, int, int]] = []
    num_ids = config.num_train_ids + config.num_test_ids
    for pid in range(1, num_ids + 1):
        max_cams = max(2, min(config.num_cameras, 4, config.images_per_id // 2))
        cams = rng.choice(config.num_cameras, size=int(rng.integers(2, max_cams + 1)), replace=False)
        # spread images over the id's cameras, at least 2 per camera (one may become a query)
        counts = np.full(len(cams), 2) + np.bincount(
            rng.integers(0, len(cams), size=max(0, config.images_per_id - 2 * len(cams))), minlength=len(cams)
        )
        is_train = pid <= config.num_train_ids
        index = 0
        for cam, count in zip(cams, counts, strict=True):
            for j in range(int(count)):
                folder = "bounding_box_train" if is_train else ("query" if j == 0 else "bounding_box_test")
                plan.append((folder, pid, int(cam), index, 0 if folder == "query" else 1 + j % 8))
                index += 1
                if folder == "query":
                    for extra in range(MULTI_QUERY_PER_QUERY):
                        plan.append(("gt_bbox", pid, int(cam), 1000 + index * 10 + extra, 0))
    for k in range(config.num_distractors):
        plan.append(("bounding_box_test", 0, int(rng.integers(config.num_cameras)), k, 1 + k % 8))
    for k in range(config.num_junk):
        plan.append(("bounding_box_test", -1, int(rng.integers(config.num_cameras)), k, 1 + k % 8))
    return plan


def generate(config: SyntheticConfig, out_dir: Path) -> None:
    """Draw the whole data set into ``out_dir`` (Market-1501 layout)."""
    cameras = [make_camera(_rng(config.seed, 2, c)) for c in range(config.num_cameras)]
    num_ids = config.num_train_ids + config.num_test_ids
    identities: dict[int, Identity] = {}
    for pid in range(1, num_ids + 1):
        # identities come in families of two: same coarse look, different fine details
        coarse = identities.get(pid - 1) if pid % 2 == 0 else None
        identities[pid] = make_identity(_rng(config.seed, 3, pid), coarse)
    for folder in ("bounding_box_train", "bounding_box_test", "query", "gt_bbox"):
        (out_dir / folder).mkdir(parents=True)
    for frame, (folder, pid, cam, index, box) in enumerate(_plan(config)):
        rng = _rng(config.seed, 4, pid + 1, index)
        if pid > 0:
            who: Identity | None = identities[pid]
        elif pid == 0 or rng.random() < 0.5:  # a distractor, or a junk fragment of someone unknown
            who = make_identity(_rng(config.seed, 5 - pid, index))
        else:  # junk: background only
            who = None
        image = render(who, cameras[cam], rng, config.bbox_jitter, fragment=pid == -1)
        image.save(out_dir / folder / _name(pid, cam, frame * 25 + 1, box), quality=JPEG_QUALITY)
    spec = {"generator_version": GENERATOR_VERSION, "config": asdict(config)}
    (out_dir / "synthetic.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")


def cache_root() -> Path:
    """``$MGN_CACHE`` or ``~/.cache/mgn``."""
    return Path(os.environ.get("MGN_CACHE", Path.home() / ".cache" / "mgn"))


def dataset_dir(config: SyntheticConfig, root: str | Path | None = None) -> Path:
    digest = hashlib.sha256(
        json.dumps([GENERATOR_VERSION, asdict(config)], sort_keys=True).encode()
    ).hexdigest()
    return Path(root or cache_root() / "synthetic") / f"synthetic-v{GENERATOR_VERSION}-{digest[:12]}"


def _host_staging() -> str:
    """Staging folders are ``.generating-<host>-<pid>-<random>``: whose they are, on a shared disk too."""
    return f".generating-{socket.gethostname()}-"


def _remove_abandoned_staging(folder: Path) -> None:
    """Staging folders of generators on this host that died without their ``finally`` (SIGKILL, OOM):
    nothing else would ever remove them. Another host's, or a live process's, are left alone."""
    for staging in folder.glob(_host_staging() + "*"):
        pid = staging.name.removeprefix(_host_staging()).split("-", 1)[0]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def ensure_synthetic(config: SyntheticConfig, root: str | Path | None = None) -> Path:
    """The synthetic data set's folder, generated on first use (atomically: concurrent callers are safe)."""
    target = dataset_dir(config, root)
    if (target / "synthetic.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(target.parent)
    staging = Path(tempfile.mkdtemp(prefix=f"{_host_staging()}{os.getpid()}-", dir=target.parent))
    try:
        generate(config, staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first; its copy is identical
            if not (target / "synthetic.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
