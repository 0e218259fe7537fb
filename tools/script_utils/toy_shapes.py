"""Deterministic textured-shape scenes: the images behind the bundled toy data sets.

Colours are random per object, so only the shape tells its class; objects never overlap, and each
object's mask is exactly the set of pixels it was painted on.
"""
import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES = ('square', 'circle', 'triangle')


def texture(rng, height, width, colour):
    """Colour with a random stripe pattern and noise: objects and background both get one."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(4, 16)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    shade = 1 + 0.25 * stripes[..., None] + rng.normal(0, 0.06, (height, width, 1))
    return np.clip(np.asarray(colour, np.float32) * shade, 0, 255)


def _shape_mask(rng, cls, height, width, size):
    """Boolean mask of one shape of side / diameter ``size`` at a random place (None if it does not fit)."""
    if size + 4 > min(height, width):
        return None
    x0 = rng.integers(2, width - size - 2)
    y0 = rng.integers(2, height - size - 2)
    canvas = Image.new('L', (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if cls == 'square':
        draw.rectangle([x0, y0, x0 + size - 1, y0 + size - 1], fill=1)
    elif cls == 'circle':
        draw.ellipse([x0, y0, x0 + size - 1, y0 + size - 1], fill=1)
    else:  # a triangle pointing up, down, left or right
        a, b, c = (x0, y0 + size - 1), (x0 + size - 1, y0 + size - 1), (x0 + size // 2, y0)
        points = [a, b, c]
        for _ in range(rng.integers(4)):  # rotate by quarter turns about the box centre
            points = [(x0 + (y - y0), y0 + size - 1 - (x - x0)) for x, y in points]
        draw.polygon(points, fill=1)
    return np.asarray(canvas, dtype=bool)


def make_image(seed: int, height: int, width: int, background=None, max_objects: int = 4):
    """One image (uint8 H x W x 3) and its objects as (shape class index, mask); deterministic in
    ``seed``. ``background`` (float H x W x 3) replaces the default textured background; the image
    holds 1 to ``max_objects`` objects."""
    rng = np.random.default_rng(seed)
    image = texture(rng, height, width, rng.uniform(40, 215, 3)) if background is None else background
    occupied = np.zeros((height, width), bool)
    objects = []
    for _ in range(rng.integers(1, max_objects + 1)):
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        for _attempt in range(20):
            mask = _shape_mask(rng, SHAPE_CLASSES[cls], height, width, int(rng.integers(20, 56)))
            # keep a 3-pixel gap between objects so every mask stays whole
            if mask is not None and not (_dilate(mask, 3) & occupied).any():
                break
        else:
            continue
        colour = rng.uniform(0, 255, 3)
        image[mask] = texture(rng, height, width, colour)[mask]
        occupied |= mask
        objects.append((cls, mask))
    return image.astype(np.uint8), objects


def _dilate(mask, radius):
    out = mask.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out
