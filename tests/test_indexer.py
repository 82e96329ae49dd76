"""Incremental indexing with a fake encoder that counts what it is asked to embed."""

import hashlib
import os
import shutil
import time

import numpy as np
import pytest
from helpers import photo, write_bad_files
from photofiles import save_photo

import vitsearch.indexer as indexer_module
from vitsearch.embed import FileResult
from vitsearch.images import Failure, load_image
from vitsearch.indexer import Indexer
from vitsearch.store import Store, has_field, path_id


class FakeEncoder:
    dim = 8

    def __init__(self):
        self.embedded: list[str] = []

    def encode_files(self, paths, batch_size=None):
        for i, path in enumerate(paths):
            try:
                img = load_image(path)
            except Exception as exc:  # noqa: BLE001
                yield FileResult(i, path, None, error=str(exc))
                continue
            self.embedded.append(os.path.basename(path))
            seed = int(hashlib.sha256(img.tobytes()).hexdigest()[:8], 16)
            vec = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
            yield FileResult(i, path, vec / np.linalg.norm(vec), img.size[0], img.size[1])


@pytest.fixture
def setup(tmp_path):
    store = Store(str(tmp_path / "idx.db"), "t")
    store.create({"model": "fake", "fingerprint": "f", "dim": 8})
    made = []

    def factory():
        made.append(FakeEncoder())
        return made[-1]

    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(4):
        photo(i).save(folder / f"{i}.png")
    photo(9).save(folder / "sub" / "9.png")
    yield Indexer(store, factory, batch_size=2), store, folder, made
    store.close()


def paths(store, folder):
    return sorted(os.path.relpath(r["path"], folder) for r in store.rows_under(str(folder)))


def test_first_run_adds_everything_and_second_run_loads_no_model(setup):
    indexer, store, folder, made = setup
    first = indexer.sync([folder])
    assert (first.scanned, first.added, first.embedded, first.failed) == (5, 5, 5, [])
    assert paths(store, folder) == ["0.png", "1.png", "2.png", "3.png", "sub/9.png"]
    second = indexer.sync([folder])
    assert (second.unchanged, second.added, second.updated, second.removed) == (5, 0, 0, 0)
    assert len(made) == 1  # no encoder built when nothing needs embedding


def test_progress_counts_the_images_embedded(setup):
    indexer, _, folder, _ = setup
    events = []
    indexer.progress = events.append
    indexer.sync([folder])
    assert [(e.kind, e.done, e.total, e.unit) for e in events] == [("embedding", i, 5, "img") for i in range(6)]


def test_changed_files_are_re_embedded_and_touched_files_are_not(setup):
    indexer, _store, folder, made = setup
    indexer.sync([folder])
    photo(42).save(folder / "1.png")
    os.utime(folder / "2.png", (time.time() + 5, time.time() + 5))
    summary = indexer.sync([folder])
    assert (summary.updated, summary.unchanged, summary.embedded) == (1, 4, 1)
    assert made[-1].embedded == ["1.png"]
    assert indexer.sync([folder]).unchanged == 5


def test_moves_and_copies_reuse_stored_vectors(setup):
    indexer, store, folder, made = setup
    indexer.sync([folder])
    before = store.by_sha256([r["sha256"] for r in store.rows_under(str(folder))])
    shutil.move(folder / "0.png", folder / "sub" / "renamed.png")
    shutil.copy(folder / "1.png", folder / "copy-of-1.png")
    summary = indexer.sync([folder])
    assert (summary.added, summary.reused, summary.removed, summary.embedded) == (2, 2, 1, 0)
    assert len(made) == 1
    assert "0.png" not in paths(store, folder) and "sub/renamed.png" in paths(store, folder)
    moved = next(r for r in store.rows_under(str(folder / "sub" / "renamed.png")))
    np.testing.assert_allclose(store.by_sha256([moved["sha256"]])[moved["sha256"]]["vector"],
                               before[moved["sha256"]]["vector"], rtol=1e-6)


def test_identical_new_files_are_embedded_once(setup):
    indexer, _store, folder, _made = setup
    for name in ("a.png", "b.png", "c.png"):
        photo(77).save(folder / name)
    summary = indexer.sync([folder])
    assert summary.added == 8 and summary.embedded == 6 and summary.reused == 2  # b and c: a's vector


def test_vanished_files_are_removed_unless_kept_and_only_under_the_indexed_roots(setup, tmp_path):
    indexer, store, folder, _made = setup
    other = tmp_path / "other"
    other.mkdir()
    photo(50).save(other / "x.png")
    indexer.sync([folder, other])
    os.remove(folder / "3.png")
    assert indexer.sync([folder], keep_missing=True).removed == 0
    assert "3.png" in paths(store, folder)
    summary = indexer.sync([folder / "sub"])  # a narrower root never sweeps outside itself
    assert summary.removed == 0
    summary = indexer.sync([folder])
    assert summary.removed == 1 and "3.png" not in paths(store, folder)
    assert [r["path"] for r in store.rows_under(str(other))] == [str(other / "x.png")]


def test_bad_files_are_reported_and_the_good_ones_indexed(setup):
    indexer, store, folder, _made = setup
    expected = write_bad_files(folder / "bad")
    (folder / "bad" / "dangling.jpg").symlink_to(folder / "bad" / "never-there.jpg")  # fails on the walk
    expected["dangling.jpg"] = "cannot stat"
    summary = indexer.sync([folder])
    assert summary.added == 5 and summary.embedded + summary.reused == 5
    assert summary.scanned == 5 + len(expected) == summary.added + len(summary.failed)  # the failures were found too
    reasons = {os.path.basename(f.path): f.reason for f in summary.failed}
    assert set(reasons) == set(expected)
    assert all(f.path.startswith(str(folder)) for f in summary.failed)
    # still failing the next time, and nothing indexed for them
    assert len(indexer.sync([folder]).failed) == len(expected)
    assert store.count() == 5


def test_a_failed_run_keeps_what_was_stored(setup):
    indexer, store, folder, _made = setup
    indexer.sync([folder])

    class Boom(FakeEncoder):
        def encode_files(self, paths, batch_size=None):
            raise RuntimeError("model crashed")

    photo(60).save(folder / "new.png")
    os.remove(folder / "0.png")
    crashing = Indexer(store, Boom)
    with pytest.raises(RuntimeError):
        crashing.sync([folder])
    assert "0.png" in paths(store, folder) and store.count() == 5  # deletes happen only at the end


# -- remote images: the same mark and sweep, fetched with conditional requests ---------------------
class FakeRemoteEncoder(FakeEncoder):
    """Also decodes bytes (on the fetch threads) and embeds pixel batches, counting both."""

    def __init__(self):
        super().__init__()
        self.batches: list[int] = []

    def prepare(self, data):
        img = load_image(data)
        return np.asarray(img.resize((8, 8))).transpose(2, 0, 1).copy(), img.size[0], img.size[1]

    def embed_pixels(self, batch):
        self.batches.append(len(batch))
        out = []
        for pixels in batch:
            seed = int(hashlib.sha256(pixels.tobytes()).hexdigest()[:8], 16)
            vec = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
            out.append(vec / np.linalg.norm(vec))
        return np.stack(out)


def _png(seed: int) -> bytes:
    import io

    buf = io.BytesIO()
    photo(seed).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def remote(tmp_path):
    from imagehost import ImageHost

    from vitsearch.fetch import Fetcher, FetchOptions

    store = Store(str(tmp_path / "idx.db"), "t")
    store.create({"model": "fake", "fingerprint": "f", "dim": 8})
    made = []

    def factory():
        made.append(FakeRemoteEncoder())
        return made[-1]

    with ImageHost() as host:
        fetcher = Fetcher(FetchOptions(retries=0, timeout=5))
        yield Indexer(store, factory, batch_size=4, fetcher=fetcher), store, host, made
        fetcher.close()
    store.close()


def _feed(path, rows):
    path.write_text("sku,image,price\n" + "".join(f"{sku},{url},{price}\n" for sku, url, price in rows))
    from vitsearch.sources import Feed

    return Feed(path, "image", "sku")


def _urls(store):
    return sorted(r["path"].rsplit("/", 1)[-1] for r in store.iter_rows("", ["id", "path"]))


def test_a_feed_of_urls_is_indexed_then_a_rerun_downloads_nothing(remote, tmp_path):
    indexer, store, host, made = remote
    rows = [(f"s{i}", host.image(f"/{i}.png", _png(i)), i * 10) for i in range(10)]
    feed = _feed(tmp_path / "feed.csv", rows)
    first = indexer.sync([feed])
    assert (first.scanned, first.added, first.embedded, first.fetched, first.failed) == (10, 10, 10, 10, [])
    assert made[0].batches == [4, 4, 2]  # full model batches from the fetch stream
    stored = {r["path"]: r for r in store.iter_rows("", ["*"])}
    assert stored[rows[3][1]]["sku"] == "s3" and stored[rows[3][1]]["price"] == 30
    assert stored[rows[3][1]]["feed"] == feed.path and stored[rows[3][1]]["etag"].startswith('"')
    host.reset_counts()
    second = indexer.sync([feed])
    assert (second.unchanged, second.added, second.fetched, second.embedded) == (10, 0, 0, 0)
    assert sum(host.bodies.values()) == 0 and sum(host.requests.values()) == 10  # ten 304s
    assert len(made) == 1  # and no model for them


def test_progress_counts_the_images_fetched(remote, tmp_path):
    indexer, _, host, _ = remote
    events = []
    indexer.progress = events.append
    indexer.sync([_feed(tmp_path / "feed.csv", [(f"s{i}", host.image(f"/{i}.png", _png(i)), i) for i in range(3)])])
    assert [(e.done, e.total) for e in events if e.kind == "fetching"] == [(i, 3) for i in range(4)]


def test_a_changed_image_is_embedded_again_and_a_new_etag_on_the_same_bytes_is_not(remote, tmp_path):
    indexer, store, host, _made = remote
    rows = [(f"s{i}", host.image(f"/{i}.png", _png(i)), 1) for i in range(3)]
    feed = _feed(tmp_path / "feed.csv", rows)
    indexer.sync([feed])
    host.replace("/0.png", _png(40))
    summary = indexer.sync([feed])
    assert (summary.updated, summary.unchanged, summary.embedded, summary.fetched) == (1, 2, 1, 1)
    row = next(r for r in store.iter_rows("", ["*"]) if r["path"] == rows[0][1])
    assert row["sha256"] == hashlib.sha256(_png(40)).hexdigest() and row["sku"] == "s0"


def test_feed_metadata_changes_rewrite_rows_without_downloading(remote, tmp_path):
    indexer, store, host, _made = remote
    rows = [(f"s{i}", host.image(f"/{i}.png", _png(i)), 1) for i in range(3)]
    indexer.sync([_feed(tmp_path / "feed.csv", rows)])
    rows[1] = ("s1", rows[1][1], 99)
    host.reset_counts()
    summary = indexer.sync([_feed(tmp_path / "feed.csv", rows)])
    assert (summary.metadata_updated, summary.fetched, summary.unchanged) == (1, 0, 3)
    assert {r["price"] for r in store.iter_rows("", ["*"]) if r["path"] == rows[1][1]} == {99}
    assert sum(host.bodies.values()) == 0


def test_an_empty_cell_is_no_value_and_an_unchanged_feed_rewrites_nothing(remote, tmp_path):
    indexer, store, host, _made = remote
    rows = [(f"s{i}", host.image(f"/{i}.png", _png(i)), "" if i == 0 else i) for i in range(3)]
    assert indexer.sync([_feed(tmp_path / "feed.csv", rows)]).added == 3
    for _ in range(2):  # the empty cell is "no value", stored as none: nothing to rewrite, run after run
        assert indexer.sync([_feed(tmp_path / "feed.csv", rows)]).metadata_updated == 0
    rows[1] = ("s1", rows[1][1], "")  # a cell emptied: its value goes, once
    assert indexer.sync([_feed(tmp_path / "feed.csv", rows)]).metadata_updated == 1
    assert indexer.sync([_feed(tmp_path / "feed.csv", rows)]).metadata_updated == 0
    assert {r["path"]: r.get("price") for r in store.iter_rows("", ["*"])} == {
        rows[0][1]: None, rows[1][1]: None, rows[2][1]: 2}


def test_a_column_the_feed_drops_leaves_its_rows_and_other_fields_stay(remote, tmp_path):
    from vitsearch.sources import Feed

    indexer, store, host, _made = remote
    urls = [host.image(f"/{i}.png", _png(i)) for i in range(3)]
    feed = tmp_path / "feed.csv"
    feed.write_text("sku,image,cat,price\n" + "".join(f"s{i},{u},bags,{i}\n" for i, u in enumerate(urls)))
    indexer.sync([Feed(feed, "image", "sku")])
    rows = {r["path"]: r for r in store.iter_rows("", ["*"])}
    store.upsert([{**rows[urls[0]], "label": "tote"}])  # a field of the user's (tag --write), not the feed's
    host.replace("/1.png", _png(41))  # and one image changes: its new row is made afresh
    feed.write_text("sku,image,price\n" + "".join(f"s{i},{u},{i}\n" for i, u in enumerate(urls)))
    summary = indexer.sync([Feed(feed, "image", "sku")])
    assert (summary.metadata_updated, summary.updated) == (2, 1)
    rows = {r["path"]: r for r in store.iter_rows("", ["*"])}
    assert [rows[u].get("cat") for u in urls] == [None, None, None]
    assert [rows[u]["price"] for u in urls] == [0, 1, 2] and rows[urls[0]]["label"] == "tote"
    assert store.count('cat == "bags"') == 0
    assert indexer.sync([Feed(feed, "image", "sku")]).metadata_updated == 0
    # a column added later is the feed's too: dropped again, it goes again
    feed.write_text("sku,image,price,cat\n" + "".join(f"s{i},{u},{i},shoes\n" for i, u in enumerate(urls)))
    assert indexer.sync([Feed(feed, "image", "sku")]).metadata_updated == 3
    feed.write_text("sku,image,price\n" + "".join(f"s{i},{u},{i}\n" for i, u in enumerate(urls)))
    assert indexer.sync([Feed(feed, "image", "sku")]).metadata_updated == 3
    assert store.count('cat == "shoes"') == 0 and store.count('label == "tote"') == 1


def test_images_read_from_the_fetch_cache_are_not_counted_as_downloaded(remote, tmp_path):
    from vitsearch.fetch import Fetcher, FetchOptions

    _, _, host, _ = remote
    feed = _feed(tmp_path / "feed.csv", [(f"s{i}", host.image(f"/{i}.png", _png(i)), i) for i in range(3)])
    with Fetcher(FetchOptions(retries=0, timeout=5, cache_dir=str(tmp_path / "cache"))) as fetcher:
        counts = []
        for name in ("a", "b"):  # the second store (a reindex, another collection) asks and reads the cache
            store = Store(str(tmp_path / "idx.db"), name)
            store.create({"model": "fake", "fingerprint": "f", "dim": 8})
            summary = Indexer(store, FakeRemoteEncoder, batch_size=4, fetcher=fetcher).sync([feed])
            counts.append((summary.added, summary.fetched))
            store.close()
    assert counts == [(3, 3), (3, 0)] and sum(host.bodies.values()) == 3


def test_a_damaged_line_of_a_json_lines_feed_costs_that_line(remote, tmp_path):
    indexer, _store, host, _made = remote
    urls = [host.image(f"/{i}.png", _png(i)) for i in range(3)]
    feed = tmp_path / "feed.jsonl"
    feed.write_text(f'{{"sku": "a", "image": "{urls[0]}"}}\n{{"sku": "b", "ima\n{{"sku": "c", "image": "{urls[2]}"}}\n')
    from vitsearch.sources import Feed

    summary = indexer.sync([Feed(feed, "image", "sku")])
    assert summary.added == 2 and [f.reason for f in summary.failed] == [summary.failed[0].reason]
    assert "line 2" in summary.failed[0].path + summary.failed[0].reason and "not JSON" in summary.failed[0].reason


def test_urls_that_leave_the_feed_are_removed_and_failing_ones_kept(remote, tmp_path):
    indexer, store, host, _made = remote
    rows = [(f"s{i}", host.image(f"/{i}.png", _png(i)), 1) for i in range(4)]
    indexer.sync([_feed(tmp_path / "feed.csv", rows)])
    assert indexer.sync([_feed(tmp_path / "feed.csv", rows[1:])], keep_missing=True).removed == 0
    host.status("/2.png", 404)  # still listed, failing today: its row stays
    summary = indexer.sync([_feed(tmp_path / "feed.csv", rows[1:])])
    assert summary.removed == 1 and [f.reason for f in summary.failed] == ["HTTP 404 Not Found"]
    assert _urls(store) == ["1.png", "2.png", "3.png"]


def test_the_same_picture_at_several_urls_is_embedded_once(remote, tmp_path):
    indexer, store, host, _made = remote
    rows = [(f"s{i}", host.image(f"/{i}.png", _png(7)), 1) for i in range(9)]  # more than one model batch
    summary = indexer.sync([_feed(tmp_path / "feed.csv", rows)])
    assert (summary.added, summary.embedded, summary.reused) == (9, 1, 8)  # one picture, embedded once
    assert store.count() == 9


def test_a_run_that_dies_half_way_is_resumed_without_duplicates(remote, tmp_path, monkeypatch):
    import vitsearch.indexer as indexer_module

    indexer, store, host, _made = remote
    monkeypatch.setattr(indexer_module, "FLUSH_ROWS", 4)  # write every model batch
    rows = [(f"s{i}", host.image(f"/{i}.png", _png(i)), 1) for i in range(12)]
    feed = _feed(tmp_path / "feed.csv", rows)

    class Dies(FakeRemoteEncoder):
        def embed_pixels(self, batch):
            if len(self.batches) == 2:
                raise KeyboardInterrupt  # as a Ctrl-C or a crash would, mid-run
            return super().embed_pixels(batch)

    with pytest.raises(KeyboardInterrupt):
        Indexer(store, Dies, batch_size=4, fetcher=indexer.fetcher).sync([feed])
    assert store.count() == 8
    host.reset_counts()
    summary = indexer.sync([feed])
    assert (summary.unchanged, summary.added, summary.fetched) == (8, 4, 4)
    assert sum(host.bodies.values()) == 4
    assert store.count() == 12 and len({r["path"] for r in store.iter_rows("", ["id", "path"])}) == 12


def test_undecodable_downloads_are_failures_with_the_servers_content_type(remote, tmp_path):
    indexer, _store, host, _made = remote
    rows = [("a", host.html("/page.jpg"), 1), ("b", host.image("/ok.png", _png(1)), 1)]
    summary = indexer.sync([_feed(tmp_path / "feed.csv", rows)])
    assert summary.added == 1
    assert [(f.path, f.reason) for f in summary.failed] == [
        (rows[0][1], "not a recognised image format (the server sent text/html)")]


# -- EXIF ------------------------------------------------------------------------------------------
def _row(store, path):
    return store.get([path_id(str(path))], ["*"])[0]


def test_exif_is_stored_and_refreshed_when_the_file_changes(setup):
    indexer, store, folder, _made = setup
    path = save_photo(folder / "trip.jpg", photo(30), "JPEG", taken="2023:07:01 12:00:00", offset="+02:00",
                      make="Canon", model="Canon EOS 5D Mark II", gps=(48.8584, 2.2945))
    indexer.sync([folder])
    row = _row(store, path)
    assert (row["camera_make"], row["taken_at"], row["gps_lon"]) == ("Canon", 1688205600, pytest.approx(2.2945))
    assert row["camera_words"] == ["canon", "eos", "5d", "mark", "ii"]
    assert _row(store, folder / "0.png")["exif_fields"] == []  # read, and nothing there

    save_photo(path, photo(31), "JPEG", make="Apple", model="iPhone 12")  # a new photo under the old name
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert indexer.sync([folder]).updated == 1
    row = _row(store, path)
    assert (row["camera_make"], row["camera_model"]) == ("Apple", "iPhone 12")
    # what the new file does not say is gone (null where Milvus Lite merges an upsert into the stored row)
    assert row.get("taken_at") is None and row.get("gps_lat") is None and row["camera_words"] == ["apple", "iphone", "12"]
    assert store.count(has_field("taken_at")) == 0 and store.count(has_field("camera_model")) == 1


def test_a_copy_or_move_reusing_a_vector_has_its_exif_too(setup):
    indexer, store, folder, _made = setup
    save_photo(folder / "a.jpg", photo(32), "JPEG", make="FUJIFILM", model="X100V")
    indexer.sync([folder])
    shutil.copy(folder / "a.jpg", folder / "sub" / "a-copy.jpg")
    summary = indexer.sync([folder])
    assert (summary.reused, summary.embedded) == (1, 0)
    assert _row(store, folder / "sub" / "a-copy.jpg")["camera_model"] == "X100V"


def test_a_users_metadata_of_the_same_name_wins_over_exif_and_stays(setup):
    indexer, store, folder, _made = setup
    path = save_photo(folder / "old.jpg", photo(33), "JPEG", make="Canon", model="EOS 300D", lens="EF 50mm")
    mine = {str(path): {"camera_make": "Grandpa's camera", "album": "1999"}}
    indexer.sync([folder], metadata=mine)
    row = _row(store, path)
    assert (row["camera_make"], row["camera_model"], row["lens"], row["album"]) == (
        "Grandpa's camera", "EOS 300D", "EF 50mm", "1999")
    assert "camera_make" not in row["exif_fields"] and "lens" in row["exif_fields"]
    assert row["camera_words"] == ["grandpa", "s", "camera", "eos", "300d"]

    save_photo(path, photo(34), "JPEG", make="Nikon", model="D70")  # changed content, no metadata given now
    os.utime(path, (time.time() + 5, time.time() + 5))
    indexer.sync([folder])
    row = _row(store, path)
    assert (row["camera_make"], row["camera_model"], row["album"]) == ("Grandpa's camera", "D70", "1999")
    assert row.get("lens") is None


def test_rows_written_before_exif_was_read_get_it_without_embedding(setup):
    indexer, store, folder, made = setup
    save_photo(folder / "a.jpg", photo(35), "JPEG", make="Apple", taken="2022:01:02 03:04:05")
    indexer.sync([folder], metadata={str(folder / "0.png"): {"label": "x"}})
    old = [{k: v for k, v in r.items() if k not in ("exif_fields", "camera_make", "camera_words", "taken_at")}
           for r in store.get([r["id"] for r in store.rows_under(str(folder))], ["*"])]
    store.delete([r["id"] for r in old])  # (an upsert would merge into the stored rows on Milvus Lite)
    store.upsert(old)  # as an earlier vitsearch wrote them
    summary = indexer.sync([folder])
    assert (summary.exif_added, summary.embedded, summary.unchanged, len(made)) == (6, 0, 6, 1)
    row = _row(store, folder / "a.jpg")
    assert (row["camera_make"], row["taken_at"], row["exif_fields"]) == (
        "Apple", 1641092645, ["camera_make", "camera_words", "taken_at"])
    assert _row(store, folder / "0.png")["label"] == "x"
    assert indexer.sync([folder]).exif_added == 0


def test_a_fetched_image_has_the_exif_of_its_bytes(remote, tmp_path):
    import io

    indexer, store, host, _made = remote
    buf = io.BytesIO()
    save_photo(buf, photo(36), "JPEG", make="Canon", model="EOS R5", taken="2024:05:06 07:08:09")
    rows = [("s0", host.image("/trip.jpg", buf.getvalue()), 1), ("s1", host.image("/plain.png", _png(37)), 1)]
    indexer.sync([_feed(tmp_path / "feed.csv", rows)])
    trip, plain = _row(store, rows[0][1]), _row(store, rows[1][1])
    assert (trip["camera_make"], trip["taken_at"], trip["sku"]) == ("Canon", 1714979289, "s0")
    assert trip["camera_words"] == ["canon", "eos", "r5"] and trip["feed"] and trip["etag"]
    assert plain["exif_fields"] == [] and plain.get("camera_make") is None


def test_a_large_file_that_is_no_image_is_refused_before_it_is_hashed(setup, monkeypatch):
    indexer, store, folder, _ = setup
    big = folder / "x.jpg"
    with open(big, "wb") as fh:
        fh.write(b"this is no image header\n")
        fh.truncate(2 * 1024**3)  # 2 GB, sparse: reading it whole would take seconds
    real = indexer_module.sha256_file
    hashed = []

    def sha256_file(path):
        assert os.path.basename(path) != "x.jpg", "x.jpg was read whole to be hashed"
        hashed.append(os.path.relpath(path, folder))
        return real(path)

    monkeypatch.setattr(indexer_module, "sha256_file", sha256_file)
    summary = indexer.sync([folder])
    assert summary.failed == [Failure(str(big), "not a recognised image format")]
    assert (summary.scanned, summary.added, summary.embedded) == (6, 5, 5)  # the real images: hashed and indexed
    assert sorted(hashed) == ["0.png", "1.png", "2.png", "3.png", "sub/9.png"]
    assert paths(store, folder) == ["0.png", "1.png", "2.png", "3.png", "sub/9.png"]
