import numpy as np
import pytest
import torch
from helpers import photo, tiny_model

from vitsearch import __version__, checkpoint
from vitsearch.checkpoint import BUNDLED_DIR, load_spec, read_record
from vitsearch.embed import Encoder
from vitsearch.errors import ModelError
from vitsearch.model import load_backbone, save_model

SAVED_FAMILIES = ["vit", "deit", "dinov2", "dinov2_registers", "dinov2_swiglu", "clip"]


def test_bundled_spec_is_read_without_loading_weights():
    spec = load_spec()
    assert spec.is_bundled and spec.dim == 384 and spec.model_type == "dinov2"
    assert spec.name == str(BUNDLED_DIR)
    assert spec.fingerprint == load_spec("bundled").fingerprint
    assert len(spec.fingerprint) == 16


@pytest.mark.parametrize("kind", ["vit", "deit", "dinov2", "clip"])
def test_backbone_returns_the_final_normalised_cls_token(tiny_models, kind):
    import transformers

    spec = load_spec(str(tiny_models[kind]))
    assert spec.dim == 32
    backbone = load_backbone(spec)
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        ours = backbone(x).numpy()
        if kind == "clip":
            ref = transformers.CLIPVisionModel.from_pretrained(spec.path)(pixel_values=x).pooler_output
        else:
            ref = transformers.AutoModel.from_pretrained(spec.path)(pixel_values=x).last_hidden_state[:, 0]
    ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_fingerprint_changes_with_the_weights(tiny_models, tmp_path):
    import shutil

    import transformers

    copy = tmp_path / "copy"
    shutil.copytree(tiny_models["vit"], copy)
    assert load_spec(str(copy)).fingerprint == load_spec(str(tiny_models["vit"])).fingerprint
    model = transformers.AutoModel.from_pretrained(copy)
    with torch.no_grad():
        model.embeddings.cls_token += 1
    model.save_pretrained(copy)
    assert load_spec(str(copy)).fingerprint != load_spec(str(tiny_models["vit"])).fingerprint


def test_hub_ids_resolve_through_the_hub_snapshot(tiny_models, monkeypatch):
    calls = []

    def fake_snapshot(repo_id, allow_patterns, local_files_only):
        calls.append((repo_id, local_files_only))
        return str(tiny_models["dinov2"])

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot)
    spec = load_spec("facebook/dinov2-small")
    assert spec.name == "facebook/dinov2-small" and spec.path == str(tiny_models["dinov2"])
    assert calls == [("facebook/dinov2-small", True)]  # the cache is tried first


def test_unknown_hub_id_offline_is_a_clear_error():
    with pytest.raises(ModelError, match="cannot find model 'nobody/no-such-model'"):
        load_spec("nobody/no-such-model")


@pytest.mark.parametrize("bad, words", [("./missing-dir", "not a directory"), ("/tmp", "config.json")])
def test_bad_local_models(bad, words):
    with pytest.raises(ModelError, match=words):
        load_spec(bad)


def test_models_without_cls_token_are_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "siglip_vision_model", "hidden_size": 8}')
    with pytest.raises(ModelError, match="no CLS token"):
        load_spec(str(tmp_path))


def test_family_presets_are_data():
    assert checkpoint.FAMILIES["clip"]["output"] == "pooler_output"


@pytest.fixture(scope="module")
def families(tiny_models, tmp_path_factory):
    """A tiny model of every family the loader reads (CLIP's vision tower through transformers)."""
    base = tmp_path_factory.mktemp("families")
    return {**tiny_models, **{kind: tiny_model(base / kind, kind) for kind in ("dinov2_registers", "dinov2_swiglu")}}


@pytest.mark.parametrize("kind", SAVED_FAMILIES)
def test_a_saved_model_loads_back_as_it_was(families, kind, tmp_path):
    spec = load_spec(str(families[kind]))
    backbone = load_backbone(spec)
    generator = torch.Generator().manual_seed(SAVED_FAMILIES.index(kind))
    with torch.no_grad():  # every weight scrambled: initial zeros and ones would hide a weight saved in the wrong place
        for param in backbone.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.2)
    (tmp_path / "LICENSE.txt").write_text("licence text")
    out = tmp_path / "saved"
    saved = save_model(backbone, out, spec.preprocessing, record={"base": "tiny"}, licence=tmp_path / "LICENSE.txt")

    assert saved == load_spec(str(out))
    assert (saved.model_type, saved.dim, saved.preprocessing) == (spec.model_type, spec.dim, spec.preprocessing)
    assert read_record(out) == {"vitsearch_version": __version__, "base": "tiny"}
    assert (out / "LICENSE").read_text() == "licence text"
    images = [photo(i, (48, 40)) for i in range(3)]
    before = Encoder.wrap(backbone, spec, device="cpu", precision="fp32", num_workers=0).encode(images)
    after = Encoder(saved, device="cpu", precision="fp32", num_workers=0).encode(images)
    np.testing.assert_allclose(after, before, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["dinov2", "clip"])  # the built-in core, and transformers
def test_a_model_saved_in_half_precision_says_so(families, kind, tmp_path):
    import json

    from safetensors.torch import load_file

    spec = load_spec(str(families[kind]))
    backbone = load_backbone(spec)
    saved = save_model(backbone, tmp_path / "half", spec.preprocessing, dtype=torch.float16)
    assert json.loads((tmp_path / "half" / "config.json").read_text())["dtype"] == "float16"
    assert {v.dtype for v in load_file(tmp_path / "half" / "model.safetensors").values()} == {torch.float16}
    images = [photo(i, (48, 40)) for i in range(3)]
    before = Encoder.wrap(backbone, spec, device="cpu", precision="fp32", num_workers=0).encode(images)
    after = Encoder(saved, device="cpu", precision="fp32", num_workers=0).encode(images)
    np.testing.assert_allclose(after, before, atol=2e-2, rtol=0)
