"""Copy an ImageFolder with every image re-encoded as JPEG at a lower quality.

  python benchmarks/shrink_image_folder.py SRC DST [--quality=85]

For carrying a dataset to a remote accelerator machine under a size limit
(pbc96: 63 MB at its own quality, 39 MB at 85). Files keep their relative
paths (extension .jpg); non-image files are skipped.
"""

import argparse
import os

from PIL import Image

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("src")
  parser.add_argument("dst")
  parser.add_argument("--quality", type=int, default=85)
  args = parser.parse_args()
  count = 0
  for directory, _, files in os.walk(args.src):
    for name in sorted(files):
      if not name.lower().endswith(EXTENSIONS):
        continue
      relative = os.path.relpath(os.path.join(directory, name), args.src)
      target = os.path.join(args.dst, os.path.splitext(relative)[0] + ".jpg")
      os.makedirs(os.path.dirname(target), exist_ok=True)
      with Image.open(os.path.join(directory, name)) as image:
        image.convert("RGB").save(target, "JPEG", quality=args.quality)
      count += 1
  print(f"{count} images -> {args.dst} (quality {args.quality})")


if __name__ == "__main__":
  main()
