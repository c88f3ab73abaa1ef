"""A seeded synthetic data set: circles, squares and triangles on textured backgrounds, as an image/mask folder.

Shapes get random shades around a hue per class (so a small model learns them in about a minute on a CPU),
random sizes, positions and rotations, and occasionally overlap.
"""

from __future__ import annotations

import colorsys
import math
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

from segmodels.data.masks import encode_png

DEMO_CLASSES = (
    {"id": 0, "name": "background", "color": [0, 0, 0]},
    {"id": 1, "name": "circle", "color": [220, 20, 60]},
    {"id": 2, "name": "square", "color": [30, 144, 255]},
    {"id": 3, "name": "triangle", "color": [50, 205, 50]},
)
CLASS_HUES = {1: 0.0, 2: 0.6, 3: 0.33}  # red-ish circles, blue-ish squares, green-ish triangles


def generate_demo_dataset(out_dir, num_images: int = 240, image_size: int = 64, seed: int = 0) -> Path:
    """Write `images/demo_NNNNN.png` (RGB) and `masks/demo_NNNNN.png` (class ids) plus `dataset.yaml` into out_dir.

    Image i depends only on (seed, i), so the same call gives the same bytes and more images extend fewer.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for index in range(num_images):
        image, mask = render_demo_sample(np.random.default_rng([seed, index]), image_size)
        Image.fromarray(image).save(out / "images" / f"demo_{index:05d}.png", format="PNG", compress_level=6)
        (out / "masks" / f"demo_{index:05d}.png").write_bytes(encode_png(mask))
    document = {"name": "demo-shapes", "ignore_index": 255, "classes": [dict(c) for c in DEMO_CLASSES]}
    (out / "dataset.yaml").write_text(yaml.safe_dump(document, sort_keys=False, default_flow_style=None))
    return out


def render_demo_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One (image uint8 [H,W,3], mask uint8 [H,W]) pair: 1-3 shapes over a noisy gradient, later shapes on top."""
    background = _background(rng, size)
    image = Image.fromarray(background)
    mask = Image.new("L", (size, size), 0)
    draw_image, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    mean_color = background.reshape(-1, 3).mean(axis=0)
    placed: list[tuple[np.ndarray, float]] = []
    for _ in range(int(rng.integers(1, 4))):
        class_id = int(rng.integers(1, 4))
        radius = rng.uniform(0.16, 0.28) * size
        center = _place(rng, size, radius, placed, allow_overlap=rng.random() < 0.2)
        placed.append((center, radius))
        outline = _shape(class_id, center, radius, rng.uniform(0, 2 * math.pi))
        color = _class_color(rng, class_id, mean_color)
        if class_id == 1:
            box = [center[0] - radius, center[1] - radius, center[0] + radius, center[1] + radius]
            draw_image.ellipse(box, fill=color)
            draw_mask.ellipse(box, fill=class_id)
        else:
            draw_image.polygon(outline, fill=color)
            draw_mask.polygon(outline, fill=class_id)
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 10.0, size=(size, size, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8), np.asarray(mask)


def _place(
    rng: np.random.Generator, size: int, radius: float, placed, allow_overlap: bool, tries: int = 20
) -> np.ndarray:
    """A centre inside the image; apart from earlier shapes unless overlap is allowed (or no room is found)."""
    for _ in range(tries):
        center = rng.uniform(radius * 0.8, size - radius * 0.8, size=2)
        if allow_overlap or all(np.linalg.norm(center - c) > 0.9 * (radius + r) for c, r in placed):
            break
    return center


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    start, end = rng.uniform(20, 235, size=(2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    ramp = np.cos(angle) * xs + np.sin(angle) * ys
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) or 1.0)
    texture = (
        12.0
        * np.sin(2 * math.pi * rng.uniform(1, 4) * xs + rng.uniform(0, 6))
        * np.sin(2 * math.pi * rng.uniform(1, 4) * ys + rng.uniform(0, 6))
    )
    pixels = start + (end - start) * ramp[..., None] + texture[..., None]
    grey = pixels.mean(axis=-1, keepdims=True)
    pixels = grey + 0.35 * (pixels - grey)  # muted background, so shapes stand out
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _shape(class_id: int, center, radius: float, angle: float) -> list[tuple[float, float]]:
    """Outline of a square (slightly rotated) or triangle (any rotation); circles are drawn from their box."""
    if class_id == 2:
        corners, angle = 4, math.pi / 4 + (angle % (math.pi / 6)) - math.pi / 12
    else:
        corners, radius = 3, radius * 1.2
    return [
        (
            center[0] + radius * math.cos(angle + 2 * math.pi * k / corners),
            center[1] + radius * math.sin(angle + 2 * math.pi * k / corners),
        )
        for k in range(corners)
    ]


def _class_color(
    rng: np.random.Generator, class_id: int, against: np.ndarray, min_distance: float = 100.0
) -> tuple[int, int, int]:
    """A saturated colour of random shade around the class's hue, far enough from the background to stand out."""
    for _ in range(100):
        hue = (CLASS_HUES[class_id] + rng.uniform(-0.07, 0.07)) % 1.0
        rgb = 255 * np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0)))
        if np.linalg.norm(rgb - against) >= min_distance:
            break
    return tuple(int(c) for c in rgb)
