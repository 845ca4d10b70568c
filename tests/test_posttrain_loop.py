"""The post-training loop's structure: both paradigms implement the ``Paradigm`` protocol the loop runs, the
config picks the paradigm, and the ``posttrain`` modules import one way (no two import each other, no private names
across modules)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from posttrain.config import load_config
from posttrain.flow.config import load_flow_config
from posttrain.flow.paradigm import FlowGRPO
from posttrain.grpo.paradigm import GRPO
from posttrain.loop import make_paradigm
from posttrain.paradigm import Paradigm
from tests.world_models import tiny_mineworld, tiny_nfd
from worldmodels.errors import ConfigError

POSTTRAIN = Path(__file__).resolve().parents[1] / "posttrain"


def test_both_paradigms_implement_the_protocol_and_the_config_picks_one(tmp_path):
    grpo_config = load_config(None, [f"out={tmp_path}", "model.lora_rank=2", "algo.beta=0.01"], validate=False)
    grpo = make_paradigm(grpo_config, tiny_mineworld(seed=1), verbose=False)
    assert isinstance(grpo, GRPO) and isinstance(grpo, Paradigm)
    assert grpo.params and all(p.requires_grad for p in grpo.params)
    assert sum(p.requires_grad for p in grpo.transformer.parameters()) == len(grpo.params)  # LoRA adapters only
    assert grpo.summary() == {"reference": "lora-disabled"} and grpo.run_tags == {}

    flow_config = load_flow_config(None, [f"out={tmp_path}", "algo.beta=0.01"], validate=False)
    flow = make_paradigm(flow_config, tiny_nfd(seed=1), verbose=False)
    assert isinstance(flow, FlowGRPO) and isinstance(flow, Paradigm)
    assert len(flow.params) == len(list(flow.transformer.parameters())) and not flow.off_policy
    assert flow.summary()["paradigm"] == flow.run_tags["paradigm"] == "flow-grpo"
    assert flow.summary()["reference"] == "frozen-copy"

    with pytest.raises(ConfigError, match="Flow-GRPO"):  # an NFD model under a GRPO config names the fix
        make_paradigm(grpo_config, tiny_nfd(seed=1), verbose=False)
    with pytest.raises(ConfigError, match="NFD"):
        make_paradigm(flow_config, tiny_mineworld(seed=1), verbose=False)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, imported names)`` of every ``from posttrain... import ...`` in ``path``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("posttrain"):
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.startswith("posttrain")]
    return found


def test_posttrain_modules_import_one_way_and_no_private_names():
    modules = {}
    for path in POSTTRAIN.rglob("*.py"):
        parts = path.relative_to(POSTTRAIN.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = _imports(path)
    private = [(name, module, n) for name, found in modules.items() for module, names in found for n in names
               if n.startswith("_") and n != "__version__"]  # fmt: skip
    assert not private, f"private names imported across modules: {private}"
    edges = {name: {module for module, _ in found if module in modules and module != name}
             for name, found in modules.items()}  # fmt: skip
    mutual = sorted({tuple(sorted((a, b))) for a, targets in edges.items() for b in targets if a in edges.get(b, ())})
    assert not mutual, f"modules importing each other: {mutual}"


def test_the_loop_uses_no_private_model_attributes():
    """The rollouts drive the models through their public hooks (``worldmodels.protocol``)."""
    offenders = [f"{path.relative_to(POSTTRAIN.parent)}:{i}" for path in POSTTRAIN.rglob("*.py")
                 for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if any(f"{obj}._" in line for obj in ("model", "policy", "state"))]  # fmt: skip
    assert not offenders, offenders
