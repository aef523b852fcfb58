"""One cleaning pass over an ImageSet: findings, and which images to keep.

Order matters: contaminated images are scored first and left out of the
near-duplicate search (a pile of blank frames are all "duplicates" of each
other, which says nothing useful); exact duplicates are grouped over every
image; near duplicates link groups; a group whose labels disagree is a label
conflict. From each group one image is kept (the first in the source's order), none of a
conflicting group unless `keep_conflicts`, and no training image that also
appears in a held-out set unless `keep_leaked`.
"""

import dataclasses
import time
from typing import Dict, List, Optional

import numpy as np

from bloodcell_jax.data.cleaning import contamination, duplicates
from bloodcell_jax.data.cleaning import fingerprints as fp
from bloodcell_jax.data.image_set import ImageSet

KINDS = ("exact_duplicate", "near_duplicate", "label_conflict", "contaminated", "leakage")
# Why an image is left out of keep.txt; the first that applies is recorded.
REASONS = ("contaminated", "label_conflict", "leakage", "duplicate")


@dataclasses.dataclass
class Finding:
  kind: str
  members: np.ndarray  # indices into the cleaned set
  score: float
  details: dict
  held_out: Optional[str] = None  # leakage: which held-out set
  held_out_members: Optional[np.ndarray] = None  # leakage: indices into that set


@dataclasses.dataclass
class CleaningResult:
  data: ImageSet
  held_out: Dict[str, ImageSet]
  findings: List[Finding]
  removed: Dict[str, np.ndarray]  # reason -> indices (each image under one reason)
  contamination_scores: contamination.Scores
  model: contamination.CellModel
  settings: object
  seconds: Dict[str, float]

  @property
  def keep(self) -> np.ndarray:
    """Boolean mask over `data`: the images keep.txt lists."""
    mask = np.ones(len(self.data), bool)
    for indices in self.removed.values():
      mask[indices] = False
    return mask

  def of_kind(self, kind: str) -> List[Finding]:
    return [f for f in self.findings if f.kind == kind]


def clean(data: ImageSet, settings, held_out: Optional[Dict[str, ImageSet]] = None,
          seed: int = 0) -> CleaningResult:
  """Finds duplicates, conflicts, contamination and leakage in `data` (see module doc)."""
  held_out = dict(held_out or {})
  clock = _Clock()
  observed = contamination.observe(data.images)
  model = contamination.fit(observed, settings, data.images, seed)
  scores = contamination.score(observed, model, settings)
  contaminated = scores.flagged
  clock.lap("contamination")

  digests = fp.pixel_digests(data.images)
  groups = duplicates.exact_groups(digests)
  searched = np.intersect1d(duplicates.representatives(len(data), groups),
                            np.flatnonzero(~contaminated))
  clock.lap("exact_duplicates")
  if len(searched) >= 2:
    index, matches = duplicates.near_duplicates(data.images, searched, settings, seed)
  else:
    index, matches = None, _no_matches()
  clock.lap("near_duplicates")

  findings = [_contaminated_finding(data, scores, i, settings)
              for i in np.flatnonzero(contaminated)]
  findings += [_exact_finding(data, g, contaminated) for g in groups]
  removed = {reason: [] for reason in REASONS}
  removed["contaminated"] = list(np.flatnonzero(contaminated))
  for component in duplicates.components(len(data), groups, matches):
    findings += _group_findings(data, component, matches, contaminated, settings, removed)

  for name, other in held_out.items():
    findings += _leakage_findings(data, name, other, digests, index, searched, settings,
                                  removed)
  clock.lap("leakage")
  result = CleaningResult(data, held_out, findings, _exclusive(removed, len(data)), scores,
                          model, settings, clock.laps)
  keep = result.keep
  for finding in result.of_kind("exact_duplicate"):
    finding.details["kept"] = _ids(data, finding.members[keep[finding.members]])
  return result


def _group_findings(data, component, matches, contaminated, settings, removed):
  """Near-duplicate and label-conflict findings of one group; marks what it drops."""
  findings = []
  links = np.flatnonzero(np.isin(matches.a, component) & np.isin(matches.b, component))
  weakest = float(matches.similarity[links].min()) if len(links) else 1.0
  pairs = [matches.describe(i, data.ids, data.ids) for i in links]
  clean_members = component[~contaminated[component]]
  labels = data.labels[clean_members]
  conflict = len(np.unique(labels)) > 1
  if conflict and not settings.keep_conflicts:
    kept = np.asarray([], int)
  elif conflict:
    kept = np.asarray([clean_members[labels == c][0] for c in np.unique(labels)])
  else:
    kept = clean_members[:1]
  dropped = np.setdiff1d(clean_members, kept)
  removed["label_conflict" if conflict else "duplicate"].extend(dropped.tolist())
  if len(links):
    findings.append(Finding("near_duplicate", component, weakest,
                            {"pairs": pairs, "kept": _ids(data, kept),
                             "labels": _labels(data, component)}))
  if conflict:
    findings.append(Finding("label_conflict", component, weakest, {
        "labels": _labels(data, component), "kept": _ids(data, kept),
        "action": ("kept one image per label" if settings.keep_conflicts
                   else "removed every image of the group")}))
  return findings


def _leakage_findings(data, name, other, digests, index, searched, settings, removed):
  """One finding per held-out image that has copies in `data`."""
  copies = {}
  other_digests = fp.pixel_digests(other.images)
  by_digest = {}
  for i, d in enumerate(digests):
    by_digest.setdefault(d, []).append(i)
  for j, d in enumerate(other_digests):
    for i in by_digest.get(d, ()):
      copies.setdefault(j, {})[i] = (1.0, None)
  if index is not None:
    matches = duplicates.leaked(index, data.images, searched, other.images, settings)
    for k in range(len(matches)):
      i, j = int(matches.a[k]), int(matches.b[k])
      # Every exact copy of a searched image leaks with it.
      for twin in by_digest[digests[i]]:
        best = copies.setdefault(j, {}).get(twin, (0.0, None))[0]
        if matches.similarity[k] > best:
          copies[j][twin] = (float(matches.similarity[k]), matches.describe(k, data.ids, other.ids))
  findings = []
  for j in sorted(copies):
    members = np.asarray(sorted(copies[j]))
    score = min(s for s, _ in copies[j].values())
    pairs = [p for _, p in copies[j].values() if p is not None]
    findings.append(Finding(
        "leakage", members, score,
        {"held_out": name, "held_out_ids": [str(other.ids[j])], "exact": score >= 1.0,
         "pairs": pairs,
         "action": "kept in training" if settings.keep_leaked else "removed from training"},
        held_out=name, held_out_members=np.asarray([j])))
    if not settings.keep_leaked:
      removed["leakage"].extend(members.tolist())
  return findings


def _contaminated_finding(data, scores, i, settings):
  details = contamination.evidence(scores, i, settings, data.images.shape[1])
  details["label"] = data.class_names[data.labels[i]]
  return Finding("contaminated", np.asarray([i]), float(scores.score[i]), details)


def _exact_finding(data, group, contaminated):
  return Finding("exact_duplicate", group, 1.0,
                 {"labels": _labels(data, group),
                  "contaminated": _ids(data, group[contaminated[group]])})


def _exclusive(removed, num_images):
  """Each removed image under the first reason (in REASONS order) that names it."""
  taken = np.zeros(num_images, bool)
  out = {}
  for reason in REASONS:
    indices = np.unique(np.asarray(removed[reason], int))
    out[reason] = indices[~taken[indices]]
    taken[indices] = True
  return out


def _ids(data, indices):
  return [str(data.ids[i]) for i in indices]


def _labels(data, indices):
  return {str(data.ids[i]): data.class_names[data.labels[i]] for i in indices}


def _no_matches():
  empty = np.asarray([], int)
  return duplicates.Matches(empty, empty, empty, np.asarray([], np.float32), empty, empty)


class _Clock:
  def __init__(self):
    self.start = self.last = time.perf_counter()
    self.laps = {}

  def lap(self, name):
    now = time.perf_counter()
    self.laps[name] = round(now - self.last, 2)
    self.last = now
