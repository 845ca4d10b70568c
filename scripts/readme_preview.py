"""Draw the README's preview strip (docs/preview_strip.png) from a bundle written by `rlir eval` (kept videos).

    rlir eval --model crafter-mineworld --suite crafter-af-v1 --idm crafter-idm-heldout --items 2 --out runs/readme
    python scripts/readme_preview.py runs/readme --suite crafter-af-v1 --out docs/preview_strip.png
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from evaluation.bundle import load_bundle, load_video
from evaluation.metrics.taxonomy import get_taxonomy
from evaluation.previews import preview_frames, preview_strip
from evaluation.suites import load_suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", help="bundle directory with videos/")
    parser.add_argument("--suite", default="crafter-af-v1")
    parser.add_argument("--item", default=None, help="item id (default: the bundle's first)")
    parser.add_argument("--frames", type=int, default=4, help="frames in the strip")
    parser.add_argument("--out", default="docs/preview_strip.png")
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    record = next(r for r in bundle.items if args.item in (None, r.id))
    suite = load_suite(args.suite)
    item = suite[suite.index_of(record.id)]
    generated = load_video(args.bundle, bundle.videos[record.id])
    frames = preview_frames(generated, item.ground_truth, np.asarray(record.gt_labels), np.asarray(record.pred_labels),
                            get_taxonomy(bundle.taxonomy))  # fmt: skip
    Image.fromarray(preview_strip(frames, args.frames)).save(args.out, optimize=True)
    print(f"wrote {args.out} ({record.id} of {bundle.model.name})")


if __name__ == "__main__":
    main()
