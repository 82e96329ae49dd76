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
from vitsearch.tagging import Tag, vote

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
    shares = Tag("q", "cat", 0.75, {"cat": 3e-7, "dog": 1e-7}).as_dict()["votes"]
    assert shares == {"cat": 0.75, "dog": 0.25}  # shares, not weights too small to print
    assert Tag("q", None, 0.0, {}).as_dict()["votes"] == {}


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
    assert record["votes"] == {"rocket": 1.0}  # shares of the vote
    human = CliRunner().invoke(main, ["tag", str(image), "-k", "1"])
    assert human.stdout.strip().endswith("rocket\t1.00")
    written = CliRunner().invoke(main, ["tag", "--missing", "--write", "-k", "1"])
    assert written.exit_code == 0 and "wrote 10 labels" in written.stderr
    bare = CliRunner().invoke(main, ["tag"])
    assert bare.exit_code == 2 and "--missing" in bare.stderr


def test_min_score_keeps_close_hits_only_and_leaves_the_unlike_untagged(library, bundled_encoder):
    query = str(library / "copies" / "chelsea_mirror.jpg")
    with VisualSearch(encoder=bundled_encoder) as vs:
        everything = vs.query(query, k=15)
        floor = (everything[2].score + everything[3].score) / 2  # the photo and its two copies are far closer
        close = vs.query(query, k=15, min_score=floor)
        assert [h.id for h in close] == [h.id for h in everything[:3]] and all(h.score >= floor for h in close)
        assert [h.id for h in vs.query(query, k=15, min_score=-1.0)] == [h.id for h in everything]
        grouped = vs.query(query, k=5, group_by="label", min_score=floor)
        assert len(grouped) <= 3 and all(h.score >= floor for h in grouped)
        unlike = Image.new("RGB", (64, 64), (20, 160, 40))  # a flat green square: like none of the photos
        nearest = vs.query(unlike, k=1)[0].score
        loose, strict = vs.tag([unlike, query], k=5), vs.tag([unlike, query], k=5, min_score=nearest + 0.01)
        assert loose[0].label is not None  # without a floor the least unlike photo names it
        assert strict[0].label is None and strict[0].votes == {} and strict[0].neighbours == []
        assert strict[1].label == "chelsea" and all(h.score >= nearest + 0.01 for h in strict[1].neighbours)
        for bad in (1.5, -2, float("nan"), "0.5", True):
            with pytest.raises(VitsearchError, match="min_score"):
                vs.query(query, min_score=bad)
            with pytest.raises(VitsearchError, match="min_score"):
                vs.tag_missing(min_score=bad)


def test_min_score_from_the_command_line(library, tmp_path):
    unlike = tmp_path / "green.png"
    Image.new("RGB", (64, 64), (20, 160, 40)).save(unlike)
    query = library / "copies" / "horse_mirror.jpg"
    loose = CliRunner().invoke(main, ["query", str(query), "-k", "15", "--json"])
    close = CliRunner().invoke(main, ["query", str(query), "-k", "15", "--min-score", "0.9", "--json"])
    assert loose.exit_code == 0 and close.exit_code == 0, close.output
    scores = [h["score"] for h in json.loads(loose.stdout)["results"]]
    assert [h["score"] for h in json.loads(close.stdout)["results"]] == [s for s in scores if s >= 0.9]
    none = CliRunner().invoke(main, ["query", str(unlike), "--min-score", "0.99"])
    assert none.exit_code == 0 and "(no results with a score of at least 0.99)" in none.stdout
    untagged = CliRunner().invoke(main, ["tag", str(unlike), "--min-score", "0.99"])
    assert untagged.exit_code == 0 and "no label: no image with 'label' scores at least 0.99" in untagged.stdout
    for command in ("query", "tag"):
        wrong = CliRunner().invoke(main, [command, str(query), "--min-score", "1.5"])
        assert wrong.exit_code == 2 and "--min-score" in wrong.stderr
