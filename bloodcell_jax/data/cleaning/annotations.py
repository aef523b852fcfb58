"""Words written over a cell image (labels, watermarks, annotations), found by a tile classifier.

Thin strokes of one colour set writing apart from cells, but granular cytoplasm,
debris and platelet clumps have thin strokes too, differently in every stain, so
no fixed rule separates them. Each cleaning run therefore fits a classifier on
its own data: the 16x16 tiles (stride 8) of the data's images are the negatives;
the same images with random letters and digits written over them (Pillow's
built-in font, 12-30 px, some of it bolder, in any colour that stands out from
what it covers, opaque or not, half of them re-encoded as JPEG) give the
positives, the tiles the ink covers. Each of two classifiers is fitted on one
half of the images and scores the other, and a second round is fitted without
the images the first finds written over: a written-over image among the
negatives would otherwise teach the classifier that writing is normal. A gradient-boosted
tree model (scikit-learn) sees, per tile, how much darker or lighter than their surroundings
thin lines are, |Laplacian|, how far the colours lie from the data's colour gamut, and the
mean colour and contrast. An image's score is the mean of its 3 highest tile log-odds, as a
robust z-score among the data's images, so that the threshold means the same on
a data set of granular cells as on a smooth one.
"""

import dataclasses
import io
from typing import Any, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bloodcell_jax.data.cleaning import fingerprints as fp

TILE, STRIDE = 16, 8
MIN_IMAGES = 20  # usable images below which the check is not fitted
TOP_TILES = 3  # an image's score: the mean log-odds of its most written-over tiles
LINE_OFFSETS = (2,)  # pixels to each side a stroke is compared with (strokes up to 3 px)
LEVELS = (12.0, 25.0, 50.0)  # grey levels a line response or |Laplacian| is counted above
_PER_MAP = 2 + len(LEVELS)  # features per response map: mean, max, the shares above LEVELS
MAX_GAMUT_DISTANCE = 48.0  # grey levels; beyond, a colour is simply foreign
INKED = 0.04  # a positive tile has ink over this share of its area
NEGATIVE_TILES = 100_000  # per classifier; few images give all their tiles
_LEAST_TILES = 12  # negatives per image, however many images there are
# Trees of each round's classifiers: the first only needs to find the images that look
# written over, for the second to leave them out of its negatives...
_TREES = (60, 120)
_TRIM_Z = 3.0  # ...from this robust z up
_SUPERSAMPLE = 4
_BLOCK = 128  # images per block of stroke_features
_CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789#.:/%()"


@dataclasses.dataclass
class Detector:
  """Two tile classifiers, each fitted on one half of the data and scoring the other half
  (an image a classifier saw as a negative would score low even when written over),
  and the data's scores."""
  classifiers: Tuple[Any, ...]  # sklearn.ensemble.HistGradientBoostingClassifier
  fitted_on: int  # images written over to make positives
  z: np.ndarray  # (N,) each image's score as a robust z among the usable images
  tiles: np.ndarray  # int (N, 2): each image's most written-over tile (row, col)
  centre: float  # median score
  scale: float  # 1.4826 * MAD of the scores

  def describe(self) -> dict:
    return {"fitted_on_images": self.fitted_on, "score_median": round(self.centre, 4),
            "score_scale": round(self.scale, 4)}


def stroke_features(images: np.ndarray, lum: np.ndarray, laplacian: np.ndarray) -> np.ndarray:
  """(N, 11, 11, 27) float32 per-tile texture features of uint8 (N, 96, 96, 3) images."""
  # In blocks small enough to stay in cache: 3-5x faster than the whole chunk at once.
  return np.concatenate([_stroke_block(images[s:s + _BLOCK], lum[s:s + _BLOCK],
                                       laplacian[s:s + _BLOCK])
                         for s in range(0, len(images), _BLOCK)])


def _stroke_block(images, lum, laplacian):
  """Per map (dark lines, light lines, |Laplacian|): tile mean, max and the shares above
  LEVELS; the tile means of dark and light lines in each direction; then the tile's mean
  R, G, B and luma standard deviation."""
  channels = np.ascontiguousarray(np.moveaxis(images, -1, 0))
  by_direction = [lines for offset in LINE_OFFSETS for lines in _lines(channels, offset)]
  responses = [lines.max(axis=0) for lines in by_direction] + [laplacian]
  averaged = []  # every map whose tile means are wanted, in one product
  for response in responses:
    averaged += [response] + [response > level for level in LEVELS]
  averaged += [line for lines in by_direction for line in lines]
  averaged += [images[..., c] for c in range(3)] + [lum, lum * lum]
  stacked = np.empty((len(averaged),) + lum.shape, np.float32)
  for i, pixel_map in enumerate(averaged):
    stacked[i] = pixel_map  # converts as it copies
  means = list(tile_means(stacked.reshape(-1, *lum.shape[1:])).reshape(
      len(averaged), len(images), *_grid(lum.shape[1])))
  features = []
  for response in responses:
    features += [means.pop(0), _tile_max(response)] + [means.pop(0) for _ in LEVELS]
  features += means[:-2]  # the directions and the colour means
  mean, square = means[-2:]
  features.append(np.sqrt(np.maximum(square - mean * mean, 0.0)))
  return np.stack(features, axis=-1).astype(np.float32)


def tile_rows(stroke: np.ndarray, colour: np.ndarray) -> np.ndarray:
  """(N, 11, 11, F) what the classifier sees of each tile."""
  return np.concatenate([stroke, colour], axis=-1)


def colour_features(bins: np.ndarray, gamut_distance: np.ndarray) -> np.ndarray:
  """(N, 11, 11, 3) float32: each tile's mean and largest distance from the gamut, and
  the share of its pixels off it by more than 12 grey levels."""
  distance = np.minimum(gamut_distance, MAX_GAMUT_DISTANCE).astype(np.float32)[bins]
  return np.stack([tile_means(distance), _tile_max(distance),
                   tile_means((distance > 12.0).astype(np.float32))], axis=-1)


def fit(images: np.ndarray, stroke: np.ndarray, colour: np.ndarray, colour_of,
        usable: np.ndarray, num_images: int, seed: int) -> Optional[Detector]:
  """The detector of the data `images`, fitted on up to `num_images` of the `usable` ones;
  None when fewer than MIN_IMAGES are usable.

  `stroke` and `colour` are the features of every image; `colour_of(images)` gives
  the colour features of new images. The halves come from a seeded permutation, so
  a run is reproducible.
  """
  if usable.sum() < MIN_IMAGES:
    return None
  rng = np.random.default_rng(seed)
  half = rng.permutation(len(images)) % 2
  chosen = [_some(np.flatnonzero(usable & (half == k)), num_images // 2, rng) for k in (0, 1)]
  if not all(len(c) for c in chosen):
    return None
  # A small data set is written over several times, for enough positive tiles.
  sources = [rng.choice(c, max(len(c), num_images // 4)) for c in chosen]
  positives = [_written_over_tiles(fp.at_work_size(images[s]), colour_of, rng)
               for s in sources]
  negatives_from = usable
  for round_, trees in enumerate(_TREES):
    classifiers = tuple(
        _fit_classifier(np.concatenate([
            _negative_tiles(stroke, colour, negatives_from & (half == k), rng), reencoded]),
                        written, trees, seed) for k, (written, reencoded) in enumerate(positives))
    scores, tiles = raw_scores(classifiers, half, stroke, colour)
    centre = float(np.median(scores[usable]))
    scale = float(max(1.4826 * np.median(np.abs(scores[usable] - centre)), 1e-3))
    z = (scores - centre) / scale
    if round_ == len(_TREES) - 1:
      return Detector(classifiers, sum(len(s) for s in sources), z, tiles, centre, scale)
    # Images that look written over are no negatives for the next round's fit.
    negatives_from = usable & (z < _TRIM_Z)


def _some(indices: np.ndarray, most: int, rng) -> np.ndarray:
  return np.sort(rng.choice(indices, most, replace=False)) if len(indices) > most else indices


def _negative_tiles(stroke, colour, among, rng):
  """Tiles of the `among` images as negatives: all of them when there are few images, else
  from each image its most stroke-like tiles and as many picked at random, up to
  NEGATIVE_TILES in all."""
  indices = np.flatnonzero(among)
  features = tile_rows(stroke[indices], colour[indices])
  features = features.reshape(len(indices), -1, features.shape[-1])
  per_image = max(NEGATIVE_TILES // max(len(indices), 1), _LEAST_TILES)
  if per_image >= features.shape[1]:
    return features.reshape(-1, features.shape[-1])
  picked = np.concatenate([
      _stroke_like_tiles(stroke[indices], per_image // 2),
      rng.integers(0, features.shape[1], (len(indices), per_image - per_image // 2))], axis=1)
  return np.take_along_axis(features, picked[:, :, None], axis=1).reshape(-1, features.shape[-1])


def _stroke_like_tiles(stroke: np.ndarray, count: int) -> np.ndarray:
  """(N, count) indices of each image's tiles with the most thin-line response."""
  energy = (stroke[..., 0] + stroke[..., _PER_MAP]).reshape(len(stroke), -1)
  return np.argsort(energy, axis=1)[:, -count:]


def _fit_classifier(negatives, positives, trees, seed):
  # Imported here: scikit-learn takes seconds to import, and scoring new images needs none of it.
  from sklearn import ensemble  # pylint: disable=g-import-not-at-top
  classifier = ensemble.HistGradientBoostingClassifier(
      max_iter=trees, learning_rate=0.15, max_leaf_nodes=31, early_stopping=False,
      random_state=seed)
  return classifier.fit(np.concatenate([negatives, positives]),
                        np.r_[np.zeros(len(negatives)), np.ones(len(positives))])


def _written_over_tiles(images: np.ndarray, colour_of, rng):
  """(M, F) features of the tiles that ink covers once `images` are written over, and
  (K, F) of all tiles of the images re-encoded as JPEG without the ink.

  Half of the written images are re-encoded, as files are; the same images re-encoded
  without the writing are negatives, or the classifier learns JPEG artefacts as writing.
  """
  positives, negatives = [], []
  for start in range(0, len(images), fp.CHUNK):
    written, plain, covers, reencoded = [], [], [], []
    for image in images[start:start + fp.CHUNK]:
      text, cover = write_over(image, rng)
      quality = int(rng.integers(70, 96)) if rng.random() < 0.5 else None
      written.append(jpeg_roundtrip(text, quality) if quality else text)
      plain.append(jpeg_roundtrip(image, quality) if quality else image)
      covers.append(cover)
      reencoded.append(quality is not None)
    inked = tile_means(np.stack(covers)) > INKED
    positives.append(_tile_features(np.stack(written), colour_of)[inked])
    negatives.append(_tile_features(np.stack(plain), colour_of)[np.asarray(reencoded)].reshape(
        -1, positives[-1].shape[-1]))
  return np.concatenate(positives), np.concatenate(negatives)


def _tile_features(images: np.ndarray, colour_of) -> np.ndarray:
  lum = fp.luma(images)
  return tile_rows(stroke_features(images, lum, laplacian_of(lum)), colour_of(images))


def raw_scores(classifiers, half: np.ndarray, stroke: np.ndarray, colour: np.ndarray):
  """(each image's mean log-odds over its TOP_TILES tiles, its most written-over tile
  (row, col)), from the classifier of the half it is not in."""
  scores = np.zeros(len(stroke))
  tiles = np.zeros((len(stroke), 2), int)
  for k, classifier in enumerate(classifiers):
    others = np.flatnonzero(half != k)
    for part in np.array_split(others, max(1, len(others) // fp.CHUNK)):
      features = tile_rows(stroke[part], colour[part])
      log_odds = classifier.decision_function(
          features.reshape(-1, features.shape[-1])).reshape(len(part), -1)
      ranked = np.argsort(log_odds, axis=1)
      scores[part] = np.take_along_axis(log_odds, ranked[:, -TOP_TILES:], axis=1).mean(axis=1)
      tiles[part] = np.stack(np.divmod(ranked[:, -1], stroke.shape[2]), axis=1)
  return scores, tiles


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
  """`image` as it reads back after saving as a JPEG of `quality`."""
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, "JPEG", quality=quality)
  return np.asarray(Image.open(buffer).convert("RGB"))


def write_over(image: np.ndarray, rng: np.random.Generator):
  """(`image` with one to three lines of random characters written over it, the ink's cover)."""
  s, size = _SUPERSAMPLE, image.shape[0]
  layer = Image.new("L", (size * s, size * s), 0)
  draw = ImageDraw.Draw(layer)
  height = int(rng.integers(12, 31))
  font = ImageFont.load_default(size=height * s)
  y = int(rng.integers(-height // 2, size - height // 2))
  for _ in range(rng.integers(1, 4)):
    text = "".join(_CHARACTERS[i] for i in rng.integers(len(_CHARACTERS), size=rng.integers(2, 9)))
    bold = int(rng.choice([0, 0, 0, 2, 4]))  # at the supersampled size: up to 1 px bolder
    draw.text((int(rng.integers(-10, size - 26)) * s, y * s), text, fill=255, font=font,
              stroke_width=bold, stroke_fill=255)
    y += int(height * rng.uniform(1.0, 1.4))
  cover = np.asarray(layer.resize((size, size), Image.BOX), np.float32) / 255.0
  opacity = rng.uniform(0.6, 1.0) * cover[..., None]
  written = image * (1.0 - opacity) + _ink(image, cover, rng) * opacity
  return np.clip(np.round(written), 0, 255).astype(np.uint8), cover


def _ink(image, cover, rng, min_contrast: float = 50.0):
  """A colour 50+ RGB levels, on average, from the pixels it covers: random, grey or the stain's."""
  pixels = image.reshape(-1, 3).astype(np.float32)
  weights = cover.reshape(-1) / max(float(cover.sum()), 1e-6)
  for _ in range(100):
    choice = rng.random()
    if choice < 0.5:
      ink = rng.uniform(0, 255, 3)
    elif choice < 0.8:
      ink = pixels[rng.integers(len(pixels))]
    else:
      ink = np.full(3, rng.uniform(0, 255))
    if weights @ np.linalg.norm(pixels - ink, axis=1) >= min_contrast:
      break
  return ink


def laplacian_of(lum: np.ndarray) -> np.ndarray:
  """|4-neighbour Laplacian| of (N, H, W) luma; 0 on the border."""
  out = np.zeros_like(lum)
  out[:, 1:-1, 1:-1] = np.abs(4 * lum[:, 1:-1, 1:-1] - lum[:, :-2, 1:-1] - lum[:, 2:, 1:-1]
                              - lum[:, 1:-1, :-2] - lum[:, 1:-1, 2:])
  return out


def _lines(channels: np.ndarray, d: int):
  """How much darker / lighter each pixel is than both pixels `d` away on either side, in
  each of 4 directions (across a vertical, horizontal and two diagonal strokes), the
  most of the 3 channels: uint8 (4, N, H, W) each.

  A stroke up to 2d - 1 px wide stands out in the direction across it; a cell's edge
  does not (one side is as dark as the pixel), nor does a smooth gradient. A granule
  stands out in every direction, a stroke of writing in one or two.
  """
  padded = np.pad(channels, ((0, 0), (0, 0), (d, d), (d, d)), mode="edge")
  height, width = channels.shape[2:]

  def shifted(dy, dx):
    return padded[:, :, d + dy:d + dy + height, d + dx:d + dx + width]

  dark, light = [], []
  for dy, dx in ((0, d), (d, 0), (d, d), (d, -d)):
    a, b = shifted(dy, dx), shifted(-dy, -dx)
    # uint8 throughout: max(min(a, b), x) - x is min(a, b) - x clipped at 0, without overflow.
    darker = np.minimum(a, b)
    np.maximum(darker, channels, out=darker)
    darker -= channels
    dark.append(np.maximum(np.maximum(darker[0], darker[1]), darker[2]))
    lighter = np.maximum(a, b)
    np.minimum(lighter, channels, out=lighter)
    np.subtract(channels, lighter, out=lighter)
    light.append(np.maximum(np.maximum(lighter[0], lighter[1]), lighter[2]))
  return np.stack(dark), np.stack(light)


def tile_means(pixel_map: np.ndarray) -> np.ndarray:
  """Means over 16x16 tiles at stride 8: (N, 11, 11) at 96x96.

  As two matrix products with a 0/1 tile matrix, each one 2-D product over the whole
  batch: BLAS is ~10x faster than a strided sum.
  """
  pixel_map = np.asarray(pixel_map, np.float32)
  n, size = pixel_map.shape[0], pixel_map.shape[1]
  window = _tile_window(size)
  tiles = window.shape[1]
  across = (pixel_map.reshape(-1, size) @ window).reshape(n, size, tiles)  # sums along rows
  down = np.ascontiguousarray(across.transpose(0, 2, 1)).reshape(-1, size) @ window
  return down.reshape(n, tiles, tiles).transpose(0, 2, 1) / float(TILE * TILE)


def _grid(size: int):
  return ((size - TILE) // STRIDE + 1,) * 2


def _tile_window(size: int) -> np.ndarray:
  """(size, tiles) float32: column t is 1 on the pixels of tile t."""
  starts = np.arange(0, size - TILE + 1, STRIDE)
  pixels = np.arange(size)[:, None]
  return ((pixels >= starts) & (pixels < starts + TILE)).astype(np.float32)


def _tile_max(pixel_map: np.ndarray) -> np.ndarray:
  """Maxima over 16x16 tiles at stride 8: (N, 11, 11) at 96x96."""
  blocks = _block_max(_block_max(pixel_map, axis=2), axis=1)
  return np.maximum(np.maximum(blocks[:, :-1, :-1], blocks[:, 1:, :-1]),
                    np.maximum(blocks[:, :-1, 1:], blocks[:, 1:, 1:]))


def _block_max(array: np.ndarray, axis: int) -> np.ndarray:
  """Maxima of STRIDE-long blocks along `axis`, as STRIDE strided slices: numpy reduces a
  short axis far slower."""
  index = [slice(None)] * array.ndim
  out = None
  for offset in range(STRIDE):
    index[axis] = slice(offset, None, STRIDE)
    out = array[tuple(index)].copy() if out is None else np.maximum(out, array[tuple(index)],
                                                                   out=out)
  return out
