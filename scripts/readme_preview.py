"""Draw the README's preview strip (docs/preview_strip.png) from bundles written by `rlir eval` (kept videos): per
bundle, generated | ground truth with the commanded and the IDM-read action under every frame; several bundles of
the same suite item are laid side by side (real vs generated for the same action script, model against model).

    rlir eval --model crafter-mineworld --suite crafter-af-v1 --idm crafter-idm-heldout --items 2 --out runs/readme
    python scripts/readme_preview.py runs/readme --suite crafter-af-v1 --out docs/preview_strip.png
    python scripts/readme_preview.py runs/demo/crafter-mineworld-v1 runs/demo/crafter-mineworld --frames 5 \\
        --out docs/real_vs_generated.png
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from evaluation.bundle import load_bundle, load_video
from evaluation.metrics.taxonomy import get_taxonomy
from evaluation.previews import preview_frames, preview_strip
from evaluation.suites import load_suite

_TITLE = 16  # pixels above each strip for the model's name


def strip(bundle_dir: str, bundle, suite, item_id: str, frames: int) -> tuple[np.ndarray, str]:
    record = next(r for r in bundle.items if r.id == item_id)
    item = suite[suite.index_of(record.id)]
    generated = load_video(bundle_dir, bundle.videos[record.id])
    drawn = preview_frames(generated, item.ground_truth, np.asarray(record.gt_labels), np.asarray(record.pred_labels),
                           get_taxonomy(bundle.taxonomy))  # fmt: skip
    return preview_strip(drawn, frames), f"{record.id}: {bundle.model.name} | real"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", help="bundle directories with videos/ (one strip each)")
    parser.add_argument("--suite", default="crafter-af-v1")
    parser.add_argument("--item", default=None, help="item id (default: the first bundle's first)")
    parser.add_argument("--frames", type=int, default=4, help="frames in each strip")
    parser.add_argument("--out", default="docs/preview_strip.png")
    args = parser.parse_args()
    suite = load_suite(args.suite)
    bundles = [load_bundle(b) for b in args.bundles]
    item_id = args.item or bundles[0].items[0].id
    strips = [strip(d, b, suite, item_id, args.frames) for d, b in zip(args.bundles, bundles)]
    if len(strips) == 1:
        image = Image.fromarray(strips[0][0])
    else:
        gap = 8
        height = max(s.shape[0] for s, _ in strips) + _TITLE
        image = Image.new("RGB", (sum(s.shape[1] for s, _ in strips) + gap * (len(strips) - 1), height), (24, 24, 24))
        draw, x = ImageDraw.Draw(image), 0
        for pixels, title in strips:
            draw.text((x + 4, 2), title, fill=(235, 235, 235), font=ImageFont.load_default())
            image.paste(Image.fromarray(pixels), (x, _TITLE))
            x += pixels.shape[1] + gap
    image.save(args.out, optimize=True)
    print(f"wrote {args.out} ({item_id}: {', '.join(b.model.name for b in bundles)})")


if __name__ == "__main__":
    main()
