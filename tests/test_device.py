"""Where and how the model runs: device, precision and autocast, pixel normalisation, batch size, workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitsearch.device import (
    Normalise,
    autocast,
    choose_device,
    choose_precision,
    default_batch_size,
    default_workers,
)
from vitsearch.preprocess import Preprocessing


def test_precision_choice(monkeypatch):
    assert choose_device("cpu") == "cpu"
    assert choose_precision("cpu", "fp32") == "fp32"
    monkeypatch.setattr("vitsearch.device.cpu_supports_bf16", lambda: True)
    assert choose_precision("cpu") == "bf16"
    monkeypatch.setattr("vitsearch.device.cpu_supports_bf16", lambda: False)
    assert choose_precision("cpu") == "fp32"


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_autocast_follows_the_precision_name(precision, dtype):
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast("cpu", precision):
        assert (a @ b).dtype == dtype
    assert (a @ b).dtype == torch.float32  # only inside


def test_autocast_of_fp16_is_torch_autocast_to_fp16():
    context = autocast("cpu", "fp16")
    assert isinstance(context, torch.autocast) and context.fast_dtype == torch.float16


def test_normalise_does_what_the_image_processor_does():
    prep = Preprocessing.from_config({"image_processor_type": "CLIPImageProcessor"})
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)
    want = np.stack([prep.normalise_numpy(p) for p in pixels])
    got = Normalise.of(prep)(torch.from_numpy(pixels).float())
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5, rtol=0)
    # without a scale the input is taken as already rescaled ([0, 1] training views)
    unit = torch.from_numpy(pixels).float() / 255
    np.testing.assert_allclose(Normalise(prep.mean, prep.std)(unit).numpy(), want, atol=1e-5, rtol=0)


def test_normalise_moves_with_its_model_and_is_not_saved():
    model = torch.nn.Sequential(Normalise([0.5] * 3, [0.25] * 3, 1 / 255)).to(torch.float64)
    assert model.state_dict() == {}
    assert model[0].mean.dtype == torch.float64
    out = model(torch.full((1, 3, 1, 1), 255.0, dtype=torch.float64))
    torch.testing.assert_close(out, torch.full((1, 3, 1, 1), 2.0, dtype=torch.float64))


def test_defaults_follow_the_device_and_share_cores_between_torchrun_ranks(monkeypatch):
    assert (default_batch_size("cpu"), default_batch_size("cuda")) == (32, 256)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr("vitsearch.device.os.cpu_count", lambda: 2)
    assert (default_workers("cpu"), default_workers("cuda")) == (1, 1)
    monkeypatch.setattr("vitsearch.device.os.cpu_count", lambda: 64)
    assert (default_workers("cpu"), default_workers("cuda")) == (4, 16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # 8 ranks on one 64-core machine: 8 cores each
    assert (default_workers("cpu"), default_workers("cuda")) == (4, 7)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    assert default_workers("cpu") == 0
    monkeypatch.setattr("vitsearch.device.os.cpu_count", lambda: None)  # unknown: no workers
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert default_workers("cpu") == 0


def test_embedding_and_training_take_the_same_default_workers(tiny_models, tmp_path, monkeypatch):
    from helpers import labelled_folder

    from vitsearch.data import read_images
    from vitsearch.embed import Encoder
    from vitsearch.options import TrainOptions
    from vitsearch.training import _Run

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr("vitsearch.device.os.cpu_count", lambda: 3)
    assert default_workers("cpu") == 2
    encoder = Encoder(str(tiny_models["vit"]), device="cpu", lazy=True)
    data = read_images(labelled_folder(tmp_path / "data", per_class=2))
    run = _Run(data, tmp_path / "out", TrainOptions(base=str(tiny_models["vit"]), device="cpu"), None)
    assert encoder.num_workers == run._loader([[0, 1]]).num_workers == 2
