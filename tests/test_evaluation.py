"""Retrieval metrics against hand-computed values, near-duplicate recall, and `evaluate` end to end."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers import SAMPLES, labelled_folder

from vitsearch.data import read_images
from vitsearch.errors import UsageError, VitsearchError
from vitsearch.evaluation import evaluate, near_dup_recall, retrieval_metrics, sample


def on_circle(degrees) -> np.ndarray:
    rad = np.radians(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


def test_metrics_match_hand_computed_values():
    # angles and classes chosen so that no two distances tie:
    #   query 0 (A)  ranks A B B B C      query 1 (A)  ranks A B B B C
    #   query 2 (B)  ranks A B A B C      query 3 (B)  ranks B B A A C
    #   query 4 (B)  ranks B B C A A      query 5 (C)  has no other C: left out
    x = on_circle([0, 25, 60, 100, 130, 205])
    got = retrieval_metrics(x, [0, 0, 1, 1, 1, 2], k=2)
    assert got["n"] == 6 and got["queries"] == 5 and got["k"] == 2
    assert got["precision_at_1"] == pytest.approx(4 / 5)
    assert got["precision_at_k"] == pytest.approx((0.5 + 0.5 + 0.5 + 1 + 1) / 5)
    assert got["recall_at_k"] == pytest.approx(1.0)
    # AP@R: queries 0, 1 (R=1): 1; query 2 (R=2): hit at rank 2 only -> (1/2)/2; queries 3, 4: 1
    assert got["map_at_r"] == pytest.approx((1 + 1 + 0.25 + 1 + 1) / 5)


def test_per_query_precision_is_each_query_with_a_classmate_in_row_order():
    x = on_circle([0, 25, 60, 100, 130, 205])  # the layout of the test above: query 5 has no classmate
    got = retrieval_metrics(x, [0, 0, 1, 1, 1, 2], k=2, per_query=True)
    np.testing.assert_allclose(got["per_query_precision_at_k"], [0.5, 0.5, 0.5, 1, 1])
    assert got["per_query_precision_at_k"].mean() == pytest.approx(got["precision_at_k"])
    assert "per_query_precision_at_k" not in retrieval_metrics(x, [0, 0, 1, 1, 1, 2], k=2)


def test_model_table_interval_is_paired_and_covers_the_difference():
    from helpers import ROOT, load_module

    table = load_module("model_table_for_tests", ROOT / "scripts" / "model_table.py")
    rng = np.random.default_rng(1)
    theirs = rng.random(800)
    same = table.paired_interval(theirs + 0.02, theirs)  # a constant gain: no spread at all
    assert same == {"difference": 0.02, "low": 0.02, "high": 0.02}
    noisy = table.paired_interval(theirs + 0.02 + rng.normal(0, 0.2, 800), theirs)
    assert noisy["low"] < noisy["difference"] < noisy["high"]
    assert 0.02 - 0.03 < noisy["low"] and noisy["high"] < 0.02 + 0.03  # about two standard errors (0.007) each side


def test_recall_at_k_counts_any_hit_in_the_top_k():
    x = on_circle([0, 30, 35, 100])
    got = retrieval_metrics(x, [0, 1, 1, 0], k=2)
    # queries 0 and 3 (class 0) find each other only at rank 3; queries 1 and 2 find each other first
    assert got["recall_at_k"] == pytest.approx(0.5)
    assert got["precision_at_1"] == pytest.approx(0.5)


def test_metrics_need_a_partner_for_some_query():
    with pytest.raises(VitsearchError, match="at least two images"):
        retrieval_metrics(on_circle([0, 90]), [0, 1], k=1)
    with pytest.raises(ValueError):
        retrieval_metrics(on_circle([0, 90]), [0, 0], k=0)


def test_near_dup_recall_ignores_sibling_copies():
    # rows: originals at 0° and 90°, copies of 0° at 10°, 50°, 12°; a copy of 90° at 60°
    x = on_circle([0, 90, 10, 50, 60, 12])
    source = [0, 1, 0, 0, 1, 0]
    is_copy = [False, False, True, True, True, True]
    hits, alone = near_dup_recall(x, source, is_copy)
    # 10° would find its sibling at 12° first if siblings counted; 50° and 60° are nearer other copies
    assert hits.tolist() == [True, False, False, True]
    # with only the originals as candidates, 50° finds 90° (the wrong one) and 60° finds 90° (its own)
    assert alone.tolist() == [True, False, True, True]


def test_sample_is_balanced_and_reproducible(tmp_path):
    data = read_images(labelled_folder(tmp_path / "d", per_class=10))
    a, b = sample(data, 12, seed=3), sample(data, 12, seed=3)
    assert a.paths == b.paths and len(a) == 12
    assert sorted(a.class_counts().values()) == [4, 4, 4]
    assert sample(data, 12, seed=4).paths != a.paths
    assert sample(data, None) is data


@pytest.mark.parametrize("limit", [5, 10, 13, 50, 119])
def test_a_limit_samples_exactly_that_many_images_still_balanced(limit):
    from vitsearch.data import ImageSet

    counts = (30, 30, 30, 30) if limit != 13 else (50, 30, 20, 20)
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    data = ImageSet("d", [f"{i}.png" for i in range(len(labels))], labels, ["a", "b", "c", "d"])
    got = sample(data, limit, seed=1)
    assert len(got) == limit  # was 8 for 10, 48 for 50: each class's share rounded down
    per_class = list(got.class_counts().values())
    share = [n * limit / len(data) for n in counts]
    assert all(abs(have - want) < 1 for have, want in zip(per_class, share)) or limit < 2 * len(counts)


def test_evaluate_a_labelled_folder(tmp_path, tiny_models):
    data = labelled_folder(tmp_path / "d", per_class=4)
    (data / "hstripes" / "broken.png").write_bytes(b"not a png")
    report = evaluate(data, model=str(tiny_models["vit"]), k=3, device="cpu", num_workers=0)
    d = report.as_dict()
    for key in ("n", "k", "precision_at_1", "precision_at_k", "recall_at_k", "map_at_r"):
        assert key in d
    assert d["n"] == 12 and d["k"] == 3 and d["classes"] == 3
    assert [f["path"] for f in d["failed"]] == [str(data / "hstripes" / "broken.png")]
    assert 0.0 <= d["precision_at_k"] <= 1.0 and 0.0 <= d["map_at_r"] <= 1.0


def test_near_dup_on_unlabelled_images(tmp_path, bundled_encoder):
    folder = tmp_path / "flat"
    folder.mkdir()
    for name in ("chelsea", "coffee", "astronaut", "rocket", "horse", "camera"):
        shutil.copy(SAMPLES / "photos" / f"{name}.jpg", folder)
    with pytest.raises(VitsearchError, match="no labels"):
        evaluate(folder, model=bundled_encoder)
    report = evaluate(folder, model=bundled_encoder, near_dup=True, seed=1)
    nd = report.near_dup
    assert nd["originals"] == 6 and nd["copies"] == 36
    assert set(nd["by_edit"]) == {"crop", "rotate", "jpeg", "jitter", "grayscale", "downscale"}
    assert nd["recall_at_1"] >= 0.8  # six different photos: copies find their original
    assert nd["recall_at_1_originals_only"] >= nd["recall_at_1"]  # fewer candidates, never fewer hits
    assert set(nd["by_edit_originals_only"]) == set(nd["by_edit"])
    assert "precision_at_1" not in report.as_dict()


def test_the_near_duplicate_edits_of_a_large_picture_are_as_quiet_as_indexing_it(tmp_path, monkeypatch,
                                                                                 bundled_encoder):
    import warnings

    from PIL import Image

    from vitsearch.evaluation import near_dup_report

    path = str(tmp_path / "large.png")
    Image.new("RGB", (60, 30), (90, 120, 150)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL warns above this, so 60 x 30 is "large"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        vectors = bundled_encoder.encode([path])
        near_dup_report(bundled_encoder, [path], vectors)
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]


def test_images_beside_class_folders_are_reported_and_used_by_the_near_duplicate_test(tmp_path, bundled_encoder):
    for name in ("cats", "rockets"):
        (tmp_path / name).mkdir()
    shutil.copy(SAMPLES / "photos" / "chelsea.jpg", tmp_path / "cats")
    shutil.copy(SAMPLES / "near_duplicates" / "chelsea_crop.jpg", tmp_path / "cats")
    shutil.copy(SAMPLES / "photos" / "rocket.jpg", tmp_path / "rockets")
    shutil.copy(SAMPLES / "near_duplicates" / "rocket_crop.jpg", tmp_path / "rockets")
    for name in ("coffee", "horse", "astronaut"):
        shutil.copy(SAMPLES / "photos" / f"{name}.jpg", tmp_path)
    images = read_images(tmp_path)
    assert images.classes == ["cats", "rockets"] and len(images.paths) == 4 and len(images.loose) == 3
    assert [f.reason for f in images.failed] == [
        "3 image(s) at the top level, outside every class folder, have no class: only a near-duplicate test uses them"]
    report = evaluate(str(tmp_path), model=bundled_encoder, k=1, near_dup=True)
    assert report.n == 4 and report.metrics["precision_at_1"] == 1.0
    assert report.near_dup["copies"] == 7 * 6  # every image, each copied once per edit


@pytest.mark.parametrize(
    "options, message",
    [
        ({"limit": 2.5}, "limit must be a whole number"),  # was a TypeError
        ({"limit": 1}, "limit must be at least 2"),
        ({"num_workers": -1}, "num_workers must be at least 0"),  # was a ValueError from the data loader
        ({"batch_size": 0}, "batch_size must be at least 1"),
    ],
)
def test_bad_arguments_are_usage_errors_before_any_work(tmp_path, options, message):
    with pytest.raises(UsageError, match=message):  # before the data (which does not exist) is read
        evaluate(str(tmp_path / "no-such-folder"), **options)
