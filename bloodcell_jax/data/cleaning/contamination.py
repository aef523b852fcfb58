"""Contamination: how far an image is from what the data set's cell images look like.

The model is fitted on the data itself, so it needs no reference set:
  * a colour gamut: the commonest colours (32 levels per channel, smoothed over
    neighbouring levels) that together cover `colour_coverage` of the pixels of
    the `colour_fit_fraction` most typically coloured images; a colour is off
    the gamut when it lies more than `colour_tolerance` grey levels from it.
    A May-Gruenwald-Giemsa smear is pink, lavender and purple; foliage, sky,
    black ink, white paper, flat primaries and clipped exposures are far from it,
    while a smear stained a little differently stays within the tolerance;
  * the spread, across images, of two texture measures: fine-detail energy
    (mean |Laplacian| of luma) and the density of hard edges (neighbouring pixels
    60+ grey levels apart), as median and MAD (robust z-scores). Text, line art,
    UI screenshots and noise exceed what optics-limited micrographs produce.
  * writing: words written over a cell image (labels, watermarks, annotations),
    scored by a tile classifier fitted on the data (annotations.py).
Every measure is taken on 16x16 tiles (stride 8) and the worst tile counts, so
content pasted over part of a cell image is found as well as a whole foreign
picture. Blank frames are caught by a rule: luma standard deviation below
`min_std`. Fitting the gamut on the most typically coloured images only, and
fitting twice (the second time without what the first fit flags), keeps a
minority of contaminants (tested at 11%) from widening the gamut they are
judged by.

An image's score is its worst measure divided by that measure's threshold
(config.data.cleaning): 1 or more means contaminated.
"""

import dataclasses
from typing import Optional

import numpy as np
from scipy import ndimage

from bloodcell_jax.data.cleaning import annotations
from bloodcell_jax.data.cleaning import fingerprints as fp

LEVELS = 32  # colour histogram levels per channel
TILE, STRIDE = annotations.TILE, annotations.STRIDE
HARD_EDGE = 60.0  # grey levels between neighbouring pixels
CRITERIA = ("off_colour", "fine_detail", "hard_edges", "written_over", "blank")
_TILED = 4  # the first four criteria are measured on tiles
_FIT_ROUNDS = 2


@dataclasses.dataclass
class CellModel:
  """What a cell image of this data set looks like (see module doc)."""
  gamut_distance: np.ndarray  # float32 (LEVELS ** 3,): grey levels from the gamut
  in_gamut: np.ndarray  # bool (LEVELS ** 3,): within the tolerance of the gamut
  texture_median: np.ndarray  # (2,) fine detail, hard edges: of each image's worst tile
  texture_scale: np.ndarray  # (2,) 1.4826 * MAD
  fitted_on: int
  writing: Optional[annotations.Detector] = None  # None: not fitted (yet), turned off, or
  #                                                 too few images (annotations.MIN_IMAGES)

  def describe(self) -> dict:
    return {"gamut_bins": int(self.in_gamut.sum()), "fitted_on_images": self.fitted_on,
            "fine_detail_median": float(self.texture_median[0]),
            "fine_detail_scale": float(self.texture_scale[0]),
            "hard_edges_median": float(self.texture_median[1]),
            "hard_edges_scale": float(self.texture_scale[1]),
            "writing": self.writing.describe() if self.writing else None}

  def colour_features(self, images: np.ndarray) -> np.ndarray:
    return annotations.colour_features(colour_bins(images), self.gamut_distance)


@dataclasses.dataclass
class Observations:
  """What the model needs of each image, measured once: texture, strokes and colour bins."""
  texture: "Texture"
  bins: np.ndarray  # uint16 (N, 96, 96): colour bin of every pixel
  strokes: Optional[np.ndarray]  # float32 (N, 11, 11, F): annotations.stroke_features

  def __len__(self):
    return len(self.bins)


@dataclasses.dataclass
class Texture:
  """Per image: the worst tile's texture measures, and where those tiles are."""
  values: np.ndarray  # (N, 2): mean |Laplacian|, hard-edge pixel fraction
  luma_std: np.ndarray  # (N,) of the whole image
  tiles: np.ndarray  # int (N, 2, 2): (row, col) of each measure's worst tile


@dataclasses.dataclass
class Scores:
  score: np.ndarray  # (N,) worst measure / its threshold; >= 1 is contaminated
  ratios: np.ndarray  # (N, 5) each criterion's measure / threshold
  values: np.ndarray  # (N, 5) off-colour fraction, fine-detail z, hard-edge z, writing z,
  #                     luma std
  tiles: np.ndarray  # int (N, 4, 2): worst tile (row, col) of the four tiled measures

  @property
  def flagged(self) -> np.ndarray:
    return self.score >= 1.0


def observe(images: np.ndarray, strokes: bool = True) -> Observations:
  """What the model needs of each image; without `strokes`, none of the writing detector's
  features (a third of the time: for scoring new images on colour and texture alone)."""
  chunks = [_observe_chunk(fp.at_work_size(images[s:s + fp.CHUNK]), strokes)
            for s in range(0, len(images), fp.CHUNK)]
  textures, bins, stroke_features = zip(*chunks)
  return Observations(Texture(*(np.concatenate(field) for field in zip(*textures))),
                      np.concatenate(bins),
                      np.concatenate(stroke_features) if strokes else None)


def fit(observed: Observations, settings, images: np.ndarray, seed: int = 0) -> CellModel:
  """The model of the observed `images`, robust to a minority of contaminants.

  The gamut is fitted on the images whose pixels sit in the densest colours,
  so that a handful of cartoons cannot make their flat primaries look common;
  then the whole fit is repeated without the images the first one flags. The
  writing detector is fitted last, on images that none of the rest flags.
  """
  keep = np.ones(len(observed), bool)
  model = None
  for _ in range(_FIT_ROUNDS):
    typical = keep & _typical_colours(observed.bins, keep, settings.colour_fit_fraction)
    distance = gamut_distance(observed.bins[typical], settings.colour_coverage)
    values = observed.texture.values[keep]
    median = np.median(values, axis=0)
    mad = 1.4826 * np.median(np.abs(values - median), axis=0)
    scale = np.maximum(mad, 1e-3 * np.abs(median) + 1e-6)
    model = CellModel(distance, distance <= settings.colour_tolerance, median, scale,
                      int(keep.sum()))
    unflagged = ~score(observed, model, settings).flagged
    if not (keep & unflagged).any():  # nothing looks like the rest: keep this fit
      break
    keep &= unflagged
  if settings.writing_fit_images:
    model.writing = annotations.fit(images, observed.strokes,
                                    _colour_features(observed.bins, model),
                                    model.colour_features, keep, settings.writing_fit_images,
                                    seed)
  return model


def _typical_colours(bins: np.ndarray, among: np.ndarray, fraction: float) -> np.ndarray:
  """The `fraction` of the images `among` whose pixels have the highest mean log density."""
  density = np.log1p(_box_smooth(colour_counts(bins[among]).reshape((LEVELS,) * 3)).ravel())
  typicality = np.concatenate([density[bins[s:s + fp.CHUNK]].mean(axis=(1, 2))
                               for s in range(0, len(bins), fp.CHUNK)])
  return typicality >= np.quantile(typicality[among], 1.0 - fraction)


def colour_counts(bins: np.ndarray) -> np.ndarray:
  counts = np.zeros(LEVELS ** 3, np.float64)
  for start in range(0, len(bins), fp.CHUNK):
    counts += np.bincount(bins[start:start + fp.CHUNK].ravel(), minlength=LEVELS ** 3)
  return counts


def gamut_distance(bins: np.ndarray, coverage: float) -> np.ndarray:
  """Grey levels from each colour bin to the commonest bins covering `coverage` of `bins`."""
  density = _box_smooth(colour_counts(bins).reshape((LEVELS,) * 3)).ravel()
  order = np.argsort(density)[::-1]
  covered = np.cumsum(density[order]) / max(density.sum(), 1e-12)
  common = np.zeros(LEVELS ** 3, bool)
  common[order[:int(np.searchsorted(covered, coverage)) + 1]] = True
  bins_away = ndimage.distance_transform_edt(~common.reshape((LEVELS,) * 3)).ravel()
  return (bins_away * (256 // LEVELS)).astype(np.float32)


def colour_bins(images: np.ndarray) -> np.ndarray:
  """(N, H, W) int32 index of each pixel's colour bin."""
  levels = images >> (8 - int(np.log2(LEVELS)))
  return np.einsum("...c,c->...", levels, np.array([LEVELS * LEVELS, LEVELS, 1], np.int32))


def measure_colour(bins: np.ndarray, in_gamut: np.ndarray):
  """(off-gamut fraction of each image's worst tile, that tile (row, col))."""
  values, tiles = [], []
  for start in range(0, len(bins), fp.CHUNK):
    off = (~in_gamut[bins[start:start + fp.CHUNK]]).astype(np.float32)
    value, tile = _worst_tile(annotations.tile_means(off))
    values.append(value)
    tiles.append(tile)
  return np.concatenate(values), np.concatenate(tiles)


def score(observed: Observations, model: CellModel, settings) -> Scores:
  """Every criterion's measure of the `observed` images, which the model was fitted on (the
  writing scores are the detector's, each image scored by the half that did not see it)."""
  texture = observed.texture
  off_colour, colour_tiles = measure_colour(observed.bins, model.in_gamut)
  z = (texture.values - model.texture_median) / model.texture_scale
  if model.writing is not None:
    writing, writing_tiles = model.writing.z, model.writing.tiles
  else:
    writing, writing_tiles = np.zeros(len(observed)), np.zeros((len(observed), 2), int)
  values = np.stack([off_colour, z[:, 0], z[:, 1], writing, texture.luma_std], axis=1)
  ratios = np.stack([
      off_colour / settings.max_off_colour_fraction,
      z[:, 0] / settings.max_texture_z,
      z[:, 1] / settings.max_texture_z,
      writing / settings.max_written_z,
      settings.min_std / np.maximum(texture.luma_std, 1e-3),
  ], axis=1)
  tiles = np.concatenate([colour_tiles[:, None], texture.tiles, writing_tiles[:, None]], axis=1)
  return Scores(ratios.max(axis=1), ratios, values, tiles)


def _colour_features(bins: np.ndarray, model: CellModel) -> np.ndarray:
  return np.concatenate([annotations.colour_features(bins[s:s + fp.CHUNK], model.gamut_distance)
                         for s in range(0, len(bins), fp.CHUNK)])


def evidence(scores: Scores, i: int, settings, image_size: int) -> dict:
  """Why image i scored as it did: each measure against its threshold, and the worst tile."""
  ratios, values = scores.ratios[i], scores.values[i]
  worst = int(np.argmax(ratios))
  measures = {
      "off_colour": {"tile_fraction": values[0], "max": settings.max_off_colour_fraction},
      "fine_detail": {"tile_z": values[1], "max": settings.max_texture_z},
      "hard_edges": {"tile_z": values[2], "max": settings.max_texture_z},
      "written_over": {"z": values[3], "max": settings.max_written_z},
      "blank": {"luma_std": values[4], "min": settings.min_std},
  }
  for name, ratio in zip(CRITERIA, ratios):
    measures[name] = {k: round(float(v), 4) for k, v in measures[name].items()}
    measures[name]["ratio"] = round(float(ratio), 3)
  out = {"criterion": CRITERIA[worst],
         "exceeded": [name for name, r in zip(CRITERIA, ratios) if r >= 1.0],
         "measures": measures}
  if worst < _TILED:  # a tiled measure: say where (y0, x0, y1, x1 in the image's pixels)
    row, col = scores.tiles[i, worst]
    scale = image_size / fp.WORK_SIZE
    out["tile"] = [int(round(v * scale)) for v in (row * STRIDE, col * STRIDE,
                                                   row * STRIDE + TILE, col * STRIDE + TILE)]
  return out


def _observe_chunk(images: np.ndarray, strokes: bool):
  """(texture fields, colour bins, stroke features or None) of images at work size."""
  lum = fp.luma(images)
  laplacian = annotations.laplacian_of(lum)
  step = np.zeros_like(lum)
  step[:, :, 1:] = np.abs(np.diff(lum, axis=2))
  step[:, 1:, :] = np.maximum(step[:, 1:, :], np.abs(np.diff(lum, axis=1)))
  detail, detail_tile = _worst_tile(annotations.tile_means(laplacian))
  edges, edge_tile = _worst_tile(annotations.tile_means((step >= HARD_EDGE).astype(np.float32)))
  texture = (np.stack([detail, edges], axis=1), lum.std(axis=(1, 2)),
             np.stack([detail_tile, edge_tile], axis=1))
  return (texture, colour_bins(images).astype(np.uint16),
          annotations.stroke_features(images, lum, laplacian) if strokes else None)


def _worst_tile(tiles: np.ndarray):
  """(largest tile value, its (row, col)) of each image."""
  flat = tiles.reshape(len(tiles), -1)
  worst = flat.argmax(axis=1)
  return flat[np.arange(len(flat)), worst], np.stack(np.divmod(worst, tiles.shape[2]), axis=1)


def _box_smooth(cube: np.ndarray) -> np.ndarray:
  """3x3x3 box sum, so that colours next to common ones count as seen (JPEG jitter)."""
  padded = np.pad(cube, 1)
  out = np.zeros_like(cube)
  for dz in range(3):
    for dy in range(3):
      for dx in range(3):
        out += padded[dz:dz + LEVELS, dy:dy + LEVELS, dx:dx + LEVELS]
  return out
