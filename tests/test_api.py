import os

import numpy as np
import pytest
from PIL import Image

from vitsearch import ModelMismatchError, VisualSearch, VitsearchError


@pytest.fixture
def vs(lite_uri, bundled_encoder):
    search = VisualSearch(lite_uri, device="cpu")
    search._encoder = bundled_encoder  # share the loaded bundled model between tests
    yield search
    search.close()


def test_index_then_query_by_path_pil_bytes_and_array(vs, photos):
    summary = vs.index(photos)
    assert summary.added == 7 and vs.count() == 7
    path = photos / "chelsea.jpg"
    img = Image.open(path)
    queries = [str(path), img, path.read_bytes(), np.asarray(img.convert("RGB"))]
    for hits in vs.query(queries, k=3):
        assert hits[0].path == str(path)
        assert hits[0].score >= 0.99
        assert hits[1].path == str(photos / "sub" / "cat_copy.png")  # the planted near-duplicate
    single = vs.query(path, k=2)
    assert [h.rank for h in single] == [1, 2]
    assert single[0]["width"] == 451 and single[0]["sha256"]


def test_every_indexed_image_finds_itself_first(vs, photos):
    vs.index(photos)
    files = sorted(str(p) for p in photos.rglob("*") if p.is_file())
    for path, hits in zip(files, vs.query(files, k=1)):
        assert hits[0].path == path and hits[0].score >= 0.99


class CountingEncoder:
    """The real encoder, counting what it is asked to embed."""

    def __init__(self, inner):
        self.inner, self.embedded = inner, 0

    def encode(self, images, **kwargs):
        self.embedded += len(images)
        return self.inner.encode(images, **kwargs)


def test_a_query_that_is_an_indexed_file_uses_its_stored_vector(vs, photos, bundled_encoder, tmp_path):
    import shutil

    vs.index(photos)
    counting = vs._encoder = CountingEncoder(bundled_encoder)
    chelsea, coffee = photos / "chelsea.jpg", photos / "coffee.jpg"
    embedded = vs.store.search([bundled_encoder.encode(str(chelsea)).tolist()], 3)[0]
    hits = vs.query(chelsea, k=3)
    assert counting.embedded == 0
    assert [h.path for h in hits] == [r["path"] for r in embedded]  # what embedding it again gives
    assert hits[0].path == str(chelsea) and hits[0].score == pytest.approx(1.0, abs=1e-5)
    # a copy elsewhere is known by its content; so is a touched file
    shutil.copy(chelsea, tmp_path / "elsewhere.jpg")
    os.utime(coffee, (1e9, 1e9))
    assert vs.query(tmp_path / "elsewhere.jpg", k=1)[0].path == str(chelsea)
    assert vs.query(str(coffee), k=1)[0].path == str(coffee)
    assert vs.query(chelsea.read_bytes(), k=1)[0].path == str(chelsea)
    assert counting.embedded == 0
    tags = vs.tag([chelsea], k=3)
    assert counting.embedded == 0 and tags[0].query == str(chelsea)
    # in a mixed list only what the collection lacks is embedded, and the order is kept
    img = Image.open(photos / "sub" / "horse.JPG")
    mixed = vs.query([str(chelsea), img, str(coffee)], k=1)
    assert counting.embedded == 1
    assert [h[0].path for h in mixed] == [str(chelsea), str(photos / "sub" / "horse.JPG"), str(coffee)]
    # a file changed since it was indexed is embedded afresh, never answered with its old vector
    img.save(chelsea)
    changed = vs.query(chelsea, k=1)
    assert counting.embedded == 2
    assert changed[0].path == str(photos / "sub" / "horse.JPG") and changed[0].score > 0.99


def test_filter_and_remove(vs, photos):
    vs.index(photos)
    hits = vs.query(photos / "coffee.jpg", k=10, filter="width < 100")
    assert [os.path.basename(h.path) for h in hits] == ["sneaker.png"]
    assert vs.remove(photos / "sub") == 4
    assert vs.count() == 3
    assert vs.remove(photos / "nothing-here") == 0


def test_query_before_indexing_is_a_clear_error(vs, photos):
    with pytest.raises(VitsearchError, match="run `vitsearch index` first"):
        vs.query(photos / "coffee.jpg")


def test_a_collection_of_an_earlier_bundled_model_asks_for_reindex(lite_uri, photos):
    from vitsearch.store import Store

    store = Store(lite_uri)
    store.create({"model": "old-bundled", "fingerprint": "0123abcd", "dim": 384, "bundled": True})
    store.close()
    with VisualSearch(lite_uri, device="cpu") as vs:
        with pytest.raises(ModelMismatchError, match="earlier bundled model.*--reindex"):
            vs.query(photos / "coffee.jpg")


def test_another_model_is_refused_with_what_to_do(vs, photos, tiny_models, lite_uri):
    vs.index(photos)
    vs.close()
    other = VisualSearch(lite_uri, model=str(tiny_models["vit"]), device="cpu")
    with pytest.raises(ModelMismatchError, match="the bundled model.*--reindex"):
        other.query(photos / "coffee.jpg")
    with pytest.raises(ModelMismatchError):
        other.index(photos)
    summary = other.index(photos, reindex=True)
    assert summary.added == 7 and other.info()["dimension"] == 32
    other.close()
    # --reindex without --model keeps the collection's model
    keep = VisualSearch(lite_uri, device="cpu")
    assert keep.index(photos, reindex=True).added == 7 and keep.info()["dimension"] == 32
    keep.close()
    # without --model the collection's own model is used
    again = VisualSearch(lite_uri, device="cpu")
    assert again.spec.name == str(tiny_models["vit"])
    assert again.query(photos / "coffee.jpg", k=1)[0].path == str(photos / "coffee.jpg")
    again.close()


def test_info(vs, photos):
    vs.index(photos)
    info = vs.info()
    assert info["count"] == 7 and info["dimension"] == 384 and info["collection"] == "images"
    assert os.path.isdir(info["model"])  # what AutoModel.from_pretrained accepts


def test_default_store_lives_in_the_xdg_data_dir(tmp_path):
    vs = VisualSearch()
    assert vs.store.uri == str(tmp_path / "xdg-data" / "vitsearch" / "vitsearch.db")
    assert vs.count() == 0 and vs.info()["exists"] is False
    vs.close()


@pytest.mark.server
def test_index_and_query_on_a_milvus_server(server_uri, photos, bundled_encoder):
    import uuid

    vs = VisualSearch(server_uri, "e2e_" + uuid.uuid4().hex[:10], device="cpu")
    vs._encoder = bundled_encoder
    try:
        assert vs.index(photos).added == 7
        assert vs.index(photos).unchanged == 7
        hits = vs.query(photos / "coffee.jpg", k=2)
        assert hits[0].path == str(photos / "coffee.jpg") and hits[0].score >= 0.99
        assert vs.remove(photos / "sub") == 4 and vs.count() == 3
    finally:
        vs.store.drop()
        vs.close()


def test_a_collection_not_made_by_vitsearch_is_refused(lite_uri, photos):
    from pymilvus import MilvusClient

    from vitsearch import StoreError

    client = MilvusClient(lite_uri)
    client.create_collection("foreign", dimension=4)
    client.close()
    vs = VisualSearch(lite_uri, "foreign", device="cpu")
    with pytest.raises(StoreError, match="not created by vitsearch"):
        vs.index(photos)
    vs.close()
