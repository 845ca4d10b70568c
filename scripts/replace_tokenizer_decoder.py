"""Put a fine-tuned tokenizer decoder (`rlir train tokenizer --supervision decoder`) into MineWorld .safetensors files.

Only the decoder half (`decoder.*`, `post_quant_conv.*`) is replaced, and only when the new tokenizer's encoder,
quant_conv and codebook equal the model's bit for bit: every frame then tokenizes as before, so the transformer
(trained or post-trained on those tokens) is untouched; the frames it generates are drawn by the new decoder. The
file keeps its default sampling; its training summary (<stem>.json, when it records the file's "sha256") gets the new
one and the decoder's origin under "tokenizer_decoder" (a post-training summary is rewritten from new bundles by
scripts/posttrain_summary.py --rescore).

    python scripts/replace_tokenizer_decoder.py runs/embedded/models/crafter-vq-v2d.safetensors \\
        worldmodels/bundled/crafter-mineworld.safetensors worldmodels/bundled/crafter-mineworld-rlir.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from worldmodels.hashing import sha256_file
from worldmodels.mineworld import MineWorld, save_safetensors
from worldmodels.training.tokenizer import load_tokenizer
from worldmodels.training.tokenizer_decoder import DECODER_PREFIXES, tokenizing_differences


def replace_decoder(model_path: Path, tokenizer_path: Path) -> str:
    """Rewrite ``model_path`` with the decoder of ``tokenizer_path``; returns the new file's sha256."""
    model = MineWorld.from_checkpoint(model_path)
    new_state = load_tokenizer(tokenizer_path).model.state_dict()
    old_state = model.tokenizer.model.state_dict()
    if new_state.keys() != old_state.keys():
        raise SystemExit(f"{tokenizer_path} has another architecture than {model_path}'s tokenizer")
    differing = tokenizing_differences(old_state, new_state)
    if differing:
        raise SystemExit(f"{tokenizer_path} tokenizes differently from {model_path} ({', '.join(differing[:3])} "
                         "differ): only a decoder fine-tuned from this model's tokenizer (--supervision decoder "
                         "--init) fits")
    model.tokenizer.model.load_state_dict({k: v for k, v in new_state.items() if k.startswith(DECODER_PREFIXES)},
                                          strict=False)  # fmt: skip
    save_safetensors(model, model_path)
    sha256 = sha256_file(model_path)
    summary_path = model_path.with_suffix(".json")
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if "sha256" in summary:
        decoder = {"name": tokenizer_path.name, "sha256": sha256_file(tokenizer_path)}
        summary.update(sha256=sha256, tokenizer_decoder=decoder)
        summary_path.write_text(json.dumps(summary, indent=1) + "\n")
    return sha256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tokenizer", type=Path, help="the fine-tuned tokenizer (.safetensors)")
    parser.add_argument("models", type=Path, nargs="+", help="MineWorld .safetensors files (rewritten in place)")
    args = parser.parse_args()
    for path in args.models:
        print(f"{path}: decoder of {args.tokenizer.name}; sha256 {replace_decoder(path, args.tokenizer)}")


if __name__ == "__main__":
    main()
