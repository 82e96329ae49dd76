"""`index --reindex`: every image embedded again into a new collection that replaces the old one when
the run is complete; the metadata stored with the images (labels written by `tag`, fields given
once) is kept, and a reindex that is stopped loses nothing and goes on where it stopped."""

import uuid

import pytest
from photofiles import save_photo

from vitsearch import VisualSearch
from vitsearch.api import STAGING
from vitsearch.store import Store


class CountingEncoder:
    """The real encoder, counting the files it embeds; ``stop_after`` files, it raises KeyboardInterrupt."""

    def __init__(self, inner, stop_after=None):
        self.inner, self.embedded, self.stop_after = inner, 0, stop_after

    def encode_files(self, paths, **kwargs):
        for result in self.inner.encode_files(paths, **kwargs):
            if self.stop_after is not None and self.embedded >= self.stop_after:
                raise KeyboardInterrupt
            self.embedded += 1
            yield result

    def __getattr__(self, name):
        return getattr(self.inner, name)


def fields(store: Store, *names) -> dict[str, tuple]:
    return {row["path"]: tuple(row.get(n) for n in names) for row in store.iter_rows(fields=["path", *names])}


@pytest.fixture
def labelled(lite_uri, photos, bundled_encoder):
    """The photos indexed, one with EXIF, with a price given once and labels written by tag."""
    from helpers import photo

    save_photo(photos / "sub" / "exif.jpg", photo(3), "JPEG", make="Canon", model="EOS R6")
    with VisualSearch(lite_uri, encoder=bundled_encoder) as vs:
        vs.index(photos, metadata={str(photos / "chelsea.jpg"): {"label": "cat", "price": 12.5},
                                   str(photos / "coffee.jpg"): {"label": "drink"}})
        written = vs.tag_missing(field="label", k=2, write=True)
        assert len([t for t in written if t.label]) == 6
        before = fields(vs.store, "label", "price", "camera_make")
    return before


def test_a_reindex_keeps_the_metadata_and_labels_stored_with_the_images(lite_uri, photos, labelled, bundled_encoder):
    counting = CountingEncoder(bundled_encoder)
    with VisualSearch(lite_uri, encoder=counting) as vs:
        summary = vs.index(photos, reindex=True, metadata={str(photos / "coffee.jpg"): {"label": "coffee"}})
        assert (summary.added, summary.removed, summary.metadata_unmatched) == (8, 0, 0)
        assert counting.embedded == 8  # every image again
        after = fields(vs.store, "label", "price", "camera_make")
        assert after == {**labelled, str(photos / "coffee.jpg"): ("coffee", None, None)}  # given now: wins
        assert not vs.store.sibling("images" + STAGING).exists()
        assert vs.query(photos / "chelsea.jpg", k=1, filter='label == "cat"')[0].path == str(photos / "chelsea.jpg")


def test_a_stopped_reindex_leaves_the_collection_as_it_was_and_the_next_one_goes_on(lite_uri, photos, labelled,
                                                                                   bundled_encoder, tiny_models):
    model = str(tiny_models["vit"])
    with VisualSearch(lite_uri, model=model, device="cpu") as vs:
        tiny = vs.encoder
    stopping = CountingEncoder(tiny, stop_after=3)
    with VisualSearch(lite_uri, encoder=stopping) as vs:
        with pytest.raises(KeyboardInterrupt):
            vs.index(photos, reindex=True)
        # the old collection still answers, with its model and rows; the new one holds what was embedded
        assert vs.store.collection == "images" and vs.info()["dimension"] == 384 and vs.count() == 8
        assert fields(vs.store, "label", "price", "camera_make") == labelled
        assert 0 < vs.store.sibling("images" + STAGING).count() < 8
    with VisualSearch(lite_uri, device="cpu") as vs:  # not yet replaced: the bundled model's collection
        assert vs.query(photos / "coffee.jpg", k=1)[0].path == str(photos / "coffee.jpg")
    going_on = CountingEncoder(tiny)
    with VisualSearch(lite_uri, encoder=going_on) as vs:
        summary = vs.index(photos, reindex=True)
        assert going_on.embedded == 8 - 3 and summary.unchanged >= 3  # what was embedded is not again
        assert vs.info()["dimension"] == 32 and vs.count() == 8
        assert fields(vs.store, "label", "price", "camera_make") == labelled
    with VisualSearch(lite_uri, device="cpu") as vs:  # the collection's model is now the tiny one
        assert vs.spec.name == model


def test_a_reindex_counts_the_rows_it_drops_and_discards_what_another_model_left(lite_uri, photos, labelled,
                                                                                  bundled_encoder, tiny_models):
    # a reindex with another model, stopped, then one with the collection's own model: the first one's
    # rows (other vectors) must not be taken for this one's
    with VisualSearch(lite_uri, model=str(tiny_models["vit"]), device="cpu") as vs:
        stopping = CountingEncoder(vs.encoder, stop_after=2)
    with VisualSearch(lite_uri, encoder=stopping) as vs, pytest.raises(KeyboardInterrupt):
        vs.index(photos, reindex=True)
    counting = CountingEncoder(bundled_encoder)
    with VisualSearch(lite_uri, encoder=counting) as vs:
        summary = vs.index(photos / "sub", reindex=True)  # a part of what was indexed
        assert counting.embedded == 5 and summary.added == 5 and summary.removed == 3
        assert vs.info()["dimension"] == 384 and vs.count() == 5
        assert fields(vs.store, "label") == {p: (v[0],) for p, v in labelled.items() if "/sub/" in p}


@pytest.mark.parametrize("kind", ["lite-server", pytest.param("server", marks=pytest.mark.server)])
def test_a_reindex_on_a_server(kind, request, photos, bundled_encoder, tiny_models):
    uri = request.getfixturevalue("server_uri" if kind == "server" else "lite_server_uri")
    name = f"reindex_{uuid.uuid4().hex[:8]}"
    try:
        with VisualSearch(uri, name, encoder=bundled_encoder) as vs:
            vs.index(photos, metadata={str(photos / "chelsea.jpg"): {"label": "cat"}})
        with VisualSearch(uri, name, model=str(tiny_models["vit"]), device="cpu") as vs:
            summary = vs.index(photos, reindex=True)
            assert (summary.added, summary.removed) == (7, 0)
            assert vs.info()["dimension"] == 32 and vs.count() == 7
            assert fields(vs.store, "label")[str(photos / "chelsea.jpg")] == ("cat",)
            assert vs.query(photos / "chelsea.jpg", k=1)[0].path == str(photos / "chelsea.jpg")
            assert not vs.store.sibling(name + STAGING).exists()
    finally:
        Store(uri, name).drop()
        Store(uri, name + STAGING).drop()
