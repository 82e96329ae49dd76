"""Sources: what each lists (keys and change tokens) and which stored rows it answers for."""

from __future__ import annotations

import io
import os

import pytest
from helpers import photo

from vitsearch.errors import VitsearchError
from vitsearch.fetch import Fetcher
from vitsearch.sources import Entry, Feed, Folders, Prefix, Url, open_sources
from vitsearch.store import Store


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    photo(seed).save(buf, "PNG")
    return buf.getvalue()


ROW = {"path": "s3://b/a.jpg", "size": 10, "mtime": 5.0, "etag": '"e1"'}


@pytest.mark.parametrize(
    "entry, matches",
    [
        (Entry("s3://b/a.jpg", 10, 5.0, '"e1"'), True),
        (Entry("s3://b/a.jpg", 10, 9.0, '"e1"'), True),  # the ETag decides where both have one
        (Entry("s3://b/a.jpg", 10, 5.0, '"e2"'), False),
        (Entry("s3://b/a.jpg", 11, 5.0, '"e1"'), False),
        (Entry("s3://b/a.jpg", 10, 5.0), True),  # no ETag: size and mtime
        (Entry("s3://b/a.jpg", 10, 6.0), False),
        (Entry("s3://b/a.jpg", 10, 0.0), False),  # an unknown mtime proves nothing
        (Entry("https://x/a.jpg"), False),  # a URL in a feed: only a conditional request can tell
    ],
)
def test_entry_matches_a_stored_row_by_etag_else_size_and_mtime(entry, matches):
    assert entry.matches(ROW) is matches
    assert entry.known is (entry.etag is not None or bool(entry.size is not None and entry.mtime is not None))


def test_local_entries_match_like_files():
    assert Entry("/x/a.jpg", 10, 5.0).matches({"size": 10, "mtime": 5.0})
    assert not Entry("/x/a.jpg", 10, 5.0).matches({"size": 10, "mtime": 5.5})
    assert not Entry("/x/a.jpg", 10, 5.0).remote and Entry("gs://b/a.jpg").remote


def test_source_fields_are_the_etag_and_the_feed():
    assert Entry("https://x/a.jpg", 1, 0.0, '"t"', feed="/f.csv").source_fields() == {"etag": '"t"', "feed": "/f.csv"}
    assert Entry("/x/a.jpg", 1, 0.0).source_fields() == {}


@pytest.mark.parametrize(
    "paths, kinds",
    [
        (["{tmp}/imgs"], ["Folders"]),
        (["https://cdn/a.jpg", "{tmp}/imgs", "{tmp}/feed.csv"], ["Folders", "Url", "Feed"]),
        (["s3://bucket/prefix/"], ["Prefix"]),
        (["file://{tmp}/imgs"], ["Folders"]),
    ],
)
def test_open_sources_tells_each_kind(tmp_path, paths, kinds):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "feed.csv").write_text("image\na.jpg\n")
    sources = open_sources([p.format(tmp=tmp_path) for p in paths], image_column="image" if "Feed" in kinds else None,
                           fetcher=Fetcher())
    assert [type(s).__name__ for s in sources] == kinds


@pytest.mark.parametrize(
    "paths, options, message",
    [
        (["{tmp}/feed.csv"], {}, "looks like a product feed: give --image-column"),
        (["{tmp}/imgs"], {"image_column": "image"}, "--image-column and --id-column apply to feeds"),
        (["{tmp}/nothing"], {}, "no such file or directory"),
        ([], {}, "no path given"),
    ],
)
def test_open_sources_errors(tmp_path, paths, options, message):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "feed.csv").write_text("image\na.jpg\n")
    with pytest.raises(VitsearchError, match=message):
        open_sources([p.format(tmp=tmp_path) for p in paths], fetcher=Fetcher(), **options)


def test_a_feed_lists_urls_as_given_and_local_paths_from_its_folder(tmp_path):
    (tmp_path / "img").mkdir()
    photo(1).save(tmp_path / "img" / "c.png")
    feed = tmp_path / "feed.csv"
    feed.write_text("sku,image,price\n"
                    "1,https://cdn.example/A.jpg?w=200,10\n"
                    "2,img/c.png,20\n"
                    "3,img/gone.png,30\n"
                    "4,,40\n"
                    "5,https://cdn.example/A.jpg?w=200,50\n")
    failures = []
    entries = list(Feed(feed, "image", "sku").entries(failures))
    assert [(e.path, e.fields["sku"], e.feed) for e in entries] == [
        ("https://cdn.example/A.jpg?w=200", "5", str(feed)),  # listed twice: the last row's fields
        (str(tmp_path / "img" / "c.png"), "2", str(feed)),
    ]
    assert entries[0].known is False and entries[1].size == os.path.getsize(tmp_path / "img" / "c.png")
    assert [(f.path, f.reason) for f in failures] == [
        (f"{feed} (line 5)", "no image in column 'image'"),
        (str(tmp_path / "img" / "gone.png"), "cannot stat: No such file or directory"),
    ]


def test_a_feed_answers_for_the_rows_it_listed_and_the_rows_of_its_images(tmp_path):
    store = Store(str(tmp_path / "s.db"), "t")
    store.create({"model": "m", "fingerprint": "f", "dim": 2})

    def row(i, path, **extra):
        return {"id": i, "path": path, "size": 1, "mtime": 0.0, "sha256": "x", "width": 1, "height": 1,
                "vector": [1.0, 0.0], **extra}

    feed = tmp_path / "feed.jsonl"
    feed.write_text('{"image": "https://x/listed.jpg"}\n')
    from vitsearch.store import path_id

    store.upsert([row(path_id("https://x/old.jpg"), "https://x/old.jpg", feed=str(feed)),
                  row(path_id("https://x/listed.jpg"), "https://x/listed.jpg", feed="/another/feed.csv"),
                  row(path_id("https://x/other.jpg"), "https://x/other.jpg", feed="/another/feed.csv")])
    source = Feed(feed, "image")
    list(source.entries([]))
    assert sorted(r["path"] for r in source.stored(store, ["id", "path", "feed"])) == [
        "https://x/listed.jpg", "https://x/old.jpg"]
    assert [r["path"] for r in Url("https://x/other.jpg").stored(store, ["id", "path"])] == ["https://x/other.jpg"]
    store.close()


def test_folders_list_files_with_their_stat(tmp_path):
    photo(1).save(tmp_path / "a.png")
    (entry,) = Folders([tmp_path]).entries([])
    assert (entry.path, entry.size) == (str(tmp_path / "a.png"), os.path.getsize(tmp_path / "a.png"))


def test_a_prefix_lists_image_objects_with_their_etags(s3, tmp_path):
    s3.mkdir("shop")
    s3.pipe_file("shop/cat/a.png", png(1))
    s3.pipe_file("shop/cat/sub/b.JPG", png(2))
    s3.pipe_file("shop/cat/readme.txt", b"words")
    s3.pipe_file("shop/catalogue/c.png", png(3))  # shares the prefix's letters, not its folder
    entries = list(Prefix("s3://shop/cat/", Fetcher()).entries([]))
    assert [e.path for e in entries] == ["s3://shop/cat/a.png", "s3://shop/cat/sub/b.JPG"]
    assert all(e.etag and e.etag.startswith('"') and e.size and e.mtime > 0 and e.known for e in entries)
    (single,) = Prefix("s3://shop/cat/readme.txt", Fetcher()).entries([])  # named directly: taken as it is
    assert single.path == "s3://shop/cat/readme.txt"
    with pytest.raises(VitsearchError, match="no such bucket or prefix: s3://nobucket"):
        list(Prefix("s3://nobucket/x", Fetcher()).entries([]))


def test_an_object_is_fetched_and_asked_whether_it_changed(s3):
    s3.mkdir("shop2")
    s3.pipe_file("shop2/a.png", png(1))
    fetcher = Fetcher()
    got = fetcher.open("s3://shop2/a.png")
    assert got.data == png(1) and got.etag and got.mtime
    assert fetcher.open("s3://shop2/a.png", etag=got.etag) is None
    s3.pipe_file("shop2/a.png", png(2))
    assert fetcher.open("s3://shop2/a.png", etag=got.etag).data == png(2)
    from vitsearch.fetch import FetchError

    with pytest.raises(FetchError, match="^not found$"):
        fetcher.open("s3://shop2/missing.png")


def test_a_prefix_that_cannot_be_listed_is_one_error_naming_it():
    from test_fetch import NoCredentialsError, fake_filesystem

    fake_filesystem("nocreds", NoCredentialsError("Unable to locate credentials"))
    prefix = Prefix("nocreds://bucket/prefix/", Fetcher())
    with pytest.raises(VitsearchError, match=r"^cannot list nocreds://bucket/prefix: no credentials for s3"):
        list(prefix.entries([]))
