"""The knobs of a cleaning run: one dataclass, filled from `config.data.cleaning` or CLI flags."""

import dataclasses

from bloodcell_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class CleaningSettings:
  """Thresholds and choices; every field is a key of `config.data.cleaning`.

  The defaults flag under 0.1% of a clean set (13,598 PBC images: 7, 0.05%) and
  find at least 95% of each kind of injected contamination and near duplicate
  (tests/e2e/test_clean_passes.py).
  """
  # Near duplicates: candidates share a hash code in one of `near_tables` tables
  # (in any of the 8 flips/turns) and lie within `near_radius` in thumbnail space;
  # a candidate is confirmed when its fine detail, aligned, correlates this much.
  near_min_similarity: float = 0.93
  near_tables: int = 20
  near_radius: float = 2.25
  max_shift: int = 12  # pixels of translation the alignment searches (at 96x96)
  # Contamination, fitted on the data itself (see contamination.py).
  colour_coverage: float = 0.99  # the cell colour gamut holds this share of the pixels...
  colour_fit_fraction: float = 0.8  # ...of this share of the most typically coloured images
  colour_tolerance: float = 20.0  # grey levels from the gamut before a colour is off it
  max_off_colour_fraction: float = 0.5  # of a 16x16 tile off the gamut
  max_texture_z: float = 6.5  # robust z of a tile's fine-detail energy or edge density
  min_std: float = 6.0  # grey levels of luma std; flatter images are blank
  max_written_z: float = 5.5  # robust z of an image's writing score (annotations.py)
  writing_fit_images: int = 2000  # images the writing detector is fitted on; 0 turns it off
  # What keep.txt drops.
  keep_conflicts: bool = False  # True: keep one image per label of a conflicting group
  keep_leaked: bool = False  # True: keep training images that also appear in --test
  contact_sheets: bool = True

  def validate(self, prefix: str = "config.data.cleaning.") -> "CleaningSettings":
    """Raises a UserError naming `prefix + field` for the first value out of range."""
    checks = (
        ("near_min_similarity", 0.0 < self.near_min_similarity <= 1.0, "a value in (0, 1]"),
        ("near_tables", 1 <= self.near_tables <= 200, "an integer in [1, 200]"),
        ("near_radius", self.near_radius > 0, "a positive number"),
        ("max_shift", 0 <= self.max_shift <= 24, "an integer in [0, 24]"),
        ("colour_coverage", 0.9 <= self.colour_coverage < 1.0, "a value in [0.9, 1)"),
        ("colour_fit_fraction", 0.2 <= self.colour_fit_fraction <= 1.0, "a value in [0.2, 1]"),
        ("colour_tolerance", 0 <= self.colour_tolerance <= 128, "grey levels in [0, 128]"),
        ("max_off_colour_fraction", 0.0 < self.max_off_colour_fraction <= 1.0,
         "a value in (0, 1]"),
        ("max_texture_z", self.max_texture_z > 0, "a positive number"),
        ("min_std", self.min_std >= 0, "a number >= 0"),
        ("max_written_z", self.max_written_z > 0, "a positive number"),
        ("writing_fit_images", 0 <= self.writing_fit_images <= 100_000,
         "an integer in [0, 100000]"),
    )
    for name, ok, expected in checks:
      if not ok:
        raise UserError(f"{prefix}{name}={getattr(self, name)!r}: expected {expected}")
    return self

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


def from_mapping(values, where: str = "config.data.cleaning") -> CleaningSettings:
  """Settings from a dict-like (a ConfigDict); unknown keys are an error naming them."""
  values = dict(values or {})
  fields = {f.name: f for f in dataclasses.fields(CleaningSettings)}
  unknown = sorted(set(values) - set(fields) - set(_NOT_SETTINGS))
  if unknown:
    raise UserError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(fields)}")
  chosen = {}
  for name, value in values.items():
    if name in _NOT_SETTINGS:
      continue
    default = fields[name].default
    try:
      chosen[name] = type(default)(value) if not isinstance(default, bool) else _as_bool(value)
    except (TypeError, ValueError):
      raise UserError(f"{where}.{name}={value!r}: expected a {type(default).__name__}") from None
  return CleaningSettings(**chosen).validate(where + ".")


def _as_bool(value) -> bool:
  if isinstance(value, bool):
    return value
  if str(value).lower() in ("true", "1", "yes"):
    return True
  if str(value).lower() in ("false", "0", "no"):
    return False
  raise ValueError(value)


# Keys of config.data.cleaning that steer the training integration, not the run itself.
_NOT_SETTINGS = ("cache_dir", "keep_file")
