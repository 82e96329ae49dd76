"""Store contract: the same tests run on Milvus Lite and, where one is reachable, a Milvus server."""

import subprocess
import sys
import uuid

import numpy as np
import pytest

from vitsearch.errors import FilterError, StoreError, StoreLockedError
from vitsearch.store import Store, path_id


@pytest.fixture(params=["lite", "lite-server", pytest.param("server", marks=pytest.mark.server)])
def store(request, tmp_path):
    if request.param == "lite":
        s = Store(str(tmp_path / "s.db"), "test")
    else:
        uri = request.getfixturevalue("server_uri" if request.param == "server" else "lite_server_uri")
        s = Store(uri, "t_" + uuid.uuid4().hex[:12])
    yield s
    if request.param != "lite":
        s.drop()
    s.close()


def rows(n, dim=8, prefix="/data/img", seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        path = f"{prefix}_{i}.jpg"
        out.append({"id": path_id(path), "path": path, "size": i, "mtime": 1.5 + i, "sha256": f"{i:064x}",
                    "width": 10, "height": 20, "vector": rng.standard_normal(dim).tolist(), "label": f"l{i % 2}"})
    return out


def test_create_records_the_model_and_survives_reopening(store):
    assert not store.exists() and store.meta() is None and store.count() == 0
    store.create({"model": "m", "fingerprint": "abc", "dim": 8})
    store.close()
    again = Store(store.uri, store.collection)
    assert again.meta() == {"model": "m", "fingerprint": "abc", "dim": 8, "schema": 1}
    assert again.count() == 0
    again.close()


def test_upsert_is_idempotent_and_rows_round_trip(store):
    store.create({"model": "m", "fingerprint": "abc", "dim": 8})
    data = rows(5)
    store.upsert(data)
    store.upsert(data[:2])
    assert store.count() == 5
    got = {r["path"]: r for r in store.rows_under("/data")}
    assert set(got) == {r["path"] for r in data}
    assert got["/data/img_3.jpg"]["mtime"] == 4.5 and got["/data/img_3.jpg"]["size"] == 3


def test_rows_under_matches_folders_exactly_even_with_like_wildcards(store):
    store.create({"model": "m", "fingerprint": "abc", "dim": 8})
    store.upsert(rows(2, prefix="/a/b_%x/img") + rows(2, prefix="/a/bz/img", seed=1) + rows(1, prefix="/a/b_%xy/i", seed=2))
    assert sorted(r["path"] for r in store.rows_under("/a/b_%x")) == ["/a/b_%x/img_0.jpg", "/a/b_%x/img_1.jpg"]
    assert [r["path"] for r in store.rows_under("/a/bz/img_1.jpg")] == ["/a/bz/img_1.jpg"]


@pytest.mark.parametrize("folder", ["/a/nl\ndir", "/a/cr\rdir", "/a/tab\tdir", '/a/q"uo\\te', "/a/bell\x07dir"])
def test_rows_under_a_folder_whose_name_holds_control_characters(store, folder):
    store.create({"model": "m", "fingerprint": "abc", "dim": 8})
    store.upsert(rows(2, prefix=folder + "/img") + rows(1, prefix="/a/other/img", seed=1))
    assert sorted(r["path"] for r in store.rows_under(folder)) == [folder + "/img_0.jpg", folder + "/img_1.jpg"]
    assert [r["path"] for r in store.rows_under(folder + "/img_1.jpg")] == [folder + "/img_1.jpg"]


def test_iter_rows_pages_through_every_row_once(store, monkeypatch):
    monkeypatch.setattr("vitsearch.store._BATCH", 7)  # many pages from few rows
    store.create({"model": "m", "fingerprint": "abc", "dim": 8})
    data = rows(40)
    store.upsert(data[:25])
    store.flush()  # sealed and growing rows both
    store.upsert(data[25:])
    every = list(store.iter_rows())
    assert sorted(r["path"] for r in every) == sorted(r["path"] for r in data)
    label = list(store.iter_rows('label == "l1"', ["path"]))
    assert sorted(r["path"] for r in label) == sorted(r["path"] for r in data if r["label"] == "l1")


@pytest.mark.server
def test_a_new_store_sees_rows_another_client_wrote_a_moment_ago(server_uri):
    name = "t_" + uuid.uuid4().hex[:12]
    writer = Store(server_uri, name)
    try:
        writer.create({"model": "m", "fingerprint": "abc", "dim": 8})
        for round_ in range(3):
            data = rows(5, prefix=f"/r{round_}/img", seed=round_)
            writer.upsert(data)
            reader = Store(server_uri, name)  # another client: its first read is Strong
            assert {r["path"] for r in reader.iter_rows(f'path like "/r{round_}/%"')} == {r["path"] for r in data}
            assert reader.search([data[0]["vector"]], 1)[0][0]["path"] == data[0]["path"]
            reader.close()
    finally:
        writer.drop()
        writer.close()


def test_search_scores_are_cosine_and_filters_apply(store):
    store.create({"model": "m", "fingerprint": "abc", "dim": 8})
    data = rows(20)
    store.upsert(data)
    hits = store.search([data[3]["vector"], data[7]["vector"]], 3)
    assert [h[0]["path"] for h in hits] == [data[3]["path"], data[7]["path"]]
    assert hits[0][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[0][0]["score"] >= hits[0][1]["score"] >= hits[0][2]["score"]
    filtered = store.search([data[3]["vector"]], 5, filter='label == "l0"')[0]
    assert filtered and all(h["label"] == "l0" for h in filtered)
    with pytest.raises(FilterError, match="invalid filter"):
        store.search([data[3]["vector"]], 5, filter="label ==== 3")


def test_by_sha256_and_delete(store):
    store.create({"model": "m", "fingerprint": "abc", "dim": 8})
    data = rows(4)
    store.upsert(data)
    found = store.by_sha256([data[1]["sha256"], "f" * 64])
    assert list(found) == [data[1]["sha256"]]
    np.testing.assert_allclose(found[data[1]["sha256"]]["vector"], data[1]["vector"], rtol=1e-6)
    assert store.delete([data[0]["id"], data[1]["id"]]) == 2
    assert store.count() == 2


def test_a_lite_store_held_by_another_process_is_refused_quickly(tmp_path):
    uri = str(tmp_path / "held.db")
    code = (f"from vitsearch.store import Store; s = Store({uri!r}); s.client; "
            "print('ready', flush=True); import time; time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError, match="in use by another process"):
            Store(uri).exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_lite_store_on_a_read_only_file_system_is_one_clear_error(tmp_path, monkeypatch):
    import builtins
    import errno

    uri = str(tmp_path / "ro" / "s.db")
    made = Store(uri, "test")
    made.create({"model": "m", "fingerprint": "abc", "dim": 8})
    made.close()
    real_open = builtins.open

    def read_only_open(file, mode="r", *args, **kwargs):  # the tests run as root: a chmod would not stop them
        if str(file).startswith(str(tmp_path / "ro")) and any(c in mode for c in "wa+x"):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only_open)
    with pytest.raises(StoreError, match=r"cannot open the Milvus Lite store .*s\.db: it is not writable "
                                         r"\(read-only file system\)") as caught:
        Store(uri, "test").exists()
    assert "\n" not in str(caught.value)


def test_a_new_lite_store_in_a_folder_that_is_not_writable_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr("vitsearch.store.os.access", lambda path, mode: False)
    with pytest.raises(StoreError, match=f"cannot create the Milvus Lite store .*new.db: the folder {tmp_path} "
                                         "is not writable"):
        Store(str(tmp_path / "new.db"), "test").create({"model": "m", "fingerprint": "abc", "dim": 8})
    assert not (tmp_path / "new.db").exists()


@pytest.mark.parametrize("uri, words", [("/tmp/not-a-db.txt", "ends in .db|ending in .db"),
                                         ("http://127.0.0.1:9", "cannot reach the Milvus server")])
def test_bad_uris(uri, words):
    with pytest.raises(StoreError, match=words):
        Store(uri, timeout=2).exists()


# -- the row, defined once ------------------------------------------------------------------------
def test_every_field_vitsearch_writes_itself_is_reserved_from_user_metadata():
    from vitsearch.metadata import check_field
    from vitsearch.store import (
        EXIF_FIELDS,
        EXIF_SOURCE,
        FEED_SOURCE,
        RESERVED,
        ROW_FIELDS,
        collection_schema,
        make_row,
    )

    schema = collection_schema(4)
    assert {f.name for f in schema.fields} <= RESERVED
    row = make_row("/p.jpg", 1, 2.0, "0" * 64, 3, 4, [0.0] * 4, exif={"camera_make": "X"}, user={"label": "y"},
                   feed_fields=["label"])
    own = set(row) - {"label"} - set(EXIF_FIELDS) - {"camera_words"}
    assert own <= RESERVED and set(ROW_FIELDS) | {"vector", EXIF_SOURCE, FEED_SOURCE} == own
    for name in RESERVED:
        with pytest.raises(Exception, match="vitsearch's own"):
            check_field(name, "metadata")
    for name in EXIF_FIELDS:  # a user may set these: their value wins
        assert check_field(name, "metadata") == name


def test_make_row_writes_the_source_fields_and_clears_those_the_source_no_longer_gives():
    from vitsearch.store import RESERVED, SOURCE_FIELDS, make_row, user_fields

    assert set(SOURCE_FIELDS) <= RESERVED
    url = "https://cdn.example/a.jpg"
    row = make_row(url, 1, 2.0, "0" * 64, 3, 4, [0.0] * 4, source={"etag": '"e1"', "feed": "/f.csv"},
                   user={"sku": "s1"})
    assert (row["etag"], row["feed"], user_fields(row)) == ('"e1"', "/f.csv", {"sku": "s1"})
    again = make_row(url, 1, 2.0, "0" * 64, 3, 4, [0.0] * 4, source={"etag": '"e2"'}, previous=row)
    assert again["etag"] == '"e2"' and "feed" in again and again["feed"] is None  # null: Milvus Lite merges
    assert "etag" not in make_row("/p.jpg", 1, 2.0, "0" * 64, 3, 4, [0.0] * 4)


def test_make_row_user_values_win_and_what_the_file_no_longer_says_is_cleared():
    from vitsearch.store import exif_of, make_row, user_fields

    exif = {"camera_make": "Canon", "camera_model": "EOS R", "taken_at": 5, "gps_lat": None}
    row = make_row("/p.jpg", 1, 2.0, "0" * 64, 3, 4, [0.5, 0.5], exif=exif, user={"camera_make": "Mine", "n": 1})
    assert (row["camera_make"], row["camera_model"], row["taken_at"], row["n"]) == ("Mine", "EOS R", 5, 1)
    assert row["exif_fields"] == ["camera_model", "camera_words", "taken_at"] and "gps_lat" not in row
    assert row["camera_words"] == ["mine", "eos", "r"]
    assert user_fields(row) == {"camera_make": "Mine", "n": 1}
    assert exif_of(row) == {"camera_model": "EOS R", "camera_words": ["mine", "eos", "r"], "taken_at": 5}
    again = make_row("/p.jpg", 1, 3.0, "1" * 64, 3, 4, [0.5, 0.5], exif={"lens": "L"}, user=user_fields(row),
                     previous=row)
    assert (again["camera_model"], again["taken_at"], again["camera_words"], again["lens"]) == (None, None, ["mine"], "L")
    assert again["camera_make"] == "Mine" and exif_of(again) == {"lens": "L", "camera_words": ["mine"]}
    assert exif_of({"id": 1}) is None


def test_exif_fields_are_dynamic_fields_that_filter_count_and_come_back(store):
    from vitsearch.store import EXIF_FIELDS, has_field, make_row

    store.create({"model": "m", "fingerprint": "f", "dim": 8})
    rng = np.random.default_rng(0)
    rows = [make_row(f"/x/{i}.jpg", i, 1.0, f"{i:064x}", 8, 8, rng.standard_normal(8),
                     exif={"taken_at": 1_700_000_000 + i, "camera_make": "Apple"} if i % 2 else {})
            for i in range(6)]
    store.upsert(rows)
    assert [store.count(has_field(name)) for name in EXIF_FIELDS] == [3, 3, 0, 0, 0, 0, 0]
    got = {r["path"]: r for r in store.iter_rows("", ["path", *EXIF_FIELDS, "exif_fields"])}
    assert got["/x/1.jpg"]["taken_at"] == 1_700_000_001 and "taken_at" not in got["/x/0.jpg"]
    assert got["/x/0.jpg"]["exif_fields"] == []
    hits = store.search([rows[3]["vector"]], 6, filter='json_contains_all(camera_words, ["apple"]) and taken_at < 1700000004')
    assert sorted(h["path"] for h in hits[0]) == ["/x/1.jpg", "/x/3.jpg"]
