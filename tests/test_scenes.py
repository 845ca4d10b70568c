"""rlir_env.scenes: named start-scene sources are registered by the package that provides them; the generic module
knows none of them."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest

import rlir_env  # noqa: F401  (registers scenes="crafter")
from rlir_env import scenes as scenes_module
from rlir_env.crafter.scenes import CrafterScenes
from rlir_env.scenes import NAMED_SCENES, Scene, register_scenes, resolve_scenes
from worldmodels.actions import get_domain
from worldmodels.errors import ConfigError


def test_the_generic_module_imports_no_domain_scenes():
    tree = ast.parse(inspect.getsource(scenes_module))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not any(name.startswith("rlir_env.crafter") for name in imported), imported


def test_crafter_scenes_are_registered_by_rlir_env():
    assert NAMED_SCENES["crafter"].domain == "crafter"
    source = resolve_scenes("crafter", domain=get_domain("crafter"), frame_size=(72, 72), context_frames=2)
    assert isinstance(source, CrafterScenes) and source.context_frames == 2
    scene = source.sample(np.random.default_rng(0))
    assert scene.frames.shape == (2, 72, 72, 3) and scene.actions.shape == (1,)
    with pytest.raises(ConfigError, match="'crafter' domain, this world model speaks 'minecraft'"):
        resolve_scenes("crafter", domain=get_domain("minecraft"), frame_size=(72, 72))


def test_a_package_registers_its_own_named_scenes(monkeypatch):
    monkeypatch.setattr(scenes_module, "NAMED_SCENES", dict(NAMED_SCENES))
    blank = Scene(frames=np.zeros((1, 8, 8, 3), np.uint8), actions=np.zeros((0, 9), np.int64))

    class Blank:
        def __init__(self, frame_size, context_frames):
            self.frame_size, self.context_frames = frame_size, context_frames

        def sample(self, rng):
            return blank

    register_scenes("blank", Blank, domain="minecraft")
    register_scenes("blank", Blank, domain="minecraft")  # the same registration again (a re-import) is fine
    source = resolve_scenes("blank", domain=get_domain("minecraft"), frame_size=(8, 8), context_frames=1)
    assert isinstance(source, Blank) and source.frame_size == (8, 8) and source.sample(None) is blank
    with pytest.raises(ConfigError, match="scenes 'blank' is registered already"):
        register_scenes("blank", "somewhere:else", domain="minecraft")
    with pytest.raises(ConfigError, match=r"a registered name \('blank', 'crafter'\)"):
        resolve_scenes("nowhere", domain=get_domain("minecraft"), frame_size=(8, 8))
