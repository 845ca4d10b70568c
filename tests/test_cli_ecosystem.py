"""The discovery commands (``rlir --version``, ``rlir doctor``, ``rlir list``) and the device check every command
with ``--device`` runs first."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from rlir.cli import main
from worldmodels import registry
from worldmodels.device import check_device
from worldmodels.errors import ConfigError


def test_version_prints_the_installed_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"rlir {version('rlir')}"


def test_list_shows_bundled_files_verified_and_official_ones_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RLIR_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["list", "models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "sha256 ok" in lines["crafter-mineworld"] and " ok " in lines["crafter-mineworld"]
    assert "not installed" in lines["mineworld-300m-16f"] and "300M_16f.ckpt missing" in lines["mineworld-300m-16f"]

    # the VPT IDM turns "ok" once both of its files are where the registry looks
    assert main(["list", "idms"]) == 0
    assert "not installed" in next(line for line in capsys.readouterr().out.splitlines() if "vpt-4x-idm" in line)
    (tmp_path / "idm").mkdir()
    for name in ("4x_idm.model", "4x_idm.weights"):
        (tmp_path / "idm" / name).write_bytes(b"x")
    assert main(["list", "idms"]) == 0
    vpt_line = next(line for line in capsys.readouterr().out.splitlines() if "vpt-4x-idm" in line)
    assert "not installed" not in vpt_line and " ok " in vpt_line

    assert main(["list", "suites"]) == 0
    assert "crafter-af-v1" in capsys.readouterr().out


def test_doctor_reports_a_file_that_fails_its_pin(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["doctor"]) == 0
    healthy = capsys.readouterr().out
    assert f"torch {torch.__version__}" in healthy and "RLIR_HOME" in healthy and "crafter-idm-heldout" in healthy

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"the real file")
    pin = hashlib.sha256(b"another file").hexdigest()
    registry.register("doctor-test-model", files=(registry.ModelFile("checkpoint", "w.safetensors", sha256=pin),),
                      loader=registry.load_bundled, root=tmp_path)  # fmt: skip
    try:
        assert main(["doctor"]) == 1
    finally:
        del registry.REGISTRY["doctor-test-model"]
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("doctor-test-model"))
    assert "broken" in line and "does not match its sha256 pin" in line
    assert "broken: doctor-test-model" in out


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "meta"])
def test_unknown_devices_are_refused_in_one_line(device):
    with pytest.raises(ConfigError, match=f"{device!r}"):
        check_device(device)


def test_cpu_passes_the_device_check():
    assert check_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.version.cuda is not None, reason="needs a CPU-only torch build")
def test_cuda_on_a_cpu_torch_ends_with_one_line_and_exit_code_2(capsys):
    # the device is checked before the model, suite or IDM is touched: these names do not even exist
    code = main(["eval", "--model", "no-such-model", "--suite", "no-such-suite", "--idm", "x", "--out", "unused",
                 "--device", "cuda"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "'cuda'" in err and "--device cpu" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) <= 2  # one message (rich may wrap it)


@pytest.mark.skipif(torch.version.cuda is not None, reason="needs a CPU-only torch build")
def test_every_command_with_a_device_option_checks_it(capsys):
    code = main(["agents", "train", "--steps", "1", "--device", "cuda:1", "--out", "unused"])
    assert code == 2 and "'cuda:1'" in capsys.readouterr().err


@pytest.mark.skipif(torch.version.cuda is not None, reason="needs a CPU-only torch build")
def test_posttrain_checks_a_device_given_as_a_config_override(tmp_path, capsys):
    code = main(["posttrain", "--model", "crafter-mineworld", "--data", "crafter-af-v1", "--out", str(tmp_path / "run"),
                           "model.device=cuda"])  # fmt: skip
    assert code == 2 and "'cuda'" in capsys.readouterr().err


def test_help_shows_defaults_and_one_flag_convention(capsys):
    for command in (["eval"], ["train", "tokenizer"], ["train", "nfd"], ["agents", "train"], ["posttrain"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--progress, --no-progress" in text, command
        if command != ["agents", "train"]:
            assert "--resume auto|never" in text, command
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--num-envs NUM_ENVS default: 8" in text and "--seed SEED default: 0" in text
    assert "(default: --progress)" in text and "--resume auto|never auto: continue" in text


def test_resume_values_are_checked():
    from rlir.options import resolve_out, resume_mode

    assert resume_mode("auto") == "auto" and resume_mode("never") == "never"
    with pytest.raises(ConfigError, match="'yes'.*auto.*never"):
        resume_mode("yes")
    assert str(resolve_out("runs/tok", "tokenizer")).endswith("runs/tok/tokenizer.safetensors")
    assert str(resolve_out("runs/x.safetensors", "tokenizer")) == "runs/x.safetensors"


def _video_quality_files(tmp_path):
    """Backbone files under their public names, with random weights (the real ones cannot be downloaded here)."""
    from evaluation.metrics.fvd import I3D_FILE
    from tests.test_metrics_lpips_fvd import CHANNELS, TinyI3D, torchvision_alexnet_features

    torch.manual_seed(0)
    folder = tmp_path / "lpips"
    folder.mkdir()
    features = torchvision_alexnet_features()
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, folder / "alexnet-owt-7be5be79.pth")
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(CHANNELS)}, folder / "alex.pth")
    i3d = tmp_path / I3D_FILE
    torch.jit.save(torch.jit.script(TinyI3D()), str(i3d))
    return folder, i3d


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_quick_look_and_score_videos_subcommand(tmp_path, capsys):
    import json

    from evaluation.suites import first_items, load_suite, save_suite
    from worldmodels.data.video import write_video

    out = tmp_path / "quick"
    lpips_dir, i3d = _video_quality_files(tmp_path)
    quick = ["eval", "--model", "crafter-mineworld", "--suite", "crafter-af-v1", "--idm", "crafter-idm-heldout",
             "--items", "2", "--num-envs", "2", "--out", str(out), "--no-progress"]  # fmt: skip
    # a missing backbone file is refused before anything is generated
    assert main([*quick, "--lpips-weights", str(tmp_path)]) == 2
    assert "alexnet-owt-7be5be79.pthismissing;putalexnet" in "".join(capsys.readouterr().err.split())  # rich wraps
    assert not (out / "items").exists()
    assert main([*quick, "--lpips-weights", str(lpips_dir), "--i3d-weights", str(i3d)]) == 0
    bundle = json.loads((out / "bundle.json").read_text())
    full = load_suite("crafter-af-v1")
    # LPIPS and FVD of the stored videos against the ground truth, as the metric functions compute them
    from evaluation.bundle import load_video
    from evaluation.metrics.fvd import fvd
    from evaluation.metrics.lpips import lpips

    generated = np.stack([load_video(out, bundle["videos"][i]) for i in full.item_ids[:2]])
    truth = full.arrays["ground_truth"][:2]
    expected = lpips(generated, truth, backbone_path=lpips_dir / "alexnet-owt-7be5be79.pth",
                     linear_path=lpips_dir / "alex.pth")  # fmt: skip
    assert bundle["metrics"]["lpips"]["mean"] == pytest.approx(expected["mean"], rel=1e-9)
    assert bundle["metrics"]["fvd"]["mean"] == pytest.approx(fvd(generated, truth, detector_path=i3d)["mean"], rel=1e-9)
    assert bundle["metrics"]["fvd"]["prefix_lengths"] == list(range(10, full.n_frames + 1))
    assert bundle["suite"]["name"] == "crafter-af-v1-first2" and [i["id"] for i in bundle["items"]] == full.item_ids[:2]
    assert bundle["suite"]["sha256"] != full.sha256  # never ranked as the full suite
    # previews of the first items by default: generated | ground truth, enlarged, two text lines under each frame
    from worldmodels.data.video import read_video

    previews = sorted((out / "previews").glob("*.mp4"))
    assert [p.stem for p in previews] == sorted(full.item_ids[:2])
    assert read_video(previews[0]).shape == (full.n_frames, 246, 436, 3)

    # `score-videos` is a subcommand with its own options: the real frames of those 2 items, as mp4
    suite = first_items(full, 2)
    save_suite(suite, tmp_path / "suite")
    for item in suite:
        write_video(tmp_path / "videos" / f"{item.id}.mp4", item.ground_truth, fps=5)
    assert main(["eval", "score-videos", str(tmp_path / "videos"), "--suite", str(tmp_path / "suite"),
                 "--idm", "crafter-idm-heldout", "--out", str(tmp_path / "scored")]) == 0  # fmt: skip
    scored = json.loads((tmp_path / "scored" / "bundle.json").read_text())
    assert scored["model"]["name"] == "videos" and len(scored["items"]) == 2
    assert main(["eval", "score-videos", str(tmp_path / "videos"), "--suite", str(tmp_path / "suite")]) == 2
    assert "needs --idm, --out" in " ".join(capsys.readouterr().err.split())
