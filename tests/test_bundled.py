"""What the bundled model promises (its model card in docs/models.md), pinned on the sample images."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from helpers import ROOT, SAMPLES
from PIL import Image

from vitsearch.checkpoint import BUNDLED_DIR, RECORD_FILE, load_spec
from vitsearch.images import load_image

CLIPART = ROOT / "tests" / "data" / "clipart"  # subjects held out of training (tests/data/README.md)


def _originals() -> list:
    return sorted(p for sub in ("photos", "emoji", "fashion") for p in (SAMPLES / sub).iterdir())


def _edit(path) -> Image.Image:
    """A mild edit: 90 % centre crop, then a JPEG at quality 40."""
    img = load_image(path)  # transparent emoji composited on white, as indexing does
    w, h = img.size
    dx, dy = round(w * 0.05), round(h * 0.05)
    buf = io.BytesIO()
    img.crop((dx, dy, w - dx, h - dy)).save(buf, "JPEG", quality=40)
    return Image.open(io.BytesIO(buf.getvalue()))


@pytest.fixture(scope="module")
def originals(bundled_encoder):
    paths = _originals()
    return paths, bundled_encoder.encode([str(p) for p in paths])


def test_it_is_the_model_vitsearch_trained():
    spec = load_spec(None)
    record = json.loads((BUNDLED_DIR / RECORD_FILE).read_text())
    assert spec.is_bundled and spec.dim == 384
    assert spec.preprocessing.input_size == (126, 126)  # its last stage trained at 126 px, as shipped
    assert record["trained_image_size"] == 126 and record["options"]["distill_bank"] > 0
    assert any(c.startswith("icons/") for c in record["classes"])
    assert record["options"]["teacher"].startswith("efficientnet-lite0-gem,")  # its last stage's GeM teacher
    assert record["options"]["instance_weight"] > 0 and record["loss"] == "normsoftmax"
    assert not any(c.startswith("clipart/" + subject) for c in record["classes"]
                   for subject in ("animals", "food", "plants", "transportation", "tools", "buildings"))
    size = sum(os.path.getsize(BUNDLED_DIR / f) for f in os.listdir(BUNDLED_DIR))
    assert size <= 50 * 2**20
    for name in ("README.md", "LICENSE", "config.json", "model.safetensors", "preprocessor_config.json"):
        assert (BUNDLED_DIR / name).is_file()


def test_embeddings_are_unit_length_and_repeatable(bundled_encoder, originals):
    _, vectors = originals
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    again = bundled_encoder.encode([str(p) for p in _originals()[:8]])
    assert np.allclose(again, vectors[:8], atol=1e-5)


def test_a_mild_edit_is_nearer_its_original_than_any_other_image(bundled_encoder, originals):
    paths, vectors = originals
    edited = bundled_encoder.encode([_edit(p) for p in paths])
    nearest = (edited @ vectors.T).argmax(1)
    assert (nearest == np.arange(len(paths))).mean() >= 0.97


def test_planted_near_duplicates_find_their_original(bundled_encoder, originals):
    paths, vectors = originals
    copies = sorted((SAMPLES / "near_duplicates").iterdir())
    found = (bundled_encoder.encode([str(p) for p in copies]) @ vectors.T).argmax(1)
    names = [paths[i].stem for i in found]
    assert names == [c.stem.rsplit("_", 1)[0].replace("_small", "") for c in copies]


def test_garments_of_a_kind_are_nearer_than_other_kinds(originals):
    paths, vectors = originals
    fashion = [i for i, p in enumerate(paths) if p.parent.name == "fashion"]
    kinds = np.array([paths[i].stem.rsplit("_", 1)[0] for i in fashion])
    sims = vectors[fashion] @ vectors[fashion].T
    np.fill_diagonal(sims, -np.inf)
    p_at_1 = (kinds[sims.argmax(1)] == kinds).mean()
    same = sims[(kinds[:, None] == kinds[None, :]) & np.isfinite(sims)].mean()
    other = sims[kinds[:, None] != kinds[None, :]].mean()
    assert p_at_1 >= 0.6 and same > other + 0.2, (p_at_1, same, other)  # chance: 2 of 29


def test_subjects_it_never_saw_cluster(bundled_encoder):
    """Clip art of six subjects held out of training: a picture's nearest neighbour is mostly of its subject."""
    paths = sorted(CLIPART.iterdir())
    subjects = np.array([p.name.split("__")[0] + "/" + p.name.split("__")[1] for p in paths])
    vectors = bundled_encoder.encode([str(p) for p in paths])
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    p_at_1 = (subjects[sims.argmax(1)] == subjects).mean()
    same = sims[(subjects[:, None] == subjects[None, :]) & np.isfinite(sims)].mean()
    other = sims[subjects[:, None] != subjects[None, :]].mean()
    assert p_at_1 >= 0.4 and same > other + 0.08, (p_at_1, same, other)  # chance: 4 of 29


def test_an_edited_clip_art_copy_finds_its_original(bundled_encoder, originals):
    """Copy detection: an edited copy of an unseen-subject picture, searched among every original."""
    paths, vectors = originals
    clip = sorted(CLIPART.iterdir())
    candidates = np.concatenate([vectors, bundled_encoder.encode([str(p) for p in clip])])
    found = (bundled_encoder.encode([_edit(p) for p in clip]) @ candidates.T).argmax(1)
    assert (found == np.arange(len(paths), len(paths) + len(clip))).mean() >= 0.95


# The earlier bundled models (name, fingerprint): the first (2026-11-22, before the clip art), the
# second (2026-12-02, stage 4, 112 px), the third (2026-12-02, stage 5 resampled to 126 px) and the
# fourth (2026-12-03, stage 6).
PREVIOUS_BUNDLED = (("vitsearch-vits14-112", "870620506b0f7cd6"), ("vitsearch-vits14-112", "300df3cbfb581411"),
                    ("vitsearch-vits14-126", "7c4ef2c5e7df2ad8"), ("vitsearch-vits14-126", "d3dfb18f35db220e"))


@pytest.mark.parametrize("name, previous", PREVIOUS_BUNDLED)
def test_a_store_of_a_previous_bundled_model_is_told_to_reindex(lite_uri, photos, bundled_encoder, name, previous):
    from click.testing import CliRunner

    from vitsearch.api import VisualSearch
    from vitsearch.cli import main
    from vitsearch.store import Store

    assert load_spec(None).fingerprint != previous
    store = Store(lite_uri)
    store.create({"model": name, "fingerprint": previous, "dim": 384, "bundled": True,
                  "vitsearch": "0.1.0"})
    store.close()
    result = CliRunner().invoke(main, ["query", str(photos / "coffee.jpg"), "--uri", lite_uri])
    assert result.exit_code != 0 and "earlier bundled model" in result.output and "--reindex" in result.output
    assert "Traceback" not in result.output
    with VisualSearch(lite_uri, encoder=bundled_encoder) as vs:
        assert vs.index(photos, reindex=True).added == 7
        assert vs.info()["fingerprint"] == load_spec(None).fingerprint
