"""Procedural contamination and near-duplicate copies, to measure what cleaning finds.

Nothing here is downloaded: every contaminant is drawn from a seed, following
the kinds of non-cell pictures that end up in scraped image folders (natural
photos, cartoons, logos, text, screenshots, such content pasted over part of a
cell image, blank or solid frames, extreme corruption). Real photographs are
crops of the three that scikit-learn and matplotlib ship with their packages.
Annotations are words written over a cell image in any colour, including the
stain's own, opaque or as a watermark, in the fonts matplotlib installs (so that
they differ from the built-in Pillow font that cleaning fits its detector with).
Near-duplicate copies apply the edits a copied file typically went through (re-encoding, resizing,
a few pixels of shift, a brightness/contrast nudge, a flip or a 90-degree turn).
"""

import functools
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bloodcell_jax.data.cleaning import annotations

SIZE = 96
_SUPERSAMPLE = 4  # drawings are made at 4x and downsampled, so edges are anti-aliased

# Palettes of natural scenes (RGB): foliage, sky and water, earth, stone, sunset, snow.
_NATURAL_PALETTES = (
    ((34, 85, 30), (80, 130, 50), (140, 170, 80), (60, 50, 30)),
    ((90, 140, 200), (150, 190, 230), (40, 80, 130), (220, 230, 240)),
    ((120, 85, 50), (170, 130, 90), (90, 60, 35), (200, 175, 130)),
    ((110, 110, 105), (160, 158, 150), (70, 72, 75), (200, 198, 190)),
    ((250, 170, 60), (230, 110, 40), (120, 60, 60), (255, 220, 130)),
    ((235, 240, 245), (190, 205, 220), (120, 140, 160), (250, 250, 252)),
)
_FLAT_COLOURS = ((230, 30, 40), (250, 200, 20), (30, 120, 220), (40, 170, 70),
                 (250, 130, 20), (140, 60, 180), (0, 170, 190), (240, 240, 240),
                 (20, 20, 20), (255, 105, 180))
_WORDS = ("cell", "blood", "sample", "report", "page", "figure", "table", "data", "the",
          "of", "and", "result", "total", "count", "image", "file", "open", "save",
          "settings", "help", "view", "edit", "2021", "12.5", "mg/dl", "OK", "Cancel")

_LABELS = ("NEU", "LYM", "EOS", "BASO", "MONO", "IG", "ERB", "PLT", "x100", "40x", "#12",
           "A3", "slide 7", "ok", "?", "bad", "keep", "10 um", "(c) lab", "SAMPLE", "copy")

_FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
               "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
               "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "STIXGeneral.ttf", "cmss10.ttf")

CONTAMINANT_KINDS = ("natural_photo", "real_photo", "cartoon", "logo", "text", "screenshot",
                     "pasted", "pasted_photo", "text_over", "blank", "noise", "saturated")
COPY_KINDS = ("jpeg", "resize", "shift", "brightness_contrast", "flip", "rot90", "combined")


def contaminant(kind: str, rng: np.random.Generator, cell: np.ndarray = None) -> np.ndarray:
  """A (96, 96, 3) uint8 contaminant of `kind`; the kinds drawn over cells corrupt `cell`."""
  if kind in _OVER_CELL_DRAWERS:
    return _OVER_CELL_DRAWERS[kind](cell, rng)
  return _DRAWERS[kind](rng)


def natural_photo(rng) -> np.ndarray:
  """A landscape or close-up texture: 1/f noise mapped through a natural palette."""
  palette = np.asarray(_NATURAL_PALETTES[rng.integers(len(_NATURAL_PALETTES))], np.float32)
  palette = np.clip(palette * rng.uniform(0.85, 1.15, (len(palette), 1)), 0, 255)
  texture = _pink_noise(rng, exponent=rng.uniform(1.6, 2.4))
  levels = np.clip((texture * len(palette)).astype(int), 0, len(palette) - 1)
  image = palette[levels] + 25 * (texture[..., None] - 0.5)
  if rng.random() < 0.5:  # a horizon: sky above, the textured ground below
    other = np.asarray(_NATURAL_PALETTES[1][rng.integers(4)], np.float32)
    horizon = int(rng.integers(25, 60))
    fade = np.linspace(0.75, 1.0, horizon)[:, None, None]
    image[:horizon] = other * fade + 8 * rng.standard_normal((horizon, SIZE, 1))
  image += rng.normal(0, 3, image.shape)
  return _to_uint8(image)


def real_photo(rng) -> np.ndarray:
  """A crop of a real photograph, at a random place and scale, maybe mirrored."""
  photo = _pick(rng, _photographs())
  side = int(rng.integers(SIZE, min(photo.shape[:2]) + 1))
  top = int(rng.integers(photo.shape[0] - side + 1))
  left = int(rng.integers(photo.shape[1] - side + 1))
  crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((SIZE, SIZE),
                                                                       Image.LANCZOS)
  crop = np.asarray(crop)
  return np.ascontiguousarray(crop[:, ::-1]) if rng.random() < 0.5 else crop


@functools.lru_cache(maxsize=1)
def _photographs():
  """The sample photographs that scikit-learn and matplotlib install with themselves."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  hopper = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
  with Image.open(hopper) as image:
    return tuple(datasets.load_sample_images().images) + (np.asarray(image.convert("RGB")),)


def cartoon(rng) -> np.ndarray:
  """Flat-coloured shapes with thick black outlines on a flat background."""
  image, draw, s = _canvas(_pick(rng, _FLAT_COLOURS))
  for _ in range(rng.integers(3, 7)):
    box = _box(rng, s, 0.2, 0.6)
    fill, width = _pick(rng, _FLAT_COLOURS), int(rng.integers(2, 4)) * s
    if rng.random() < 0.5:
      draw.ellipse(box, fill=fill, outline=(0, 0, 0), width=width)
    else:
      draw.polygon(_polygon(rng, box), fill=fill, outline=(0, 0, 0), width=width)
  cx, cy = rng.uniform(0.35, 0.65, 2) * SIZE * s  # a face: two eyes and a smile
  for dx in (-10, 10):
    draw.ellipse(_around(cx + dx * s, cy - 6 * s, 4 * s), fill=(255, 255, 255),
                 outline=(0, 0, 0), width=2 * s)
  draw.arc(_around(cx, cy + 4 * s, 10 * s), 20, 160, fill=(0, 0, 0), width=3 * s)
  return _finish(image)


def logo(rng) -> np.ndarray:
  """One or two brand colours: concentric or overlapping shapes and a letter."""
  background = (255, 255, 255) if rng.random() < 0.6 else _pick(rng, _FLAT_COLOURS)
  image, draw, s = _canvas(background)
  colours = [_pick(rng, _FLAT_COLOURS) for _ in range(2)]
  centre = SIZE * s / 2
  for i, radius in enumerate(sorted(rng.uniform(12, 40, rng.integers(1, 4)), reverse=True)):
    box = _around(centre, centre, radius * s)
    if rng.random() < 0.5:
      draw.ellipse(box, fill=colours[i % 2])
    else:
      draw.rectangle(box, fill=colours[i % 2])
  letter = chr(ord("A") + int(rng.integers(26)))
  font = ImageFont.load_default(size=int(rng.integers(28, 44)) * s)
  draw.text((centre, centre), letter, fill=_pick(rng, ((255, 255, 255), (0, 0, 0))),
            font=font, anchor="mm")
  return _finish(image)


def text(rng) -> np.ndarray:
  """Lines of dark text on a page: white, grey or cream paper."""
  grey = rng.integers(225, 256)
  paper = (int(grey), int(grey), int(grey - rng.integers(0, 16)))
  image, draw, s = _canvas(paper)
  ink = _pick(rng, ((0, 0, 0), (20, 20, 90), (60, 60, 60), (120, 20, 20)))
  size = int(rng.integers(10, 17))
  font = ImageFont.load_default(size=size * s)
  y = rng.integers(0, 6)
  while y < SIZE - size // 2:
    words = " ".join(_pick(rng, _WORDS) for _ in range(6))
    draw.text((int(rng.integers(0, 8)) * s, y * s), words, fill=ink, font=font)
    y += int(size * rng.uniform(1.2, 1.6))
  return _finish(image)


def screenshot(rng) -> np.ndarray:
  """A window: title bar, side panel, buttons and text lines."""
  image, draw, s = _canvas((255, 255, 255) if rng.random() < 0.7 else (40, 42, 46))
  bar = int(rng.integers(8, 14))
  draw.rectangle((0, 0, SIZE * s, bar * s), fill=_pick(rng, ((60, 60, 70), (225, 225, 230),
                                                            (30, 90, 180))))
  for i, colour in enumerate(((240, 80, 80), (240, 190, 60), (90, 200, 90))):
    draw.ellipse(_around((6 + 8 * i) * s, bar * s / 2, 2.5 * s), fill=colour)
  side = int(rng.integers(18, 34))
  draw.rectangle((0, bar * s, side * s, SIZE * s), fill=(235, 236, 240))
  font = ImageFont.load_default(size=9 * s)
  for y in range(bar + 6, SIZE - 6, 11):
    draw.text((3 * s, y * s), _pick(rng, _WORDS), fill=(50, 50, 60), font=font)
    draw.text(((side + 4) * s, y * s), " ".join(_pick(rng, _WORDS) for _ in range(3)),
              fill=_pick(rng, ((0, 0, 0), (20, 80, 200))), font=font)
  x0 = int(rng.integers(side + 4, SIZE - 30))
  draw.rounded_rectangle((x0 * s, (SIZE - 16) * s, (x0 + 26) * s, (SIZE - 5) * s),
                         radius=3 * s, fill=(30, 110, 230))
  return _finish(image)


def blank(rng) -> np.ndarray:
  """A solid frame (sometimes the colour of a slide's background), a faint gradient or noise."""
  choice = rng.random()
  if choice < 0.3:
    colour = np.asarray([236, 214, 214], np.float32) * rng.uniform(0.9, 1.05)
  elif choice < 0.5:
    colour = np.full(3, 255.0 if rng.random() < 0.5 else 0.0)
  else:
    colour = rng.uniform(0, 255, 3)
  image = np.broadcast_to(colour, (SIZE, SIZE, 3)).astype(np.float32)
  if rng.random() < 0.5:
    image = image + np.linspace(-6, 6, SIZE)[:, None, None] * rng.uniform(0, 1)
  return _to_uint8(image + rng.normal(0, rng.uniform(0, 1.5), image.shape))


def noise(rng) -> np.ndarray:
  """Uniform or Gaussian colour noise, or salt and pepper."""
  choice = rng.random()
  if choice < 0.4:
    return rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
  if choice < 0.8:
    return _to_uint8(rng.normal(rng.uniform(60, 200), rng.uniform(50, 90), (SIZE, SIZE, 3)))
  image = np.full((SIZE, SIZE, 3), rng.uniform(100, 200), np.float32)
  speckle = rng.random((SIZE, SIZE)) < rng.uniform(0.2, 0.5)
  image[speckle] = rng.choice([0.0, 255.0], (int(speckle.sum()), 1))
  return _to_uint8(image)


def saturated(cell: np.ndarray, rng) -> np.ndarray:
  """A cell image with a broken exposure: extreme gain, clipped to black and white."""
  image = cell.astype(np.float32)
  mean = image.mean(axis=(0, 1), keepdims=True)
  return _to_uint8((image - mean) * rng.uniform(5, 9) + mean + rng.uniform(-40, 40))


def pasted_over(cell: np.ndarray, rng, min_side: int = 30, max_side: int = 48) -> np.ndarray:
  """`cell` with a square of non-cell content (at its own scale) pasted at a random place."""
  kind = ("natural_photo", "cartoon", "logo", "text", "screenshot")[rng.integers(5)]
  side = int(rng.integers(min_side, max_side + 1))
  source = _DRAWERS[kind](rng)
  top, left = (SIZE - side) // 2 + rng.integers(-8, 9, 2)  # the middle holds the content
  top, left = np.clip([top, left], 0, SIZE - side)
  return _pasted(cell, source[top:top + side, left:left + side], rng)


def pasted_photo(cell: np.ndarray, rng) -> np.ndarray:
  """`cell` with part of a real photograph (20 to 48 pixels square) pasted over it."""
  side = int(rng.integers(20, 49))
  patch = np.asarray(Image.fromarray(real_photo(rng)).resize((side, side), Image.LANCZOS))
  return _pasted(cell, patch, rng)


def _pasted(cell: np.ndarray, patch: np.ndarray, rng) -> np.ndarray:
  """`cell` with the square `patch` pasted at a random place."""
  side = len(patch)
  y, x = rng.integers(0, SIZE - side + 1, 2)
  out = cell.copy()
  out[y:y + side, x:x + side] = patch
  return out


def text_over(cell: np.ndarray, rng) -> np.ndarray:
  """`cell` with one to three lines written over it (font 16-26 px): a label or watermark.

  The ink is any colour that stands out from the slide's background enough to be
  read: a random one, one of the stain's own colours, or black, white or grey;
  opaque or, for a watermark, 75% to 90% so.
  """
  s = _SUPERSAMPLE
  layer = Image.new("L", (SIZE * s, SIZE * s), 0)  # where the ink covers, 0..255
  draw = ImageDraw.Draw(layer)
  size = int(rng.integers(16, 27))
  font = ImageFont.truetype(_pick(rng, _annotation_fonts()), size * s)
  lines = int(rng.integers(1, 4))
  y = int(rng.integers(-size // 4, max(SIZE - lines * size, 0) + 1))
  for _ in range(lines):
    words = " ".join(_pick(rng, _LABELS + _WORDS) for _ in range(rng.integers(1, 3)))
    draw.text((int(rng.integers(-6, 40)) * s, y * s), words, fill=255, font=font)
    y += int(size * rng.uniform(1.0, 1.3))
  cover = np.asarray(layer.resize((SIZE, SIZE), Image.LANCZOS), np.float32)[..., None] / 255.0
  opacity = 1.0 if rng.random() < 0.7 else rng.uniform(0.75, 0.9)
  ink = _ink_colour(cell, cover, rng)
  return _to_uint8(cell * (1 - opacity * cover) + ink * (opacity * cover))


@functools.lru_cache(maxsize=1)
def _annotation_fonts():
  import matplotlib  # pylint: disable=g-import-not-at-top
  folder = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
  return tuple(os.path.join(folder, name) for name in _FONT_FILES)


def _ink_colour(cell: np.ndarray, cover: np.ndarray, rng, min_contrast: float = 80.0):
  """A colour that differs, on average over the pixels it covers, by `min_contrast` RGB levels."""
  pixels = cell.reshape(-1, 3).astype(np.float32)
  weights = cover.reshape(-1) / max(float(cover.sum()), 1e-6)
  best, best_contrast = None, -1.0
  for _ in range(100):  # a handful suffice; a bound, should the words fall off the image
    choice = rng.random()
    if choice < 0.4:
      ink = rng.uniform(0, 255, 3)
    elif choice < 0.7:  # the stain's own: a pixel of the cell, jittered
      ink = np.clip(pixels[rng.integers(len(pixels))] + rng.normal(0, 6, 3), 0, 255)
    else:
      ink = np.full(3, _pick(rng, (0.0, 40.0, 128.0, 200.0, 255.0)))
    contrast = weights @ np.linalg.norm(pixels - ink, axis=1)
    if contrast >= min_contrast:
      return ink
    if contrast > best_contrast:
      best, best_contrast = ink, contrast
  return best


def near_copy(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
  """A near duplicate of `image` made by one of COPY_KINDS."""
  if kind == "jpeg":
    return jpeg(image, int(rng.integers(70, 91)))
  if kind == "resize":
    side = int(rng.choice([48, 64, 72, 80, 112, 128, 160]))
    smaller = Image.fromarray(image).resize((side, side), Image.BICUBIC)
    return np.asarray(smaller.resize((SIZE, SIZE), Image.BICUBIC))
  if kind == "shift":
    return shifted(image, *_nonzero_shift(rng, 4))
  if kind == "brightness_contrast":
    gain, offset = rng.uniform(0.85, 1.15), rng.uniform(-15, 15)
    mean = image.mean()
    return _to_uint8((image.astype(np.float32) - mean) * gain + mean + offset)
  if kind == "flip":
    return np.ascontiguousarray(image[:, ::-1] if rng.random() < 0.5 else image[::-1])
  if kind == "rot90":
    return np.ascontiguousarray(np.rot90(image, int(rng.integers(1, 4))))
  if kind == "combined":  # a turn, a shift and a re-encoding together
    turned = np.rot90(image, int(rng.integers(0, 4)))
    return jpeg(shifted(np.ascontiguousarray(turned), *_nonzero_shift(rng, 3)),
                int(rng.integers(70, 91)))
  raise ValueError(f"unknown copy kind {kind!r}; expected one of {COPY_KINDS}")


jpeg = annotations.jpeg_roundtrip


def shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """`image` moved by (dy, dx) pixels; the uncovered border repeats the edge."""
  pad = max(abs(dy), abs(dx))
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
  h, w = image.shape[:2]
  return np.ascontiguousarray(padded[pad - dy:pad - dy + h, pad - dx:pad - dx + w])


def _nonzero_shift(rng, limit):
  while True:
    dy, dx = (int(v) for v in rng.integers(-limit, limit + 1, 2))
    if dy or dx:
      return dy, dx


def _pink_noise(rng, exponent: float) -> np.ndarray:
  """Noise with a 1/f^exponent power spectrum (the statistics of natural images), in [0, 1]."""
  fy = np.fft.fftfreq(SIZE)[:, None]
  fx = np.fft.rfftfreq(SIZE)[None, :]
  amplitude = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / SIZE) ** (exponent / 2)
  phase = rng.uniform(0, 2 * np.pi, amplitude.shape)
  field = np.fft.irfft2(amplitude * np.exp(1j * phase), s=(SIZE, SIZE))
  return (field - field.min()) / (np.ptp(field) + 1e-9)


def _canvas(background):
  s = _SUPERSAMPLE
  image = Image.new("RGB", (SIZE * s, SIZE * s), tuple(int(v) for v in background))
  return image, ImageDraw.Draw(image), s


def _finish(image: Image.Image) -> np.ndarray:
  return np.asarray(image.resize((SIZE, SIZE), Image.LANCZOS))


def _pick(rng, options):
  return options[int(rng.integers(len(options)))]


def _box(rng, s, low, high):
  w, h = rng.uniform(low, high, 2) * SIZE * s
  x0, y0 = rng.uniform(0, SIZE * s - w), rng.uniform(0, SIZE * s - h)
  return (x0, y0, x0 + w, y0 + h)


def _polygon(rng, box):
  x0, y0, x1, y1 = box
  angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 7)))
  cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
  return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]


def _around(cx, cy, r):
  return (cx - r, cy - r, cx + r, cy + r)


def _to_uint8(image) -> np.ndarray:
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


_DRAWERS = {"natural_photo": natural_photo, "real_photo": real_photo, "cartoon": cartoon,
            "logo": logo, "text": text, "screenshot": screenshot, "blank": blank, "noise": noise}
_OVER_CELL_DRAWERS = {"pasted": pasted_over, "pasted_photo": pasted_photo,
                      "text_over": text_over, "saturated": saturated}
