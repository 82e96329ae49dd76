"""`vitsearch copy` / VisualSearch.copy: a collection into another store (Lite file, Lite server, Milvus
server) with its vectors, facts, EXIF and metadata, and its model record, without embedding again."""

import json
import uuid

import numpy as np
import pytest
from click.testing import CliRunner
from photofiles import save_photo

import vitsearch.api
from vitsearch import ModelMismatchError, StoreError, UsageError, VisualSearch, VitsearchError
from vitsearch.cli import main
from vitsearch.store import Store


class NoEncoder:
    """An encoder that must not be used: a copy and an unchanged re-index of it embed nothing."""

    def __init__(self, spec):
        self.spec = spec

    def encode(self, images, **kwargs):
        raise AssertionError(f"asked to embed {len(images)} images")


@pytest.fixture
def indexed(tmp_path, photos, bundled_encoder):
    """The photos, one with EXIF, indexed with metadata into a Lite store; yields its VisualSearch."""
    from helpers import photo

    save_photo(photos / "sub" / "exif.jpg", photo(3), "JPEG", taken="2024:05:01 10:00:00", make="Canon",
               model="EOS R6", gps=(48.85, 2.35))
    source = VisualSearch(str(tmp_path / "source.db"), encoder=bundled_encoder)
    source.index(photos, metadata={str(photos / "chelsea.jpg"): {"kind": "cat", "price": 12.5}})
    yield source
    source.close()


def every_row(store: Store) -> dict[str, dict]:
    return {row["path"]: row for row in store.iter_rows(fields=["*", "vector"])}


def assert_same_rows(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for path, row in a.items():
        other = b[path]
        assert {k: v for k, v in row.items() if k != "vector"} == {k: v for k, v in other.items() if k != "vector"}
        np.testing.assert_array_equal(np.asarray(row["vector"], np.float32), np.asarray(other["vector"], np.float32))


def test_a_copy_holds_every_row_and_the_model_record_and_needs_no_model(indexed, tmp_path, photos, bundled_encoder):
    events = []
    summary = indexed.copy(str(tmp_path / "copy.db"), progress=events.append)
    assert summary.as_dict() | {"seconds": 0} == {"copied": 8, "created": True, "count": 8, "uri": str(tmp_path / "copy.db"),
                                                   "collection": "images", "seconds": 0}
    assert events[-1].kind == "copying" and (events[-1].done, events[-1].total) == (8, 8)
    with VisualSearch(str(tmp_path / "copy.db"), encoder=NoEncoder(bundled_encoder.spec)) as copy:
        assert copy.store.meta() == indexed.store.meta()
        assert_same_rows(every_row(indexed.store), every_row(copy.store))
        # the copy is the collection: an unchanged re-index embeds nothing, a query by an indexed image
        # uses its stored vector, filters on metadata and EXIF work
        summary = copy.index(photos)
        assert (summary.unchanged, summary.embedded, summary.added) == (8, 0, 0)
        hits = copy.query(photos / "chelsea.jpg", k=2)
        assert hits[0].path == str(photos / "chelsea.jpg") and hits[0]["kind"] == "cat"
        assert hits[1].path == str(photos / "sub" / "cat_copy.png")
        assert [h.path for h in copy.query(photos / "chelsea.jpg", k=8, filter='camera_make == "Canon"')] == [
            str(photos / "sub" / "exif.jpg")]
        assert copy.info()["exif"]["taken_at"] == 1


def test_copying_into_a_collection_of_the_same_model_merges_and_a_second_run_changes_nothing(indexed, tmp_path, photos):
    target = str(tmp_path / "target.db")
    # the target holds one of the source's paths (with other metadata) and one of its own
    with VisualSearch(target, encoder=indexed.encoder) as other:
        other.index([photos / "coffee.jpg", photos / "sub" / "rocket.JPG"], metadata={
            str(photos / "coffee.jpg"): {"kind": "old"}})
        other.store.delete([row["id"] for row in other.store.iter_rows() if row["path"].endswith("rocket.JPG")])
        extra = tmp_path / "extra.png"
        extra.write_bytes((photos / "sub" / "sneaker.png").read_bytes())
        other.index([photos / "coffee.jpg", extra], keep_missing=True)
        assert other.count() == 2
    summary = indexed.copy(target)
    assert (summary.copied, summary.created, summary.count) == (8, False, 9)
    with VisualSearch(target, encoder=indexed.encoder) as merged:
        rows = every_row(merged.store)
        assert str(extra) in rows and rows[str(photos / "coffee.jpg")].get("kind") is None  # replaced by the source's
    assert indexed.copy(target).count == 9  # again: the same rows, nothing doubled


def test_a_collection_of_another_model_is_refused_and_left_as_it_was(indexed, tmp_path, tiny_models, photos):
    target = str(tmp_path / "tiny.db")
    with VisualSearch(target, model=str(tiny_models["vit"]), device="cpu") as other:
        other.index([photos / "coffee.jpg"])
    with pytest.raises(ModelMismatchError, match="another model .* copy into another collection"):
        indexed.copy(target)
    with VisualSearch(target, model=str(tiny_models["vit"]), device="cpu") as other:
        assert other.count() == 1
    # another collection of that store is fine
    assert indexed.copy(target, "bundled").created


def test_a_collection_not_made_by_vitsearch_is_refused(indexed, tmp_path):
    foreign = Store(str(tmp_path / "foreign.db"), "images")
    foreign.create({"dim": 384})  # no model record
    foreign.close()
    with pytest.raises(StoreError, match="not created by vitsearch.*--to-collection"):
        indexed.copy(str(tmp_path / "foreign.db"))


def test_nothing_to_copy_or_nowhere_to_copy_to(tmp_path, indexed, bundled_encoder):
    with (VisualSearch(str(tmp_path / "missing.db"), encoder=bundled_encoder) as missing,
          pytest.raises(VitsearchError, match="does not exist")):
        missing.copy(str(tmp_path / "target.db"))
    assert not (tmp_path / "target.db").exists()  # no store left behind
    with pytest.raises(UsageError, match="is the collection being copied"):
        indexed.copy(indexed.store.uri)
    with pytest.raises(UsageError, match="store to copy into"):
        indexed.copy(" ")
    assert indexed.copy(indexed.store.uri, "second").copied == 8  # the same store, another collection


def test_rows_are_read_and_written_in_pages(indexed, tmp_path, monkeypatch):
    monkeypatch.setattr(vitsearch.api, "COPY_BATCH", 3)
    written = []
    real = Store.upsert
    monkeypatch.setattr(Store, "upsert", lambda self, rows: (written.append(len(rows)), real(self, rows)))
    events = []
    assert indexed.copy(str(tmp_path / "paged.db"), progress=events.append).count == 8
    assert written == [3, 3, 2] and [e.done for e in events] == [3, 6, 8]


@pytest.mark.parametrize("kind", ["lite-server", pytest.param("server", marks=pytest.mark.server)])
def test_from_lite_to_a_server_and_back(kind, request, indexed, tmp_path, photos):
    uri = request.getfixturevalue("server_uri" if kind == "server" else "lite_server_uri")
    name = f"copy_{uuid.uuid4().hex[:8]}"
    try:
        assert indexed.copy(uri, name).count == 8
        with VisualSearch(uri, name, encoder=indexed.encoder) as remote:
            assert_same_rows(every_row(indexed.store), every_row(remote.store))
            hits = remote.query(photos / "chelsea.jpg", k=3)
            local = indexed.query(photos / "chelsea.jpg", k=3)
            assert [h.path for h in hits] == [h.path for h in local]
            back = remote.copy(str(tmp_path / "back.db"), "images")
        assert back.count == 8
        with VisualSearch(str(tmp_path / "back.db"), encoder=indexed.encoder) as local_again:
            assert_same_rows(every_row(indexed.store), every_row(local_again.store))
    finally:
        Store(uri, name).drop()


def test_the_copy_command(monkeypatch, tmp_path, indexed, cli_encoder):
    source = indexed.store.uri
    indexed.close()  # the CLI opens the store itself
    runner = CliRunner()
    result = runner.invoke(main, ["copy", "--uri", source, "--to", str(tmp_path / "cli.db")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"copied 8 rows into a new collection 'images' in {tmp_path / 'cli.db'}" in result.output
    assert result.output.rstrip().endswith("it holds 8")
    result = runner.invoke(main, ["copy", "--uri", source, "--to", str(tmp_path / "cli.db"), "--to-collection", "b",
                                  "--json"], catch_exceptions=False)
    assert json.loads(result.output) | {"seconds": 0} == {"copied": 8, "created": True, "count": 8, "seconds": 0,
                                                           "uri": str(tmp_path / "cli.db"), "collection": "b"}
    result = runner.invoke(main, ["copy", "--uri", source])
    assert result.exit_code == 2 and "Missing option '--to'" in result.output
    result = runner.invoke(main, ["copy", "--uri", source, "--to", source])
    assert result.exit_code == 2 and "is the collection being copied" in result.output
    assert "Traceback" not in result.output
