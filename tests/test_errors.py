"""Library errors name settings in the library's words; the command line names flags."""

import pytest
import torch

from pyro_vae import VAE, TrainConfig, fit
from pyro_vae.cli import build_parser, flag_names, main
from pyro_vae.errors import TrainingDiverged, UsageError


def test_a_message_names_its_settings_as_a_python_user_passes_them():
    err = UsageError("use {batch_size} 4 or less, not {lr}", settings=("batch_size",))
    assert str(err) == "use batch_size 4 or less, not {lr}"  # only declared settings
    assert err.worded({"batch_size": "--batch-size"}) == "use --batch-size 4 or less, not {lr}"
    assert isinstance(err, ValueError)
    diverged = TrainingDiverged("try a smaller {lr}", settings=("lr",))
    assert str(diverged) == "try a smaller lr" and isinstance(diverged, RuntimeError)


def test_fit_speaks_in_settings(toy_binary):
    train, _ = toy_binary
    with pytest.raises(UsageError) as caught:
        fit(VAE(train.shape[1], z_dim=2), train, config=TrainConfig(batch_size=10**6))
    message = str(caught.value)
    assert f"use batch_size {len(train)} or less" in message and "--" not in message


def test_the_command_line_maps_settings_to_its_flags(capsys, tmp_path):
    flags = flag_names(build_parser(), "train")
    assert flags["batch_size"] == "--batch-size" and flags["kl_warmup"] == "--kl-warmup"
    assert flag_names(build_parser(), "sample")["device"] == "--device"
    out = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--epochs", "1", "--no-progress", "--out", str(out)]
    assert main([*args, "--batch-size", "100000"]) == 2
    err = capsys.readouterr().err
    assert "pyro-vae: error: --batch-size 100000 is larger than the training split" in err
    assert "use --batch-size 1438 or less" in err and "batch_size" not in err


def test_the_device_error_names_the_flag_on_the_command_line_only(capsys, tmp_path):
    from pyro_vae.devices import resolve_device

    with pytest.raises(UsageError, match="unsupported device 'mps'; use cpu, cuda or cuda:N"):
        resolve_device("mps")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match=r"^device cuda: CUDA is not.*use device cpu"):
            resolve_device("cuda")
        args = ["train", "--dataset", "digits", "--out", str(tmp_path / "r")]
        assert main([*args, "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert "--device cuda: CUDA is not available on this machine; use --device cpu" in err
