"""``report_to``: the one logging-backend option of every trainer; a missing backend fails at start-up."""

from __future__ import annotations

import importlib.util
import json

import pytest

from rlir.cli import main
from worldmodels.errors import ConfigError
from worldmodels.training.common import JsonlLogger
from worldmodels.training.report import check_report_to

HAS_WANDB = importlib.util.find_spec("wandb") is not None


def test_unknown_backend_is_named():
    with pytest.raises(ConfigError, match=r"'mlflow'.*\['tensorboard', 'wandb', 'none'\]"):
        check_report_to("mlflow")


@pytest.mark.skipif(HAS_WANDB, reason="needs an environment without wandb")
def test_a_missing_backend_fails_loudly_in_every_trainer(tmp_path, capsys):
    with pytest.raises(ConfigError, match="wandb package, which is not installed: pip install wandb"):
        JsonlLogger(tmp_path / "log.jsonl", report_to="wandb")
    # the CLI answers in one line before any data is read (the data directory does not exist)
    commands = [
        ["train", "tokenizer", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "t.safetensors")],
        ["train", "worldmodel", "--data", str(tmp_path / "none"), "--tokenizer", "x", "--out", str(tmp_path / "w")],
        ["train", "nfd", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "n.safetensors")],
        ["train", "reward-head", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "h.safetensors")],
        ["agents", "train", "--steps", "8", "--out", str(tmp_path / "agent")],
    ]
    for command in commands:
        assert main([*command, "--report-to", "wandb"]) == 2, command
        assert "wandb package" in capsys.readouterr().err
    assert not (tmp_path / "agent").exists()


def test_tensorboard_receives_the_logged_numbers(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = JsonlLogger(tmp_path / "run" / "log.jsonl", report_to="tensorboard")
    logger.log(step=3, loss=0.5, eval={"psnr": 31.0}, per_task=[0.25, 0.75], note="text")
    logger.close()
    assert json.loads((tmp_path / "run" / "log.jsonl").read_text())["eval"] == {"psnr": 31.0}
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == {"loss", "eval/psnr", "per_task/0", "per_task/1"}
    assert [(e.step, e.value) for e in events.Scalars("eval/psnr")] == [(3, 31.0)]


@pytest.mark.skipif(HAS_WANDB, reason="needs an environment without wandb")
def test_posttrain_checks_its_report_to_before_loading(tmp_path, capsys):
    code = main(["posttrain", "--model", "crafter-mineworld", "--data", "crafter-af-v1", "--out", str(tmp_path / "run"),
                           "logging.report_to=wandb"])  # fmt: skip
    assert code == 2 and "wandb package" in capsys.readouterr().err and not (tmp_path / "run").exists()
