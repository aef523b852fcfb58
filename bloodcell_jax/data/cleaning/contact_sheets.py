"""Contact sheets: every finding as thumbnails, so that a person can check it at a glance.

One set of PNGs per kind (`contact_<kind>_<page>.png`): a row per group (its
images with id, label and the group's score) for duplicates, conflicts and
leakage; a grid for contaminated images, each with its score, the criterion it
failed and the offending tile outlined.
"""

import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from bloodcell_jax import atomic

ROWS_PER_PAGE = 8  # groups per page
MEMBERS_SHOWN = 6  # images per group row
GRID = 6  # contaminated images: GRID x GRID per page
MAX_PAGES = 20  # per kind; the report still lists every finding


def write_all(result, out_dir: str) -> list:
  """Writes the sheets of every kind that has findings; returns their paths."""
  paths = []
  for kind in ("exact_duplicate", "near_duplicate", "label_conflict", "leakage"):
    findings = result.of_kind(kind)
    for page, start in enumerate(range(0, len(findings), ROWS_PER_PAGE)[:MAX_PAGES]):
      chunk = findings[start:start + ROWS_PER_PAGE]
      path = os.path.join(out_dir, f"contact_{kind}_{page + 1}.png")
      _save(_group_page(result, kind, chunk, page + 1, _pages(len(findings), ROWS_PER_PAGE)),
            path)
      paths.append(path)
  findings = result.of_kind("contaminated")
  findings = sorted(findings, key=lambda f: -f.score)
  per_page = GRID * GRID
  for page, start in enumerate(range(0, len(findings), per_page)[:MAX_PAGES]):
    path = os.path.join(out_dir, f"contact_contaminated_{page + 1}.png")
    _save(_contaminated_page(result, findings[start:start + per_page], page + 1,
                             _pages(len(findings), per_page)), path)
    paths.append(path)
  return paths


def _group_page(result, kind, findings, page, pages):
  data = result.data
  fig = Figure(figsize=(1.7 * MEMBERS_SHOWN, 2.0 * len(findings) + 0.6))
  fig.suptitle(f"{kind.replace('_', ' ')}: page {page} of {pages}", fontsize=11)
  for row, finding in enumerate(findings):
    tiles = []
    if finding.held_out is not None:
      other = result.held_out[finding.held_out]
      for j in finding.held_out_members:
        tiles.append((other.images[j], f"{finding.held_out}: {_short(other.ids[j])}",
                      other.class_names[other.labels[j]], "tab:blue"))
    kept = set(finding.details.get("kept", ()))
    for i in finding.members:
      colour = "tab:green" if str(data.ids[i]) in kept else "tab:red"
      tiles.append((data.images[i], _short(data.ids[i]), data.class_names[data.labels[i]],
                    colour))
    hidden = max(0, len(tiles) - MEMBERS_SHOWN)
    for col, (image, name, label, colour) in enumerate(tiles[:MEMBERS_SHOWN]):
      ax = fig.add_subplot(len(findings), MEMBERS_SHOWN, row * MEMBERS_SHOWN + col + 1)
      ax.imshow(image)
      ax.set_xticks([])
      ax.set_yticks([])
      for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(2)
      ax.set_title(f"{name}\n{label}", fontsize=7)
      if col == 0:
        more = f"\n(+{hidden} more)" if hidden else ""
        ax.set_ylabel(f"score {finding.score:.3f}{more}", fontsize=8)
  fig.text(0.01, 0.005, "green: kept, red: removed, blue: held-out image", fontsize=7)
  return fig


def _contaminated_page(result, findings, page, pages):
  data = result.data
  rows = -(-len(findings) // GRID)
  fig = Figure(figsize=(1.9 * GRID, 2.1 * rows + 0.6))
  fig.suptitle(f"contaminated: page {page} of {pages} (highest score first)", fontsize=11)
  for k, finding in enumerate(findings):
    i = int(finding.members[0])
    ax = fig.add_subplot(rows, GRID, k + 1)
    ax.imshow(data.images[i])
    ax.set_xticks([])
    ax.set_yticks([])
    tile = finding.details.get("tile")
    if tile:
      y0, x0, y1, x1 = tile
      ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                             edgecolor="red", linewidth=1.5))
    ax.set_title(f"{_short(data.ids[i])}\n{finding.details['criterion']} "
                 f"{finding.score:.2f}", fontsize=7)
  return fig


def _save(fig, path):
  FigureCanvasAgg(fig)
  fig.tight_layout(rect=(0, 0.02, 1, 0.97))
  atomic.save_figure(fig, path, 80)


def _pages(count, per_page):
  return min(MAX_PAGES, -(-count // per_page))


def _short(image_id, limit=22) -> str:
  name = str(image_id)
  return name if len(name) <= limit else "..." + name[-(limit - 3):]
