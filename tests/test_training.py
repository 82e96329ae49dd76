"""Training with the shared core: loss goes down, the saved model works everywhere, resume is exact."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import labelled_folder, photo
from safetensors.torch import load_file

from vitsearch.checkpoint import RECORD_FILE, load_spec
from vitsearch.data import read_images
from vitsearch.embed import Encoder
from vitsearch.errors import ModelError, UsageError, VitsearchError
from vitsearch.model import load_backbone
from vitsearch.training import (
    CHECKPOINT_DIR,
    TrainingInterrupted,
    TrainOptions,
    param_groups,
    train,
    warmup_cosine,
)

FAST = {"epochs": 3, "batch_size": 8, "lr": 1e-3, "num_workers": 0, "device": "cpu", "val_fraction": 0.2}


@pytest.fixture
def data(tmp_path):
    return labelled_folder(tmp_path / "data", per_class=10)


def weights(out) -> dict:
    return load_file(os.path.join(out, "model.safetensors"))


def same_weights(a, b) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_training_lowers_the_loss_and_saves_a_model_every_command_loads(tmp_path, data, tiny_models):
    events = []
    result = train(data, tmp_path / "out", base=str(tiny_models["vit"]), progress=events.append, **{**FAST, "epochs": 5})
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 5 and losses[-1] < 0.7 * losses[0]
    assert result.train_images == 24 and result.val_images == 6 and result.classes == 3
    assert next(e.kind for e in events) == "start" and sum(e.kind == "epoch" for e in events) == 5
    assert all(h["val"] and 0 <= h["val"]["precision_at_k"] <= 1 for h in result.history)

    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json", RECORD_FILE]
    record = json.loads((out / RECORD_FILE).read_text())
    assert record["vitsearch_version"] and record["loss"] == "normsoftmax" and record["classes"] == ["checks", "hstripes", "vstripes"]
    assert not any("proxies" in k for k in weights(out))  # the training head is dropped

    from transformers import AutoImageProcessor, AutoModel

    AutoModel.from_pretrained(out)  # what the hub and transformers users load
    AutoImageProcessor.from_pretrained(out)
    encoder = Encoder(str(out), device="cpu", num_workers=0)
    vectors = encoder.encode([photo(1), photo(2)])
    assert vectors.shape == (2, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)

    from vitsearch import VisualSearch

    with VisualSearch(str(tmp_path / "s.db"), model=str(out), device="cpu", num_workers=0) as vs:
        assert vs.index([data]).added == 30
        hits = vs.query(str(data / "checks" / "checks_0.png"), k=3)
        assert hits[0].path == str(data / "checks" / "checks_0.png")


def test_same_seed_same_model(tmp_path, data, tiny_models):
    train(data, tmp_path / "a", base=str(tiny_models["vit"]), seed=3, **FAST)
    train(data, tmp_path / "b", base=str(tiny_models["vit"]), seed=3, **FAST)
    train(data, tmp_path / "c", base=str(tiny_models["vit"]), seed=4, **FAST)
    assert same_weights(tmp_path / "a", tmp_path / "b")
    assert not same_weights(tmp_path / "a", tmp_path / "c")


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, data, tiny_models):
    base = {"base": str(tiny_models["vit"]), **FAST, "accumulate": 2}
    train(data, tmp_path / "straight", **base)

    def stop_at_step_2(event):
        if event.kind == "step" and event.info["epoch"] == 1 and event.info["step"] == 3:
            raise KeyboardInterrupt  # what Ctrl-C does, at a step boundary

    out = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(data, out, progress=stop_at_step_2, **base)
    assert (out / CHECKPOINT_DIR / "state.pt").is_file() and not (out / "model.safetensors").exists()
    with pytest.raises(VitsearchError, match="interrupted run"):
        train(data, out, **base)
    with pytest.raises(ValueError, match="lr was"):
        train(data, out, resume=True, lr=0.5)
    events = []
    result = train(data, out, resume=True, progress=events.append)
    assert events[0].info["epoch"] == 1 and events[0].info["position"] == 2  # epoch 2, after its first optimiser step
    assert result.epochs == 3 and len(result.history) == 3
    assert same_weights(tmp_path / "straight", out)
    assert not (out / CHECKPOINT_DIR).exists()


def test_a_run_stopped_on_an_epochs_last_step_resumes_with_that_epochs_whole_record(tmp_path, data, tiny_models):
    base = {"base": str(tiny_models["vit"]), **FAST}
    straight = train(data, tmp_path / "straight", **base)

    def stop_on_the_last_step(event):
        if event.kind == "step" and event.info["epoch"] == 0 and event.info["batch"] == event.info["batches"]:
            raise KeyboardInterrupt

    out = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted):
        train(data, out, progress=stop_on_the_last_step, **base)
    resumed = train(data, out, resume=True)
    first, again = straight.history[0], resumed.history[0]
    assert again["loss"] == pytest.approx(first["loss"], rel=1e-5)  # was NaN: an epoch resumed with no step left
    assert again["images_per_second"] and again["seconds"] > 0


def test_resume_needs_a_checkpoint_and_the_same_data(tmp_path, data, tiny_models):
    with pytest.raises(VitsearchError, match="nothing to resume"):
        train(data, tmp_path / "none", resume=True)

    def stop(event):
        if event.kind == "step":
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        train(data, tmp_path / "out", base=str(tiny_models["vit"]), progress=stop, **FAST)
    (data / "checks").rename(data / "swap")  # two classes' folders swapped: the same counts and class names
    (data / "hstripes").rename(data / "checks")
    (data / "swap").rename(data / "hstripes")
    with pytest.raises(VitsearchError, match="data changed .* other files"):  # it resumed on other data
        train(data, tmp_path / "out", resume=True)
    photo(9).save(data / "checks" / "new.png")
    with pytest.raises(VitsearchError, match="data changed"):
        train(data, tmp_path / "out", resume=True)


def test_a_damaged_checkpoint_is_one_line_that_says_how_to_start_again(tmp_path, data):
    (tmp_path / "out" / CHECKPOINT_DIR).mkdir(parents=True)
    (tmp_path / "out" / CHECKPOINT_DIR / "state.pt").write_text("garbage\n")
    with pytest.raises(VitsearchError) as caught:
        train(data, tmp_path / "out", resume=True)
    message = str(caught.value)
    assert re.fullmatch(r"the checkpoint .*state.pt is damaged: start again without --resume \(and with "
                        r"--overwrite\), or remove .*checkpoint", message), message
    assert "weights_only" not in message  # torch's paragraphs advised loading it unsafely


def test_a_checkpoint_that_predates_the_data_fingerprint_still_resumes(tmp_path, data, tiny_models):
    def stop(event):
        if event.kind == "step":
            raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(TrainingInterrupted):
        train(data, out, base=str(tiny_models["vit"]), progress=stop, **{**FAST, "epochs": 1})
    path = out / CHECKPOINT_DIR / "state.pt"
    state = torch.load(path, weights_only=True)
    del state["data"]["files"]  # what vitsearch wrote before it recorded the files
    torch.save(state, path)
    assert train(data, out, resume=True).epochs == 1


def test_out_must_be_free(tmp_path, data, tiny_models):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(VitsearchError, match="not empty"):
        train(data, tmp_path / "full", base=str(tiny_models["vit"]), **FAST)
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    with pytest.raises(ValueError, match="unknown training option"):
        train(data, tmp_path / "o", learning_rate=1)


def test_an_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, data, tiny_models, monkeypatch):
    import builtins
    import errno

    (tmp_path / "file").write_text("a file")
    events = []
    with pytest.raises(VitsearchError, match=r"cannot write the model to .*file/sub \(.*Not a directory\)"):
        train(data, tmp_path / "file" / "sub", base=str(tiny_models["vit"]), progress=events.append, **FAST)

    locked = tmp_path / "locked"
    locked.mkdir()
    real_open = builtins.open

    def read_only_open(file, mode="r", *args, **kwargs):  # the tests run as root: a chmod would not stop them
        if str(file).startswith(str(locked)) and any(c in mode for c in "wax+"):
            raise OSError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only_open)
    with pytest.raises(VitsearchError, match=r"cannot write the model to .*locked \(.*Permission denied\)") as caught:
        train(data, locked, base=str(tiny_models["vit"]), progress=events.append, **FAST)
    assert "\n" not in str(caught.value) and not events  # refused before the model was loaded or a step taken
    assert os.listdir(locked) == []  # and the checkpoint folder made to try is gone


def test_validation_k_is_capped_by_the_held_out_class_size_so_a_perfect_model_scores_1(tmp_path, tiny_models):
    data = labelled_folder(tmp_path / "data", per_class=20)  # 20 % held out: 4 images a class, 3 others each
    result = train(data, tmp_path / "out", base=str(tiny_models["vit"]), **{**FAST, "epochs": 1, "val_k": 7})
    val = result.history[0]["val"]
    assert val["k"] == 3  # was 7: capped by the 12 held-out images only, so P@7 could not pass 3/7
    assert "P@3" in (tmp_path / "out" / "README.md").read_text()


def test_every_broken_image_is_listed_also_those_held_out(tmp_path, tiny_models):
    data = labelled_folder(tmp_path / "data", per_class=4)
    broken = {str(data / name / "broken.png") for name in ("hstripes", "vstripes", "checks")}
    for path in broken:
        with open(path, "wb") as fh:
            fh.write(b"\x89PNG\r\n\x1a\n garbage")
    result = train(data, tmp_path / "out", base=str(tiny_models["vit"]), **{**FAST, "epochs": 1, "val_fraction": 0.5})
    assert {f.path for f in result.failed} == broken  # those in the validation split were not listed


def test_a_broken_image_that_no_epoch_draws_is_listed_too(tmp_path, tiny_models):
    from vitsearch.training import _epoch_batches

    data = labelled_folder(tmp_path / "data", per_class=4)
    for name in ("hstripes", "vstripes", "checks"):
        with open(data / name / "broken.png", "wb") as fh:
            fh.write(b"\x89PNG\r\n\x1a\n garbage")
    paths = read_images(data).paths
    broken = {i for i, p in enumerate(paths) if p.endswith("broken.png")}
    # one epoch of one batch of 8 from 15 images: the other 7 are a ragged tail no step decodes
    seed = next(s for s in range(50) if broken - set(_epoch_batches(len(paths), 8, s, 0)[0]))
    result = train(data, tmp_path / "out", base=str(tiny_models["vit"]),
                   **{**FAST, "epochs": 1, "val_fraction": 0.0, "seed": seed})
    assert {f.path for f in result.failed} == {paths[i] for i in broken}


def test_fine_tuning_a_model_folder_in_place_is_refused_up_front(tmp_path, data, tiny_models):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_models["vit"], folder)
    before = weights(folder)
    with pytest.raises(ValueError, match="the base model and --out are the same folder"):  # was SameFileError at the end
        train(data, folder, base=str(folder) + "/", overwrite=True, **FAST)
    assert sorted(weights(folder)) == sorted(before) and all(torch.equal(weights(folder)[k], before[k]) for k in before)
    assert not (folder / CHECKPOINT_DIR).exists()


def test_train_under_torchrun_is_refused(tmp_path, data, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets in each process
    with pytest.raises(ValueError, match=r"under torchrun \(WORLD_SIZE=2\) every process would train"):
        train(data, tmp_path / "out", **FAST)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"epochs": 0}, "epochs"),
        ({"loss": "triplet"}, "unknown loss"),
        ({"from_scratch": "huge"}, "unknown size"),
        ({"layer_decay": 1.5}, "layer_decay"),
        ({"warmup": 1.0}, "warmup"),
        ({"save_dtype": "int8"}, "save dtype"),
        ({"base": "x", "from_scratch": "tiny"}, "not both"),
        ({"instance_weight": -1.0}, "instance.weight"),
        ({"weight_decay": -1.0}, "weight_decay must be at least 0"),
        ({"clip_grad": -1.0}, "clip_grad must be at least 0"),  # a negative norm would flip the gradients
        ({"temperature": 0.0}, "temperature must be more than 0"),  # was taken as "the default"
        ({"epochs": 1.5}, "epochs must be a whole number"),
        ({"augment": "heavy"}, "unknown augmentation"),
        ({"lr": float("nan")}, "lr must be a finite number, not nan"),  # was taken: NaN passes every bound
        ({"temperature": float("inf")}, "temperature must be a finite number"),
        ({"warmup": float("nan")}, "warmup must be a finite number"),
        ({"num_workers": -1}, "num_workers must be at least 0"),  # was a ValueError once the model had loaded
        ({"base": 5}, "base must be a string, not 5"),  # was a TypeError
        ({"loss": "supcon", "batch_size": 1}, "supcon compares the images of a batch"),  # trained with loss 0
        ({"instance_weight": 1.0, "batch_size": 1}, "the instance term compares"),
    ],
)
def test_bad_options(tmp_path, data, options, message):
    with pytest.raises(UsageError, match=message):
        train(data, tmp_path / "o", **options)
    assert not (tmp_path / "o").exists()


def test_a_run_that_diverges_stops_at_once_and_leaves_no_unfinishable_checkpoint(tmp_path, data, tiny_models, monkeypatch):
    import vitsearch.training

    real_loss = vitsearch.training._Run._loss
    calls = []

    def diverging_loss(self, *args):
        calls.append(1)
        loss = real_loss(self, *args)
        return loss * float("nan") if len(calls) >= 5 else loss  # the fifth batch: epoch 2 (3 batches an epoch)

    monkeypatch.setattr(vitsearch.training._Run, "_loss", diverging_loss)
    out = tmp_path / "out"
    events = []
    with pytest.raises(VitsearchError, match=r"^training diverged in epoch 2, batch 2: the loss is nan; "
                                             r"lower --lr \(it was 0.001\)$"):
        train(data, out, base=str(tiny_models["vit"]), progress=events.append, **FAST)
    assert len(calls) == 5 and sum(e.kind == "epoch" for e in events) == 1  # no further step, no epoch line
    assert not (out / CHECKPOINT_DIR).exists()  # epoch 1's checkpoint is gone: resuming it would diverge again
    monkeypatch.setattr(vitsearch.training._Run, "_loss", real_loss)
    assert train(data, out, base=str(tiny_models["vit"]), **FAST).epochs == 3  # the same command runs again

    def stop(event):
        if event.kind == "step":
            raise KeyboardInterrupt

    other = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted):
        train(data, other, base=str(tiny_models["vit"]), progress=stop, **FAST)
    calls.clear()
    monkeypatch.setattr(vitsearch.training._Run, "_loss", diverging_loss)
    with pytest.raises(VitsearchError, match="diverged in epoch 2, batch 3: .* the checkpoint in .* is kept"):
        train(data, other, resume=True)
    # a resumed run's checkpoint is the user's: kept, at its last good save (the end of epoch 1)
    assert torch.load(other / CHECKPOINT_DIR / "state.pt", weights_only=True)["epoch"] == 1


def test_weights_that_are_not_finite_are_named_so_when_saving(tmp_path, tiny_models):
    from vitsearch.model import save_backbone

    backbone = load_backbone(load_spec(str(tiny_models["vit"])))
    with torch.no_grad():
        next(backbone.parameters()).fill_(float("nan"))
    with pytest.raises(ModelError, match="holds NaN or infinite values"):  # was "cannot save in float32 … overflows it"
        save_backbone(backbone, str(tmp_path / "out"))


@pytest.mark.parametrize("kind", ["vit", "clip"])  # the built-in core's writer and transformers' save_pretrained
def test_saved_weights_are_readable_by_others_as_the_umask_allows(tmp_path, tiny_models, kind):
    from vitsearch.model import save_backbone

    previous = os.umask(0o022)
    try:
        save_backbone(load_backbone(load_spec(str(tiny_models[kind]))), str(tmp_path / "out"))
    finally:
        os.umask(previous)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "out").iterdir()}
    assert modes["model.safetensors"] == modes["config.json"] == "0o644", modes  # safetensors wrote 0o600


def test_training_at_another_resolution_resamples_positions(tmp_path, data, tiny_models):
    out = tmp_path / "out"
    train(data, out, base=str(tiny_models["dinov2"]), image_size=48, save_dtype="fp16", **{**FAST, "epochs": 1})
    spec = load_spec(str(out))
    assert spec.preprocessing.input_size == (48, 48) and spec.preprocessing.shortest_edge == 60  # 40/32 margin kept
    assert json.loads((out / "config.json").read_text())["image_size"] == 48
    assert weights(out)["embeddings.position_embeddings"].shape == (1, 1 + 36, 32)
    assert weights(out)["embeddings.position_embeddings"].dtype == torch.float16
    vector = Encoder(spec, device="cpu").encode(photo(3))
    assert vector.shape == (32,) and np.isfinite(vector).all()


def test_whole_image_training_saves_a_model_that_sees_the_whole_picture(tmp_path, data, tiny_models):
    out = tmp_path / "whole"
    train(data, out, base=str(tiny_models["dinov2"]), image_size=48, whole_image=True, **{**FAST, "epochs": 1})
    prep = load_spec(str(out)).preprocessing
    assert (prep.height, prep.width, prep.crop, prep.shortest_edge) == (48, 48, None, None)
    # a wide picture is squashed, not cut: its right edge still reaches the input
    wide = np.zeros((20, 80, 3), np.uint8)
    wide[:, -8:] = 255
    from PIL import Image

    pixels = prep.to_uint8(Image.fromarray(wide))
    assert pixels.shape == (3, 48, 48) and pixels[:, :, -2:].mean() > 200
    cropped = load_spec(str(tiny_models["dinov2"])).preprocessing.at_size(48).to_uint8(Image.fromarray(wide))
    assert cropped[:, :, -2:].mean() < 50  # the base model's centre crop loses it


def test_unlabelled_images_train_self_supervised(tmp_path, tiny_models):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(12):
        photo(i).save(flat / f"{i}.jpg")
    (flat / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    result = train(flat, tmp_path / "out", base=str(tiny_models["clip"]), **FAST)
    assert result.loss == "infonce" and result.val_images == 0 and result.classes == 0
    assert [f.path for f in result.failed] == [str(flat / "broken.jpg")]
    assert all(np.isfinite(h["loss"]) for h in result.history)
    load_backbone(load_spec(str(tmp_path / "out")))
    with pytest.raises(VitsearchError, match="needs labels"):
        train(flat, tmp_path / "o2", base=str(tiny_models["clip"]), loss="supcon", **FAST)


def test_instance_term_with_robust_views(tmp_path, data, tiny_models):
    """Class loss + InfoNCE on two robust views: it trains, it is recorded, and it is deterministic."""
    options = {**FAST, "base": str(tiny_models["vit"]), "instance_weight": 0.5, "augment": "robust", "seed": 1}
    result = train(data, tmp_path / "a", **options)
    losses = [h["loss"] for h in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert "infonce on two views" in (tmp_path / "a" / "README.md").read_text()
    assert json.loads((tmp_path / "a" / RECORD_FILE).read_text())["options"]["instance_weight"] == 0.5
    train(data, tmp_path / "b", **options)
    assert same_weights(tmp_path / "a", tmp_path / "b")
    plain = train(data, tmp_path / "c", **{**options, "instance_weight": 0.0})
    assert plain.history[0]["loss"] != result.history[0]["loss"]


def test_robust_views_stay_in_range_and_vary():
    from vitsearch.augment import train_views

    torch.manual_seed(0)
    x = torch.rand(16, 3, 32, 32)
    views = train_views(24, "robust")
    a, b = views(x), views(x)
    assert a.shape == (16, 3, 24, 24) and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, b)


def test_supcon_and_from_scratch(tmp_path, data):
    result = train(data, tmp_path / "out", from_scratch="tiny", image_size=32, patch_size=16, loss="supcon", **FAST)
    assert result.loss == "supcon" and all(np.isfinite(h["loss"]) for h in result.history)
    spec = load_spec(str(tmp_path / "out"))
    assert spec.dim == 192 and spec.preprocessing.input_size == (32, 32)
    assert json.loads((tmp_path / "out" / RECORD_FILE).read_text())["base"] == "scratch:tiny"


def test_models_from_a_newer_vitsearch_are_refused(tmp_path, data, tiny_models):
    train(data, tmp_path / "out", base=str(tiny_models["vit"]), **{**FAST, "epochs": 1})
    record = json.loads((tmp_path / "out" / RECORD_FILE).read_text())
    record["vitsearch_version"] = "99.0.0"
    (tmp_path / "out" / RECORD_FILE).write_text(json.dumps(record))
    with pytest.raises(ModelError, match="newer than this vitsearch"):
        load_spec(str(tmp_path / "out"))


def test_layer_decay_and_schedule(tiny_models):
    backbone = load_backbone(load_spec(str(tiny_models["vit"])))  # 2 layers: ids 0 (embeddings) .. 3 (final norm)
    head = torch.nn.Linear(2, 2)
    groups = param_groups(backbone, head, TrainOptions(layer_decay=0.5, weight_decay=0.1), lr=1.0)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(backbone.named_parameters())
    block = {i: next(p for n, p in named.items() if f"layer{'s' if '.layers.' in n else ''}.{i}." in n and p.ndim == 2)
             for i in (0, 1)}
    assert by_param[id(named["model.embeddings.patch_embed.weight"])]["lr"] == pytest.approx(0.125)
    assert by_param[id(block[0])]["lr"] == pytest.approx(0.25)
    assert by_param[id(block[1])]["lr"] == pytest.approx(0.5)
    assert by_param[id(named["model.norm.weight"])]["lr"] == pytest.approx(1.0)
    assert by_param[id(named["model.embeddings.position_embeddings"])]["weight_decay"] == 0.0
    assert by_param[id(named["model.norm.weight"])]["weight_decay"] == 0.0
    assert by_param[id(block[0])]["weight_decay"] == 0.1
    assert by_param[id(head.weight)]["lr"] == pytest.approx(100.0)

    f = warmup_cosine(total=100, warmup=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.505) and f(100) == pytest.approx(0.01)


def test_ctrl_c_in_the_cli_leaves_a_resumable_checkpoint(tmp_path, tiny_models):
    data = labelled_folder(tmp_path / "data", per_class=40)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "vitsearch", "train", str(data), "--out", str(out), "--base", str(tiny_models["vit"]),
           "--epochs", "400", "--batch-size", "4", "--workers", "0", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
    deadline = time.time() + 120
    while not (out / CHECKPOINT_DIR / "state.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Interrupted: stopped in epoch" in err and "Traceback" not in err
    state = torch.load(out / CHECKPOINT_DIR / "state.pt", weights_only=True)
    assert state["epoch"] >= 1 and state["step"] >= 1


def test_option_names_match_their_implementations():
    from vitsearch import options
    from vitsearch.augment import RECIPES
    from vitsearch.losses import TEMPERATURES
    from vitsearch.model import SCRATCH_PRESETS
    from vitsearch.training import SAVE_DTYPES

    assert tuple(SCRATCH_PRESETS) == options.SCRATCH_SIZES
    assert tuple(RECIPES) == options.AUGMENTS
    assert tuple(TEMPERATURES) == options.LOSSES
    assert tuple(SAVE_DTYPES) == options.SAVE_DTYPES
