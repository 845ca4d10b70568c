"""worldmodels.runtime: the data-parallel layout, atomic writes and the progress bar every layer shares."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest
import torch

from tests.launch import torchrun
from worldmodels.errors import ConfigError
from worldmodels.runtime import Distributed, Progress, atomic_output, write_json


def test_atomic_output_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "deep" / "result.json"
    write_json(path, {"score": np.float32(0.5), "per_item": np.arange(3), "where": tmp_path})
    assert json.loads(path.read_text()) == {"score": 0.5, "per_item": [0, 1, 2], "where": str(tmp_path)}
    with pytest.raises(RuntimeError), atomic_output(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert json.loads(path.read_text())["score"] == 0.5
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]  # no temporary file left behind


def test_write_json_refuses_nan_and_writes_compact_lines(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "nan.json", {"loss": math.nan})
    assert not (tmp_path / "nan.json").exists()
    write_json(tmp_path / "line.json", {"a": torch.tensor(2.0), "b": [1, 2]}, indent=None, durable=True)
    assert (tmp_path / "line.json").read_text() == '{"a": 2.0, "b": [1, 2]}'


def test_one_process_layout_is_a_no_op():
    one = Distributed.from_env()
    assert (one.rank, one.world, one.main) == (0, 1, True)
    array = np.arange(6).reshape(3, 2)
    assert one.gather_rows(array) is array and one.mean(2.5) == 2.5 and one.rows(8) == slice(0, 8)
    module = torch.nn.Linear(2, 2)
    assert one.wrap(module) is module
    one.barrier()
    with pytest.raises(ConfigError, match="multiple of the 2 processes"):
        Distributed(rank=1, world=2).rows(5)
    with pytest.raises(ConfigError, match="'mean'"):
        one.reduce(torch.zeros(1), "mean")


def test_progress_disabled_draws_nothing_and_counts_nothing(capsys):
    with Progress(3, "steps", enabled=False) as bar:
        bar.advance(1, "status")
    assert capsys.readouterr().out == ""


SCRIPT = """
import json, sys
import numpy as np, torch
from worldmodels.runtime import Distributed

layout = Distributed.from_env("cpu")
rows = np.full((2, 3), layout.rank, dtype=np.int64)
result = {
    "rank": layout.rank, "world": layout.world, "main": layout.main,
    "gathered": layout.gather_rows(rows).tolist(),
    "sum": layout.reduce(torch.tensor([layout.rank + 1.0])).item(),
    "max": layout.reduce(torch.tensor([float(layout.rank)]), "max").item(),
    "mean": layout.mean(float(layout.rank)),
    "share": [layout.rows(8).start, layout.rows(8).stop],
}
layout.barrier()
with open(sys.argv[1] + f".{layout.rank}.json", "w") as f:
    json.dump(result, f)
"""


@pytest.mark.slow
def test_two_gloo_processes_under_torchrun(tmp_path):
    script = tmp_path / "layout.py"
    script.write_text(textwrap.dedent(SCRIPT))
    torchrun(str(script), str(tmp_path / "out"))
    results = [json.loads((tmp_path / f"out.{rank}.json").read_text()) for rank in (0, 1)]
    for rank, result in enumerate(results):
        assert (result["rank"], result["world"], result["main"]) == (rank, 2, rank == 0)
        assert result["gathered"] == [[0, 0, 0], [0, 0, 0], [1, 1, 1], [1, 1, 1]]
        assert (result["sum"], result["max"], result["mean"]) == (3.0, 1.0, 0.5)
        assert result["share"] == [4 * rank, 4 * rank + 4]
