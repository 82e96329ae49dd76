"""Position-embedding resampling (a pure function) and resizing whole models to a new resolution."""

from __future__ import annotations

import pytest
import torch

from vitsearch.checkpoint import load_spec
from vitsearch.model import load_backbone, resize_backbone
from vitsearch.surgery import resample_position_embeddings, resize_position_embeddings


def test_same_grid_is_an_unchanged_copy():
    pos = torch.randn(1, 1 + 16, 8)
    out = resample_position_embeddings(pos, (4, 4))
    assert torch.equal(out, pos) and out is not pos


@pytest.mark.parametrize("prefix", [1, 2])
def test_grid_is_resampled_and_prefix_tokens_kept(prefix):
    pos = torch.randn(1, prefix + 16, 8)
    out = resample_position_embeddings(pos, (8, 6), num_prefix=prefix)
    assert out.shape == (1, prefix + 48, 8)
    assert torch.isfinite(out).all()
    assert torch.equal(out[:, :prefix], pos[:, :prefix])


def test_bicubic_resampling_keeps_a_smooth_table_smooth():
    ramp = torch.linspace(-1, 1, 4)
    grid = (ramp[:, None] + 2 * ramp[None, :]).reshape(1, 16, 1)  # a plane over the 4x4 grid
    pos = torch.cat([torch.full((1, 1, 1), 7.0), grid], dim=1)
    out = resample_position_embeddings(pos, (8, 8))[0, 1:, 0].reshape(8, 8)
    assert (out.diff(dim=0) > 0).all() and (out.diff(dim=1) > 0).all()  # still rising along both axes
    assert float(out.abs().max()) < 3.3  # bicubic overshoots the plane's range (±3) only slightly


def test_two_dimensional_tables_as_in_clip():
    pos = torch.randn(1 + 9, 4)
    out = resample_position_embeddings(pos, (5, 5))
    assert out.shape == (26, 4) and torch.equal(out[0], pos[0])


def test_a_table_that_is_not_a_grid_is_refused():
    with pytest.raises(ValueError, match="not a 4x4 grid"):
        resample_position_embeddings(torch.randn(1, 20, 4), (2, 2), num_prefix=1, old_grid=(4, 4))


def test_state_dict_surgery_touches_only_position_tables():
    state = {"embeddings.position_embeddings": torch.randn(1, 5, 4), "encoder.w": torch.randn(3, 3)}
    out = resize_position_embeddings(state, 2, 3)
    assert out["embeddings.position_embeddings"].shape == (1, 10, 4)
    assert out["encoder.w"] is state["encoder.w"]
    assert state["embeddings.position_embeddings"].shape == (1, 5, 4)  # the input is left alone
    with pytest.raises(ValueError, match="no learned position"):
        resize_position_embeddings({"w": torch.randn(2)}, 2, 3)


@pytest.mark.parametrize("kind", ["vit", "deit", "dinov2", "clip"])
def test_resized_models_run_at_the_new_size(tiny_models, kind):
    backbone = load_backbone(load_spec(str(tiny_models[kind])))
    resized = resize_backbone(backbone, 48)  # patch 8: a 4x4 grid becomes 6x6
    out = resized(torch.randn(3, 3, 48, 48))
    assert out.shape == (3, 32) and torch.isfinite(out).all()
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    config = getattr(resized.model.config, "vision_config", None) or resized.model.config
    assert config.image_size == 48
    assert resize_backbone(backbone, 32) is backbone  # nothing to do at the native size


def test_dinov2_resized_once_equals_its_own_on_the_fly_interpolation(tiny_models):
    backbone = load_backbone(load_spec(str(tiny_models["dinov2"])))
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        expected = backbone(x)  # DINOv2 interpolates its 4x4 table to 6x6 at run time, bicubic
        got = resize_backbone(backbone, 48)(x)
    assert torch.allclose(got, expected, atol=1e-5)


def test_sizes_that_do_not_fit_the_patches_are_refused(tiny_models):
    backbone = load_backbone(load_spec(str(tiny_models["vit"])))
    with pytest.raises(ValueError, match="multiple of the patch size 8"):
        resize_backbone(backbone, 50)
