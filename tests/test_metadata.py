"""Metadata files (CSV, JSON Lines) and their fields on indexed rows: stored, filtered, updated, kept."""

from __future__ import annotations

import json
import os
import uuid
from typing import ClassVar

import pytest
from helpers import photo

from vitsearch import VisualSearch
from vitsearch.errors import VitsearchError
from vitsearch.metadata import infer, read_metadata
from vitsearch.search import best_per_group, grouped_search


@pytest.mark.parametrize(
    "text, value",
    [("12", 12), ("-3", -3), ("4.5", 4.5), ("1e3", 1000.0), ("true", True), ("False", False), ("", None),
     ("  shoes ", "shoes"), ("nan", "nan"), ("0012a", "0012a"), ("99999999999999999999", 1e20)],
)
def test_cell_types_are_inferred(text, value):
    assert infer(text) == value and type(infer(text)) is type(value)


def test_csv_and_jsonl_give_the_same_fields(tmp_path):
    (tmp_path / "meta.csv").write_text("path,category,price,on_sale\nshoes/a.jpg,shoes,49.5,true\n/abs/b.jpg,bags,,false\n")
    (tmp_path / "meta.jsonl").write_text(
        '{"path": "shoes/a.jpg", "category": "shoes", "price": 49.5, "on_sale": true}\n\n'
        '{"path": "/abs/b.jpg", "category": "bags", "price": null, "on_sale": false}\n'
    )
    expected = {
        str(tmp_path / "shoes" / "a.jpg"): {"category": "shoes", "price": 49.5, "on_sale": True},
        "/abs/b.jpg": {"category": "bags", "on_sale": False},
    }
    assert read_metadata(tmp_path / "meta.csv") == expected
    assert read_metadata(tmp_path / "meta.jsonl") == expected


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("m.csv", "file,label\na.jpg,x\n", "'path'"),
        ("m.csv", "path,width\na.jpg,3\n", "vitsearch's own fields"),
        ("m.csv", "path,2nd label\na.jpg,3\n", "not a usable field name"),
        ("m.csv", "path,label\n,x\n", "empty path"),
        ("m.jsonl", '{"path": "a.jpg", "tags": ["x"]}\n', "string, number or boolean"),
        ("m.jsonl", "not json\n", "line 1: not JSON"),
        ("m.jsonl", '["a.jpg"]\n', "'path' string"),
        ("m.txt", "path\n", ".csv or .jsonl"),
    ],
)
def test_bad_metadata_files(tmp_path, name, content, words):
    (tmp_path / name).write_text(content)
    with pytest.raises(VitsearchError, match=words):
        read_metadata(tmp_path / name)


@pytest.fixture
def catalogue(tmp_path):
    folder = tmp_path / "catalogue"
    folder.mkdir()
    for i in range(4):
        photo(i).save(folder / f"item{i}.png")
    (folder / "meta.csv").write_text(
        "path,category,price\nitem0.png,shoes,30\nitem1.png,shoes,80\nitem2.png,bags,20\nnot-here.png,bags,1\n"
    )
    return folder


@pytest.fixture(params=["lite", pytest.param("server", marks=pytest.mark.server)])
def store(request, tmp_path):
    """(uri, collection) of a fresh collection on Milvus Lite, or on the Milvus server when there is one."""
    if request.param == "lite":
        yield str(tmp_path / "s.db"), "images"
        return
    uri = request.getfixturevalue("server_uri")
    name = f"meta_{uuid.uuid4().hex[:12]}"
    yield uri, name
    from vitsearch.store import Store

    Store(uri, name).drop()


def test_urls_and_object_uris_are_keys_as_given(tmp_path):
    (tmp_path / "m.csv").write_text("path,sku\nhttps://cdn.example/A.jpg?w=2,1\ns3://b/k.png,2\nlocal.png,3\n"
                                    "file:///x/y.png,4\n")
    assert read_metadata(tmp_path / "m.csv") == {
        "https://cdn.example/A.jpg?w=2": {"sku": 1}, "s3://b/k.png": {"sku": 2},
        str(tmp_path / "local.png"): {"sku": 3}, "/x/y.png": {"sku": 4}}


def test_index_stores_metadata_and_updates_it_without_embedding(store, catalogue, bundled_encoder):
    with VisualSearch(*store, encoder=bundled_encoder) as vs:
        summary = vs.index(catalogue, metadata=catalogue / "meta.csv")
        assert summary.added == 4 and summary.metadata_unmatched == 1
        hits = vs.query(str(catalogue / "item0.png"), k=4, filter='category == "shoes" and price < 50')
        assert [h.path for h in hits] == [str(catalogue / "item0.png")]
        assert hits[0].metadata["price"] == 30 and "category" in hits[0].as_dict()
        no_meta = vs.query(str(catalogue / "item3.png"), k=1)[0]
        assert no_meta.path.endswith("item3.png") and "category" not in no_meta.metadata

        (catalogue / "meta.csv").write_text("path,category,price\nitem0.png,shoes,25\nitem3.png,hats,5\n")
        again = vs.index(catalogue, metadata=catalogue / "meta.csv")
        assert again.embedded == 0 and again.metadata_updated == 2 and again.unchanged == 4
        assert vs.query(str(catalogue / "item3.png"), k=1, filter='category == "hats"')[0].path.endswith("item3.png")
        assert vs.index(catalogue, metadata=catalogue / "meta.csv").metadata_updated == 0

        photo(99).save(catalogue / "item1.png")  # new content, same file: its metadata stays
        os.utime(catalogue / "item1.png", (1, 1))
        changed = vs.index(catalogue)
        assert changed.updated == 1 and changed.embedded == 1
        hit = vs.query(str(catalogue / "item1.png"), k=1)[0]
        assert hit.path.endswith("item1.png") and hit.metadata["category"] == "shoes" and hit.metadata["price"] == 80


def test_metadata_from_the_command_line(tmp_path, catalogue, cli_encoder, monkeypatch):
    from click.testing import CliRunner

    from vitsearch.cli import main

    monkeypatch.setenv("VITSEARCH_URI", str(tmp_path / "s.db"))
    result = CliRunner().invoke(main, ["index", str(catalogue), "--metadata", str(catalogue / "meta.csv"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metadata_unmatched"] == 1
    query = CliRunner().invoke(main, ["query", str(catalogue / "item2.png"), "--filter", 'category == "bags"', "--json"])
    record = json.loads(query.stdout)
    assert [r["path"] for r in record["results"]] == [str(catalogue / "item2.png")]
    assert record["results"][0]["price"] == 20
    bad = tmp_path / "bad.csv"
    bad.write_text("path,id\nx.png,1\n")
    result = CliRunner().invoke(main, ["index", str(catalogue), "--metadata", str(bad)])
    assert result.exit_code == 1 and "vitsearch's own fields" in result.stderr


def test_best_per_group_keeps_the_first_row_of_each_value():
    rows = [{"id": 1, "pid": "a"}, {"id": 2, "pid": "a"}, {"id": 3}, {"id": 4, "pid": "b"}, {"id": 5, "pid": 7}]
    assert [r["id"] for r in best_per_group(rows, "pid", 3)] == [1, 3, 4]
    assert [r["id"] for r in best_per_group(rows, "pid", 10)] == [1, 3, 4, 5]


def test_grouped_search_fetches_more_until_it_has_k_groups():
    class Store:  # 100 rows of one product, then one row each of two others
        calls: ClassVar[list] = []

        def search(self, vectors, limit, filter=None):
            self.calls.append(limit)
            rows = [{"id": i, "pid": "same"} for i in range(100)] + [{"id": 100, "pid": "x"}, {"id": 101, "pid": "y"}]
            return [rows[:limit] for _ in vectors]

    store = Store()
    got = grouped_search(store, [[1.0], [0.5]], 3, "pid")
    assert [[r["id"] for r in rows] for rows in got] == [[0, 100, 101], [0, 100, 101]]
    assert store.calls == [24, 96, 384]
    with pytest.raises(VitsearchError, match="not a usable field name"):
        grouped_search(store, [[1.0]], 3, "bad name")


def test_a_search_under_a_score_floor_stops_where_the_scores_fall_below_it():
    class Store:  # 100 rows of one product, scores falling from 1.0 by 0.005, then two others far below
        calls: ClassVar[list] = []

        def search(self, vectors, limit, filter=None):
            self.calls.append(limit)
            rows = [{"id": i, "pid": "same", "score": 1.0 - i / 200} for i in range(100)]
            rows += [{"id": 100, "pid": "x", "score": 0.1}, {"id": 101, "pid": "y", "score": 0.05}]
            return [rows[:limit] for _ in vectors]

    store = Store()
    assert [r["id"] for r in grouped_search(store, [[1.0]], 3, "pid", min_score=0.5)[0]] == [0]
    assert store.calls == [24, 96, 384]  # every page so far still ended above the floor
    store.calls.clear()
    assert [r["id"] for r in grouped_search(store, [[1.0]], 3, "pid", min_score=0.95)[0]] == [0]
    assert store.calls == [24]  # the first page ends at 0.885: no row further down can reach 0.95
    store.calls.clear()
    assert [r["id"] for r in grouped_search(store, [[1.0]], 3, "pid", min_score=0.1)[0]] == [0, 100]


def test_group_by_returns_k_distinct_products(tmp_path, bundled_encoder):
    folder = tmp_path / "shop"
    folder.mkdir()
    meta = {}
    for product in range(4):
        for view in range(3):
            path = folder / f"p{product}_{view}.png"
            photo(10 * product + view).save(path)
            meta[str(path)] = {"product_id": f"P{product}"}
    photo(77).save(folder / "loose.png")  # no product: a group of its own
    with VisualSearch(str(tmp_path / "s.db"), encoder=bundled_encoder) as vs:
        vs.index(folder, metadata=meta)
        query = str(folder / "p0_0.png")
        everything = vs.query(query, k=13)
        grouped = vs.query(query, k=4, group_by="product_id")
        expected = best_per_group([{"id": h.id, **h.metadata} for h in everything], "product_id", 4)
        assert [h.id for h in grouped] == [row["id"] for row in expected]
        assert grouped[0].path == query and [h.rank for h in grouped] == [1, 2, 3, 4]
        values = [h.metadata.get("product_id", h.path) for h in grouped]
        assert len(set(values)) == 4
        shoes = vs.query(query, k=2, group_by="product_id", filter='product_id in ["P1", "P2"]')
        assert sorted(h.metadata["product_id"] for h in shoes) == ["P1", "P2"]
