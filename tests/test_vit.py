"""vitsearch's own ViT core against transformers, the reference: same CLS token, same files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import SAMPLES, labelled_folder, tiny_model
from safetensors.torch import load_file, save_file

from vitsearch import vit
from vitsearch.checkpoint import load_spec
from vitsearch.errors import ModelError
from vitsearch.model import VitBackbone, load_backbone, resize_backbone, save_backbone

FAMILIES = ["vit", "deit", "dinov2", "dinov2_registers", "dinov2_swiglu"]
SIZES = [(32, 32), (48, 48), (24, 24), (40, 56)]  # the native 4x4 grid, larger, smaller, not square (patch 8)


def _reference(path, **kwargs):
    import transformers

    loaded = transformers.AutoModel.from_pretrained(path, dtype=torch.float32, **kwargs)
    return (loaded[0].eval(), loaded[1]) if isinstance(loaded, tuple) else loaded.eval()


def _ref_cls(model, x: torch.Tensor) -> torch.Tensor:
    kwargs = {} if "Dinov2" in type(model).__name__ else {"interpolate_pos_encoding": True}
    return model(pixel_values=x, **kwargs).last_hidden_state[:, 0]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random models saved by transformers, every weight scrambled: transformers initialises
    biases to 0 and LayerScale and LayerNorm to 1, which would hide a weight read wrongly."""
    base = tmp_path_factory.mktemp("vit-models")
    out = {}
    for kind in FAMILIES:
        path = tiny_model(base / kind, kind)
        model = _reference(path)
        generator = torch.Generator().manual_seed(FAMILIES.index(kind))
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn(param.shape, generator=generator) * 0.2)
        model.save_pretrained(path)
        out[kind] = path
    return out


@pytest.mark.parametrize("kind", FAMILIES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_cls_token_equals_transformers(models, kind, size):
    """Built for the input size (position table resampled once at load) = transformers resampling per call."""
    reference = _reference(models[kind])
    core = vit.from_pretrained(models[kind], image_size=size)
    x = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = reference(pixel_values=x, **({} if "Dinov2" in type(reference).__name__ else {"interpolate_pos_encoding": True}))
        got = core(x)
        tokens = core.forward_tokens(x)
    assert got.shape == (3, 32) and got.abs().max() > 0.1
    torch.testing.assert_close(got, want.last_hidden_state[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(tokens, want.last_hidden_state, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["deit", "dinov2_registers"])
def test_the_last_block_for_cls_alone_gives_the_same_gradients(models, kind):
    """forward() runs the last block for the CLS token alone; training backpropagates through it,
    so its gradients must be those of every token going through that block."""
    shortcut = vit.from_pretrained(models[kind]).train()
    whole = vit.from_pretrained(models[kind]).train()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    shortcut(x).square().sum().backward()
    whole.forward_tokens(x)[:, 0].square().sum().backward()
    grads = {name: p.grad for name, p in whole.named_parameters()}
    for name, param in shortcut.named_parameters():
        assert param.grad is not None and grads[name] is not None, name
        torch.testing.assert_close(param.grad, grads[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("kind", ["vit", "dinov2", "dinov2_registers"])
def test_another_input_size_is_resampled_on_the_fly_alike(models, kind):
    core = vit.from_pretrained(models[kind])  # native 32 px
    at_48 = vit.from_pretrained(models[kind], image_size=48)
    x = torch.randn(2, 3, 48, 48)
    with torch.inference_mode():
        torch.testing.assert_close(core(x), at_48(x), atol=1e-6, rtol=0)
        torch.testing.assert_close(vit.resized(core, 48)(x), at_48(x), atol=1e-6, rtol=0)


def test_the_bundled_model_gives_the_vectors_transformers_gives():
    """Same vectors as before the core (so existing stores stay valid), on the sample images, at 4 sizes."""
    spec = load_spec(None)
    assert spec.fingerprint == "11504d11e9deebcb"  # the fifth bundled model (2026-12-03); see test_bundled.py
    backbone = load_backbone(spec)
    assert backbone.output == "core" and isinstance(backbone.model, vit.VisionTransformer)
    reference = _reference(spec.path)
    from vitsearch.images import load_image

    paths = sorted((SAMPLES / "photos").glob("*.jpg"))[:6] + sorted((SAMPLES / "fashion").glob("*.png"))[:4]
    pixels = np.stack([spec.preprocessing.to_uint8(load_image(p)) for p in paths])
    prep = spec.preprocessing
    x = (torch.from_numpy(pixels).float() * prep.rescale - torch.tensor(prep.mean).view(1, 3, 1, 1)) / torch.tensor(
        prep.std
    ).view(1, 3, 1, 1)
    with torch.inference_mode():
        torch.testing.assert_close(backbone(x), torch.nn.functional.normalize(_ref_cls(reference, x), dim=-1), atol=1e-5, rtol=0)
        for size in (84, 140, 224):  # 6x6, 10x10, 16x16 patches of 14 px
            y = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")
            core = vit.from_pretrained(spec.path, image_size=size)
            # raw CLS tokens, some entries above 3: summation order leaves about 3e-6 of them apart
            torch.testing.assert_close(core(y), _ref_cls(reference, y), atol=1e-5, rtol=1e-5)


def test_transformers_is_not_imported_to_embed():
    code = (
        "import sys; from vitsearch import Encoder; "
        "e = Encoder(device='cpu', num_workers=0); v = e.encode(sys.argv[1]); "
        "assert v.shape == (384,); print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(SAMPLES / "photos" / "coffee.jpg")],
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_other_families_load_with_transformers(tiny_models):
    backbone = load_backbone(load_spec(str(tiny_models["clip"])))
    assert backbone.output == "pooler_output" and not isinstance(backbone.model, vit.VisionTransformer)
    assert vit.read_config(tiny_models["clip"]) is None


# -- the key map: pure functions ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", FAMILIES)
def test_key_map_round_trips(models, kind):
    state = load_file(models[kind] / "model.safetensors")
    config = vit.read_config(models[kind])
    core, extra = vit.to_core(state, config)
    assert not any(k.startswith("encoder.") for k in core)  # every block weight was renamed
    back = {**extra, **vit.to_checkpoint(core, config)}
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


@pytest.mark.parametrize("name, expected", [
    ("embeddings.patch_embed.weight", ("embeddings.patch_embeddings.projection.weight",)),
    ("layers.3.attn.qkv.bias", tuple(f"encoder.layer.3.attention.attention.{p}.bias" for p in ("query", "key", "value"))),
    ("layers.0.mlp.fc1.weight", ("encoder.layer.0.intermediate.dense.weight",)),
    ("layers.11.norm2.bias", ("encoder.layer.11.layernorm_after.bias",)),
    ("norm.weight", ("layernorm.weight",)),
    ("embeddings.cls_token", ("embeddings.cls_token",)),
])
def test_checkpoint_keys_of_a_vit(name, expected):
    config = vit.parse_config({"model_type": "vit"})
    assert vit.checkpoint_keys(name, config) == expected


def test_dinov2_keys_and_defaults():
    config = vit.parse_config({"model_type": "dinov2", "hidden_size": 384, "num_attention_heads": 6})
    assert (config.patch_size, config.layer_norm_eps, config.mlp_size, config.layerscale_value) == (14, 1e-6, 1536, 1.0)
    assert vit.checkpoint_keys("layers.2.ls1.gamma", config) == ("encoder.layer.2.layer_scale1.lambda1",)
    giant = vit.parse_config({"model_type": "dinov2", "hidden_size": 1536, "num_attention_heads": 24, "use_swiglu_ffn": True})
    assert giant.mlp_size == 4096  # DINOv2-g: 2/3 of 4 x 1536, a multiple of 8
    assert vit.checkpoint_keys("layers.0.mlp.fc1.weight", giant) == ("encoder.layer.0.mlp.weights_in.weight",)


def test_task_models_load_their_tower(tmp_path, models):
    """ViTForImageClassification keeps the tower under ``vit.``; the classifier is dropped."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(models["vit"], num_labels=3)
    task = transformers.ViTForImageClassification(config)
    task.vit.load_state_dict(_reference(models["vit"]).state_dict(), strict=False)
    task.save_pretrained(tmp_path / "task")
    core = vit.from_pretrained(tmp_path / "task")
    assert not any(k.startswith("classifier") for k in core.extra)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(core(x), vit.from_pretrained(models["vit"])(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("how", ["bin", "sharded"])
def test_other_weight_layouts(tmp_path, models, how):
    model = _reference(models["dinov2"])
    if how == "bin":
        torch.save(load_file(models["dinov2"] / "model.safetensors"), tmp_path / "pytorch_model.bin")  # as 4.x wrote
        (tmp_path / "config.json").write_text((models["dinov2"] / "config.json").read_text())
    else:
        model.save_pretrained(tmp_path, max_shard_size="20KB")
        assert (tmp_path / "model.safetensors.index.json").is_file()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(vit.from_pretrained(tmp_path)(x), _ref_cls(model, x), atol=1e-5, rtol=0)


def _broken(path: Path, how: str) -> Path:
    state = load_file(path / "model.safetensors")
    if how == "missing":
        del state["encoder.layer.1.attention.attention.key.weight"]
        save_file(state, str(path / "model.safetensors"))
    elif how == "shape":
        state["layernorm.weight"] = torch.ones(7)
        save_file(state, str(path / "model.safetensors"))
    elif how == "damaged":
        (path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    elif how == "empty":
        (path / "model.safetensors").unlink()
    return path


@pytest.mark.parametrize("how, words", [
    ("missing", "lacks weights the image tower needs: encoder.layer.1.attention.attention.key.weight"),
    ("shape", "do not fit a vit"),
    ("damaged", "cannot read weights"),
    ("empty", r"no weights \(\*.safetensors or \*.bin\)"),
])
def test_bad_checkpoints_are_clear_errors(tmp_path, models, how, words):
    import shutil

    path = shutil.copytree(models["vit"], tmp_path / "m")
    with pytest.raises(ModelError, match=words):
        vit.from_pretrained(_broken(path, how))


@pytest.mark.parametrize("raw", [
    {"model_type": "clip_vision_model"},
    {"model_type": "beit"},
    {"model_type": "vit", "hidden_act": "some_new_act"},
    {"model_type": "vit", "hidden_size": 30, "num_attention_heads": 4},
    {"model_type": "vit", "patch_size": [16, 8]},
])
def test_what_the_core_does_not_implement_goes_to_transformers(raw):
    assert vit.parse_config(raw) is None


# -- save, resize, train ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_saved_models_load_in_transformers_whole(tmp_path, models, kind, dtype):
    backbone = resize_backbone(load_backbone(load_spec(str(models[kind]))), 48)
    save_backbone(backbone, str(tmp_path / "out"), dtype)
    reference, info = _reference(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["image_size"] == 48 and config["dtype"] == str(dtype).removeprefix("torch.")
    x = torch.randn(2, 3, 48, 48)
    with torch.inference_mode():
        want = torch.nn.functional.normalize(_ref_cls(reference, x), dim=-1)
        torch.testing.assert_close(backbone(x), want, atol=1e-5 if dtype == torch.float32 else 2e-2, rtol=0)


def test_a_vit_with_pooler_keeps_it_when_saved(tmp_path):
    import transformers

    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                    image_size=32, patch_size=8)
    transformers.ViTModel(config).save_pretrained(tmp_path / "in")  # with its (unused) pooler
    core = vit.from_pretrained(tmp_path / "in")
    assert set(core.extra) == {"pooler.dense.weight", "pooler.dense.bias"}
    save_backbone(VitBackbone(core, "core"), str(tmp_path / "out"))
    assert load_file(tmp_path / "out" / "model.safetensors").keys() == load_file(tmp_path / "in" / "model.safetensors").keys()


def test_resizing_keeps_trainability_and_leaves_the_original_alone(models):
    core = vit.from_pretrained(models["deit"]).train()
    core.embeddings.cls_token.requires_grad_(False)
    before = core.embeddings.position_embeddings.detach().clone()
    bigger = vit.resized(core, 48)
    assert bigger.training and bigger.config.image_size == 48 and bigger.config.grid == (6, 6)
    assert bigger.embeddings.position_embeddings.shape == (1, 2 + 36, 32)
    assert not bigger.embeddings.cls_token.requires_grad and bigger.embeddings.position_embeddings.requires_grad
    with torch.no_grad():
        bigger.embeddings.position_embeddings.add_(1)
    assert torch.equal(core.embeddings.position_embeddings, before)


def test_training_mode_without_dropout_equals_eval(models):
    core = vit.from_pretrained(models["dinov2"])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = core(x)
        torch.testing.assert_close(core.train()(x), want)


def test_drop_path_and_dropout_act_only_while_training(models):
    config = vit.read_config(models["vit"])
    noisy = vit.build(
        vit.parse_config({**config.raw, "drop_path_rate": 0.5, "hidden_dropout_prob": 0.3}),
        {k: v.clone() for k, v in vit.from_pretrained(models["vit"]).state_dict().items()},
    )
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(noisy(x), noisy(x))
        noisy.train()
        torch.manual_seed(0)
        assert not torch.equal(noisy(x), noisy(x))


def test_vitsearch_train_writes_a_folder_transformers_loads(tmp_path, tiny_models):
    from vitsearch.cli import main

    data = labelled_folder(tmp_path / "data", per_class=4)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(out), "--base", str(tiny_models["dinov2"]),
                                       "--epochs", "1", "--batch-size", "4", "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    reference, info = _reference(out, output_loading_info=True)
    assert type(reference).__name__ == "Dinov2Model"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    spec = load_spec(str(out))
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(load_backbone(spec).cls_token(x), _ref_cls(reference, x), atol=1e-5, rtol=0)


def test_scratch_models_are_cores_saved_as_vit(tmp_path):
    from vitsearch.model import scratch_backbone

    torch.manual_seed(0)
    backbone = scratch_backbone("tiny", 32, 16)
    assert isinstance(backbone.model, vit.VisionTransformer) and backbone.model.config.hidden_size == 192
    save_backbone(backbone, str(tmp_path / "s"))
    reference, info = _reference(tmp_path / "s", output_loading_info=True)
    assert type(reference).__name__ == "ViTModel" and not set(info["missing_keys"]) - {"pooler.dense.weight", "pooler.dense.bias"}
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(backbone.cls_token(x), _ref_cls(reference, x), atol=1e-5, rtol=0)


def test_weights_are_assigned_in_float32_whatever_the_file_holds(tmp_path, models):
    """The core is built without memory and the checkpoint's tensors assigned (fp16 files come up as fp32)."""
    save_backbone(load_backbone(load_spec(str(models["dinov2"]))), str(tmp_path / "half"), torch.float16)
    core = vit.from_pretrained(tmp_path / "half")
    assert all(not p.is_meta and p.dtype == torch.float32 for p in core.state_dict().values())
    assert all(v.dtype == torch.float16 for v in load_file(tmp_path / "half" / "model.safetensors").values())
