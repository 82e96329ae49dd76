"""kNN tagging: the weighted vote, tagging new and indexed images, writing labels back."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from click.testing import CliRunner
from helpers import SAMPLES
from PIL import Image

from vitsearch import VisualSearch
from vitsearch.cli import main
from vitsearch.errors import VitsearchError
from vitsearch.tagging import vote

NAMES = ("chelsea", "coffee", "astronaut", "rocket", "horse")


def test_vote_weights_neighbours_by_similarity():
    w = lambda score: math.exp(score / 0.07)
    rows = [{"score": 0.80, "label": "cat"}, {"score": 0.78, "label": "dog"}, {"score": 0.77, "label": "dog"}]
    label, confidence, votes = vote(rows, "label")
    dog, cat = w(0.78) + w(0.77), w(0.80)
    assert label == "dog" and confidence == pytest.approx(dog / (dog + cat))
    assert votes["cat"] / votes["dog"] == pytest.approx(cat / dog)
    assert vote(rows, "label", min_confidence=0.6)[0] is None  # dog's share is 0.58
    close = [{"score": 0.95, "label": "cat"}, {"score": 0.80, "label": "dog"}, {"score": 0.80, "label": "dog"}]
    assert vote(close, "label")[0] == "cat"  # one much nearer neighbour outweighs two farther ones
    assert vote([], "label") == (None, 0.0, {})


@pytest.fixture
def library(tmp_path, cli_encoder, monkeypatch):
    """Five labelled photos, their ten close copies unlabelled, in one Lite store."""
    monkeypatch.setenv("VITSEARCH_URI", str(tmp_path / "s.db"))
    folder = tmp_path / "lib"
    (folder / "copies").mkdir(parents=True)
    meta = {}
    for name in NAMES:
        shutil.copy(SAMPLES / "photos" / f"{name}.jpg", folder / f"{name}.jpg")
        meta[str(folder / f"{name}.jpg")] = {"label": name}
        for kind, ext in (("mirror", "jpg"), ("small_bright", "png")):
            shutil.copy(SAMPLES / "near_duplicates" / f"{name}_{kind}.{ext}", folder / "copies")
    with VisualSearch(encoder=cli_encoder) as vs:
        vs.index(folder, metadata=meta)
    return folder


def test_new_images_get_their_neighbours_label(library, bundled_encoder):
    copies = sorted((library / "copies").iterdir())
    with VisualSearch(encoder=bundled_encoder) as vs:
        tags = vs.tag([str(p) for p in copies], k=1)
        assert [t.label for t in tags] == [p.name.split("_")[0] for p in copies]
        assert all(t.confidence == 1.0 and len(t.neighbours) == 1 for t in tags)
        own = vs.tag(str(library / "chelsea.jpg"), k=1)[0]  # an indexed image never votes for itself
        assert own.neighbours[0].path != str(library / "chelsea.jpg")
        cat, cup = Image.open(library / "chelsea.jpg").convert("RGB"), Image.open(library / "coffee.jpg").convert("RGB")
        blend = Image.blend(cat, cup.resize(cat.size), 0.5)  # half one labelled photo, half another
        unsure = vs.tag(blend, k=5, min_confidence=1.0)[0]  # every other labelled photo votes a little
        assert unsure.label is None and 0 < unsure.confidence < 1.0
        with pytest.raises(VitsearchError, match="not a usable field name"):
            vs.tag(str(copies[0]), field="no such")


def test_write_fills_missing_labels_only(library, bundled_encoder):
    with VisualSearch(encoder=bundled_encoder) as vs:
        tags = vs.tag_missing(k=1)
        assert len(tags) == 10 and all(t.written for t in tags)
        assert all(t.label == t.query.rsplit("/", 1)[1].split("_")[0] for t in tags)
        assert vs.tag_missing(k=1) == []  # nothing is missing any more
        hits = vs.query(str(library / "copies" / "horse_mirror.jpg"), k=1, filter='label == "horse"')
        assert hits[0].path.endswith("horse_mirror.jpg")
        again = vs.tag(str(library / "chelsea.jpg"), k=1, write=True)[0]
        assert not again.written  # it has a label already: kept
        assert vs.query(str(library / "chelsea.jpg"), k=1)[0].metadata["label"] == "chelsea"


def test_tag_from_the_command_line(library):
    image = library / "copies" / "rocket_mirror.jpg"
    result = CliRunner().invoke(main, ["tag", str(image), "-k", "1", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["query"] == str(image) and record["label"] == "rocket" and record["confidence"] == 1.0
    human = CliRunner().invoke(main, ["tag", str(image), "-k", "1"])
    assert human.stdout.strip().endswith("rocket\t1.00")
    written = CliRunner().invoke(main, ["tag", "--missing", "--write", "-k", "1"])
    assert written.exit_code == 0 and "wrote 10 labels" in written.stderr
    bare = CliRunner().invoke(main, ["tag"])
    assert bare.exit_code == 2 and "--missing" in bare.stderr
