"""Store a default decoding in a MineWorld .safetensors (its generation defaults, as a Hugging Face model's
generation_config.json): envs, `rlir eval` and `rlir demo` sample with it unless told otherwise. The weights are
unchanged; the training summary next to the file (<stem>.json, when there is one) gets the new file's sha256 and the
setting under "default_sampling".

    python scripts/set_default_sampling.py runs/embedded/models/crafter-mineworld.safetensors --top-p 0.9
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path

from worldmodels.mineworld import MineWorld, SamplingConfig, save_safetensors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a .safetensors written by save_safetensors (rewritten in place)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--top-k", type=int, default=None)
    args = parser.parse_args()
    sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    save_safetensors(MineWorld.from_checkpoint(args.model, sampling=sampling), args.model)
    sha256 = hashlib.sha256(args.model.read_bytes()).hexdigest()
    summary_path = args.model.with_suffix(".json")
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        summary.update(sha256=sha256, default_sampling=dataclasses.asdict(sampling))
        summary_path.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{args.model}: default sampling {sampling}; sha256 {sha256}")


if __name__ == "__main__":
    main()
