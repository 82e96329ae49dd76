import os
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from vitsearch import ModelMismatchError, VisualSearch, VitsearchError
from vitsearch.errors import ModelError


@pytest.fixture
def vs(lite_uri, bundled_encoder):
    search = VisualSearch(lite_uri, encoder=bundled_encoder)  # share the loaded bundled model between tests
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

    def __getattr__(self, name):  # its spec, and the indexer's encode_files
        return getattr(self.inner, name)


def test_a_query_that_is_an_indexed_file_uses_its_stored_vector(lite_uri, photos, bundled_encoder, tmp_path):
    import shutil

    counting = CountingEncoder(bundled_encoder)
    vs = VisualSearch(lite_uri, encoder=counting)
    vs.index(photos)
    counting.embedded = 0  # what queries embed from here on
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


def test_a_query_url_that_is_no_image_is_named_by_its_url(lite_uri, photos, bundled_encoder):
    import io

    from imagehost import ImageHost

    from vitsearch import ImageError
    from vitsearch.fetch import FetchOptions

    png = io.BytesIO()
    Image.open(photos / "chelsea.jpg").save(png, "PNG")
    with ImageHost() as host, VisualSearch(lite_uri, encoder=bundled_encoder,
                                           fetch=FetchOptions(allow_private=True, retries=0)) as search:
        search.index(photos / "coffee.jpg")
        page, cut = host.html("/page.jpg"), host.image("/cut.png", png.getvalue()[:2000])
        with pytest.raises(ImageError, match=rf"^{page}: not a recognised image format \(the server sent text/html\)$"):
            search.query(page)
        with pytest.raises(ImageError, match=rf"^{cut}: cannot decode"):  # found out only when decoded
            search.query(cut)


def test_query_before_indexing_is_a_clear_error(vs, photos):
    with pytest.raises(VitsearchError, match="run `vitsearch index` first"):
        vs.query(photos / "coffee.jpg")


def test_a_collection_of_an_earlier_bundled_model_asks_for_reindex(lite_uri, photos):
    from vitsearch.store import Store

    store = Store(lite_uri)
    store.create({"model": "old-bundled", "fingerprint": "0123abcd", "dim": 384, "bundled": True})
    store.close()
    mismatch = pytest.raises(ModelMismatchError, match="earlier bundled model.*--reindex")
    with VisualSearch(lite_uri, device="cpu") as vs, mismatch:
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


def test_a_collection_whose_model_folder_moved_works_until_the_model_is_needed(tmp_path, tiny_models, photos):
    import shutil

    model, uri = tmp_path / "m", str(tmp_path / "s.db")
    shutil.copytree(tiny_models["vit"], model)
    with VisualSearch(uri, model=str(model), device="cpu") as vs:
        vs.index(photos)
    model.rename(tmp_path / "m2")
    with VisualSearch(uri, device="cpu") as vs:
        assert vs.index(photos).unchanged == 7  # nothing to embed: no model needed
        assert vs.query(photos / "coffee.jpg", k=1)[0].path == str(photos / "coffee.jpg")  # its stored vector
        with pytest.raises(ModelError, match=f"indexed with the model at {model}, which is no longer there.*--model"):
            vs.query(Image.new("RGB", (40, 40), (1, 2, 3)))
    with VisualSearch(uri, model=str(tmp_path / "m2"), device="cpu") as vs:  # the same weights, found again
        assert vs.query(Image.new("RGB", (40, 40), (1, 2, 3)), k=1)


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

    vs = VisualSearch(server_uri, "e2e_" + uuid.uuid4().hex[:10], encoder=bundled_encoder)
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
    with pytest.raises(StoreError, match="not created by vitsearch"):  # nor dropped to be rebuilt
        vs.index(photos, reindex=True)
    vs.close()
    client = MilvusClient(lite_uri)
    assert client.has_collection("foreign") and not client.has_collection("foreign__reindex")
    client.close()


# -- the parts passed in, and the methods the server uses ------------------------------------------
def _spec(fingerprint: str = "f1", dim: int = 4):
    """What a model says about itself to the store (see checkpoint.ModelSpec), without weights."""
    return SimpleNamespace(name=f"model-{fingerprint}", fingerprint=fingerprint, dim=dim, is_bundled=False)


class NoModel:
    """An encoder that must not be asked to embed: the methods under test only write given vectors."""

    def __init__(self, spec):
        self.spec = spec

    def encode(self, *args, **kwargs):
        raise AssertionError("nothing should be embedded")

    encode_files = encode


@pytest.mark.parametrize("kwargs, message", [
    ({"uri": "x.db"}, "store"),
    ({"collection": "c"}, "store"),
    ({"token": "t"}, "store"),
])
def test_a_store_is_given_instead_of_its_address_not_with_it(tmp_path, kwargs, message):
    from vitsearch.store import Store

    store = Store(str(tmp_path / "s.db"), "c")
    with pytest.raises(ValueError, match=message):
        VisualSearch(store=store, **kwargs)


def test_an_encoder_is_given_instead_of_a_model_not_with_it(tmp_path):
    with pytest.raises(ValueError, match="encoder"):
        VisualSearch(str(tmp_path / "s.db"), model="some/model", encoder=NoModel(_spec()))


def test_the_parts_passed_in_are_used(tmp_path, monkeypatch):
    from vitsearch.store import Store

    monkeypatch.setenv("VITSEARCH_MODEL", "some/other-model")  # an encoder passed in wins over the default
    store, encoder = Store(str(tmp_path / "s.db"), "parts"), NoModel(_spec("f1"))
    with VisualSearch(store=store, encoder=encoder) as vs:
        assert vs.store is store and vs.encoder is encoder and vs.spec is encoder.spec
        vs.ensure_collection()
        assert store.meta()["fingerprint"] == "f1" and vs.info()["collection"] == "parts"
    assert store._client is None  # closing the VisualSearch closed the store it was given


def test_ensure_collection_creates_it_then_checks_its_model(lite_uri):
    with VisualSearch(lite_uri, "c", encoder=NoModel(_spec("f1"))) as vs:
        assert not vs.store.exists()
        vs.ensure_collection()
        vs.ensure_collection()  # there now, and of this model: nothing to do
        assert vs.store.meta()["fingerprint"] == "f1" and vs.count() == 0
    with VisualSearch(lite_uri, "c", encoder=NoModel(_spec("f2"))) as other, \
            pytest.raises(ModelMismatchError, match="model-f1"):
        other.ensure_collection()


@pytest.mark.parametrize("theirs, error", [("f1", None), ("f2", ModelMismatchError)])
def test_ensure_collection_when_another_writer_creates_it_first(lite_uri, theirs, error):
    from vitsearch.api import model_record
    from vitsearch.errors import StoreError
    from vitsearch.store import Store

    class Raced(Store):  # another process creates the collection between our check and our create
        def create(self, meta):
            other = Store(self.uri, self.collection)
            other.create(model_record(_spec(theirs)))
            other.close()
            self._meta = None
            raise StoreError("Milvus create_collection failed: collection already exists")

    with VisualSearch(store=Raced(lite_uri, "c"), encoder=NoModel(_spec("f1"))) as vs:
        if error is None:
            vs.ensure_collection()
            assert vs.store.meta()["fingerprint"] == "f1"
        else:
            with pytest.raises(error):
                vs.ensure_collection()


def test_ensure_collection_reports_a_create_that_failed(lite_uri):
    from vitsearch.errors import StoreError
    from vitsearch.store import Store

    class Broken(Store):
        def create(self, meta):
            raise StoreError("Milvus create_collection failed: no space left")

    with VisualSearch(store=Broken(lite_uri, "c"), encoder=NoModel(_spec())) as vs, \
            pytest.raises(StoreError, match="no space left"):
        vs.ensure_collection()


def test_require_wants_the_collection_and_its_model(lite_uri):
    with VisualSearch(lite_uri, "c", encoder=NoModel(_spec("f1"))) as vs:
        with pytest.raises(VitsearchError, match="does not exist.*vitsearch index"):
            vs.require()
        vs.ensure_collection()
        vs.require()
    with VisualSearch(lite_uri, "c", encoder=NoModel(_spec("f2"))) as other, pytest.raises(ModelMismatchError):
        other.require()


def test_put_writes_one_files_row_keeping_its_metadata(tmp_path, lite_uri):
    from helpers import photo
    from photofiles import save_photo

    from vitsearch.store import path_id

    path = save_photo(tmp_path / "up.jpg", photo(3), "JPEG", make="Canon", model="EOS R")
    with VisualSearch(lite_uri, "c", encoder=NoModel(_spec())) as vs:
        vs.ensure_collection()
        row, created = vs.put(path, [1, 0, 0, 0], sha256="a" * 64, width=96, height=72, fields={"sku": "A1", "n": 2})
        assert created and row["id"] == path_id(str(path)) and row["path"] == str(path)
        assert (row["size"], row["mtime"]) == (path.stat().st_size, path.stat().st_mtime)
        assert row["camera_make"] == "Canon"  # EXIF read from the file when not given
        stored = vs.store.get([row["id"]], ["*"])[0]
        assert (stored["sku"], stored["n"], stored["width"], stored["sha256"]) == ("A1", 2, 96, "a" * 64)

        _, created = vs.put(path, [0, 1, 0, 0], sha256="b" * 64, width=96, height=72, exif={}, fields={"n": 3})
        assert not created and vs.count() == 1
        stored = vs.store.get([row["id"]], ["*"])[0]
        assert (stored["sku"], stored["n"], stored["sha256"]) == ("A1", 3, "b" * 64)  # kept, and replaced
        assert stored.get("camera_make") is None  # the EXIF given (none) replaced the file's
        with pytest.raises(VitsearchError, match="vitsearch's own fields"):
            vs.put(path, [1, 0, 0, 0], sha256="c" * 64, width=96, height=72, fields={"path": "x"})


def test_a_query_file_that_is_no_image_is_refused_without_being_hashed(tmp_path, lite_uri, monkeypatch):
    from vitsearch import ImageError
    from vitsearch.images import load_image

    class Decoding(NoModel):
        def encode(self, images, **kwargs):
            return [load_image(image) for image in images]

    big = tmp_path / "x.jpg"
    with open(big, "wb") as fh:
        fh.write(b"this is no image header\n")
        fh.truncate(2 * 1024**3)  # 2 GB, sparse

    def sha256_file(path):
        raise AssertionError(f"{path} was read whole to be hashed")

    monkeypatch.setattr("vitsearch.search.sha256_file", sha256_file)
    with VisualSearch(lite_uri, "c", encoder=Decoding(_spec())) as vs:
        vs.ensure_collection()
        with pytest.raises(ImageError, match="not a recognised image format"):
            vs.query(big, k=1)


def test_arguments_that_make_no_sense_are_usage_errors_and_do_nothing(vs, photos, monkeypatch):
    from vitsearch.errors import UsageError

    vs.index(photos)
    count = vs.count()
    monkeypatch.chdir(photos)  # an empty path made absolute would be this folder: every row under it
    for bad in ("", [""], ["  "], [str(photos / "coffee.jpg"), ""], None, [None], [b"/x.jpg"], 5):
        with pytest.raises(UsageError):
            vs.remove(bad)
    assert vs.count() == count
    with pytest.raises(UsageError, match="empty path"):
        vs.index([""])
    for bad_k in (None, "3", 2.5, True, 0):
        with pytest.raises(UsageError, match="k must be"):
            vs.query(photos / "coffee.jpg", k=bad_k)
        with pytest.raises(UsageError, match="k must be"):
            vs.tag(photos / "coffee.jpg", k=bad_k)
    for bad_size in (0, -5, 2.5):
        with pytest.raises(UsageError, match="batch_size"):
            vs.tag_missing(batch_size=bad_size)
    for field in (5, None):
        with pytest.raises(VitsearchError, match="not a usable field name"):
            vs.tag(photos / "coffee.jpg", field=field)
    with pytest.raises(VitsearchError, match="own fields"):
        vs.tag_missing(field="camera_words")  # bookkeeping of the --camera filter, not a label
    with pytest.raises(UsageError, match="not both"):
        VisualSearch(str(photos / "x.db"), store=vs.store)


@pytest.mark.parametrize("value, words", [
    (2**63, "64-bit"), (float("nan"), "cannot store"), ({"a": 1}, "string, number or boolean"),
    ([1, 2], "string, number or boolean"), (b"x", "string, number or boolean"), (np.arange(3), "string, number"),
])
def test_metadata_given_as_a_dict_is_checked_as_a_file_is(vs, photos, value, words):
    with pytest.raises(VitsearchError, match=words):
        vs.index(photos, metadata={str(photos / "coffee.jpg"): {"odd": value}})
    assert not vs.store.exists() or vs.count() == 0  # refused before anything was written


def test_metadata_none_means_no_value_and_is_not_rewritten_each_run(vs, photos):
    meta = {str(photos / "coffee.jpg"): {"sku": "C-1", "price": None}}
    assert vs.index(photos, metadata=meta).metadata_updated == 0
    assert vs.index(photos, metadata=meta).metadata_updated == 0
    hit = vs.query(photos / "coffee.jpg", k=1)[0]
    assert hit.metadata["sku"] == "C-1" and "price" not in hit.metadata
    with pytest.raises(VitsearchError, match="must be a dict"):
        vs.index(photos, metadata={str(photos / "coffee.jpg"): 5})
