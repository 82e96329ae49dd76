"""Our PIL fast path must give the pixel values transformers' own image processors give."""

import numpy as np
import pytest
from helpers import photo
from transformers import AutoImageProcessor

from vitsearch.checkpoint import BUNDLED_DIR
from vitsearch.images import load_image
from vitsearch.preprocess import Preprocessing


@pytest.mark.parametrize("kind", ["bundled", "vit", "deit", "dinov2", "clip"])
@pytest.mark.parametrize("size", [(96, 72), (50, 130), (333, 333), (17, 9)])
def test_matches_the_transformers_image_processor(tiny_models, kind, size, tmp_path):
    folder = BUNDLED_DIR if kind == "bundled" else tiny_models[kind]
    import json

    prep = Preprocessing.from_config(json.loads((folder / "preprocessor_config.json").read_text()))
    reference = AutoImageProcessor.from_pretrained(folder)
    path = tmp_path / "p.png"
    photo(11, size).save(path)
    img = load_image(path)
    ours = prep.normalise_numpy(prep.to_uint8(img))
    theirs = reference(images=img, return_tensors="np")["pixel_values"][0]
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-5


def test_shortest_edge_rule_and_draft_size():
    prep = Preprocessing.from_config({"size": {"shortest_edge": 256}, "do_center_crop": True,
                                      "crop_size": {"height": 224, "width": 224}})
    assert prep.resized_shape(1000, 500) == (512, 256)
    assert prep.resized_shape(300, 301) == (256, 256)
    assert prep.input_size == (224, 224)
    assert prep.draft_size == (256, 256)
