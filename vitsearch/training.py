"""Fine-tune (or train from scratch) the shared ViT core so that its CLS embedding retrieves alike images.

The same loading, preprocessing and :class:`~vitsearch.model.VitBackbone` as indexing: what this
saves is a ``save_pretrained`` directory that every command accepts with ``--model DIR``.

* Labelled data (class folders or a CSV manifest) trains with ``normsoftmax`` (default) or ``supcon``;
  unlabelled images with ``infonce`` on two random views of each image. With labels,
  ``instance_weight > 0`` adds that InfoNCE term on two views of each image as well: a class loss
  alone pulls every member of a class onto one point, and the instance term keeps an image nearer to
  its own edited copies than to its classmates (near-duplicate search needs that).
* ``teacher`` distils a frozen encoder into the student (training only): the student's batch
  similarities follow the teacher's (:class:`~vitsearch.losses.SimilarityDistillation`, weight
  ``distill_weight``). The teacher sees each training image once, whole, at its own resolution
  (``teacher_size``, 224 for EfficientNet-Lite0), before the first step; its feature rows are cached
  in the checkpoint folder, so every later step and epoch costs the student alone, and a resumed run
  reuses them. Both views of an image share its row, and an image's own views are left out of its
  neighbourhood (the term passes on how the teacher ranks *other* images). The embedding stays the
  final CLS token; no head or token is added to what is saved. Several teachers (comma-separated)
  form one ensemble: each one's rows are centred on their mean over the training images and
  L2-normalised, then joined, so each teacher weighs the same in the target similarities (the base
  model itself can be one of them, which keeps what it knew where the other teacher is weaker).
  ``distill_only`` (a regular expression over label names) limits the term to the images of
  matching classes. ``distill_bank=N`` widens each view's neighbourhood beyond its batch to the last
  N distilled views of earlier steps (:class:`~vitsearch.losses.NeighbourBank`: detached student
  embeddings and their teacher rows; not checkpointed, refilled after a resume).
* ``freeze_layers=N`` keeps the patch embedding and the first N transformer blocks as they are:
  back-propagation stops above them, so a step costs about half as much with half the blocks frozen,
  and what the lower layers know is not forgotten.
* AdamW, linear warm-up then cosine decay, optional layer-wise learning-rate decay, gradient
  accumulation and clipping, bf16 autocast where the hardware has it.
* A checkpoint (weights, optimiser, schedule, position in the epoch) after every epoch and on Ctrl-C;
  ``resume=True`` continues exactly where it stopped: batches and augmentations are drawn from the
  seed, the epoch and the batch number, so an interrupted and resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .augment import train_views
from .checkpoint import ModelSpec, load_spec
from .data import ImageSet, read_images, split
from .device import Normalise, autocast, choose_device, choose_precision, default_workers
from .distributed import world_size_from_env
from .embed import Encoder, worker_init
from .errors import ImageError, TrainingInterrupted, UsageError, VitsearchError
from .evaluation import embed_set, retrieval_metrics
from .images import Failure, load_image
from .losses import InfoNCE, NeighbourBank, SimilarityDistillation, build_loss
from .model import (
    VitBackbone,
    load_backbone,
    resize_backbone,
    save_model,
    scratch_backbone,
)
from .options import TrainOptions
from .preprocess import Preprocessing
from .progress import Callback, emit

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.pt"
TEACHER_FILE = "teacher.pt"
FINETUNE_LR = 5e-5
SCRATCH_LR = 5e-4
HEAD_LR_SCALE = 100.0  # class proxies start random: they move much faster than pretrained weights
SAVE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}  # keys: options.SAVE_DTYPES
# Options that may differ between an interrupted run and its resumption (they do not change the maths).
_RESUMABLE_CHANGES = {"device", "precision", "num_workers", "keep_checkpoint"}
SAVE_EVERY_SECONDS = 600.0  # a checkpoint at least this often, so a killed run loses minutes, not an epoch


@dataclass
class TrainResult:
    out: str
    epochs: int
    steps: int
    train_images: int
    val_images: int
    classes: int
    loss: str
    history: list[dict] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["failed"] = [f.as_dict() for f in self.failed]
        return d


# -- data ---------------------------------------------------------------------------------------
class _TrainImages(torch.utils.data.Dataset):
    """Decoded, resized and square-cropped uint8 pictures; random views are made later, batched."""

    def __init__(self, paths: list[str], labels: list[int], load: Preprocessing):
        self.paths, self.labels, self.load = paths, labels, load

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            img = load_image(self.paths[index], draft=self.load.draft_size)
            return torch.from_numpy(self.load.to_uint8(img)), self.labels[index], index, None
        except ImageError as exc:
            return None, self.labels[index], index, Failure(self.paths[index], str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad file never stops training
            return None, self.labels[index], index, Failure(self.paths[index], f"cannot decode: {exc}")


def _collate(items):
    """(pixels, labels, positions in the dataset, failures); pixels is None when no image decoded."""
    good = [(x, y, i) for x, y, i, _ in items if x is not None]
    failed = [f for *_, f in items if f is not None]
    if not good:
        return None, None, None, failed
    pixels, labels, positions = zip(*good)
    return torch.stack(pixels), torch.tensor(labels), torch.tensor(positions), failed


def _fresh_epoch() -> dict:
    return {"losses": [], "seen": 0, "seconds": 0.0}


def files_digest(data: ImageSet) -> str:
    """sha256 over every image's path (relative to the data's folder), class, size and modification time:
    what tells a run's data from other files of the same counts and class names (two class folders swapped)."""
    root = data.source if os.path.isdir(data.source) else os.path.dirname(data.source) or os.curdir
    digest = hashlib.sha256()
    for path, label in zip(data.paths, data.labels):
        try:
            st = os.stat(path)
            stamp = f"{st.st_size} {st.st_mtime_ns}"
        except OSError:
            stamp = "unreadable"
        name = data.classes[label] if label >= 0 else ""
        digest.update(f"{os.path.relpath(path, root)}\0{name}\0{stamp}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: a permutation drawn from (seed, epoch); a ragged tail is dropped."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    if n <= batch_size:
        return [order]
    return [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def _step_seed(seed: int, epoch: int, batch: int) -> int:
    return (seed * 1_000_003 + epoch * 100_019 + batch) % (1 << 62)


# -- model and optimiser ------------------------------------------------------------------------
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers)\.(\d+)\.")
_NO_DECAY = ("position_embeddings", "position_embedding.weight", "cls_token", "mask_token", "register_tokens")


def _layer_id(name: str, layers: int) -> int:
    """0 for the embeddings, i + 1 for transformer block i, layers + 1 for the final norm (and anything else)."""
    match = _LAYER.search(name)
    if match:
        return int(match.group(1)) + 1
    return 0 if ("embeddings" in name or "pre_layrnorm" in name) else layers + 1


def freeze_lower_layers(backbone: VitBackbone, layers: int) -> int:
    """Stop training the embeddings and the first ``layers`` blocks; returns how many tensors were frozen."""
    config = getattr(backbone.model.config, "vision_config", None) or backbone.model.config
    total = int(config.num_hidden_layers)
    if layers >= total:
        raise UsageError(f"freeze_layers must leave a block to train: the model has {total}, not more than {total - 1}")
    frozen = 0
    for name, param in backbone.named_parameters():
        if _layer_id(name, total) <= layers:
            param.requires_grad_(False)
            frozen += 1
    return frozen


def param_groups(backbone: VitBackbone, head: nn.Module, opts: TrainOptions, lr: float) -> list[dict]:
    """AdamW groups: no weight decay on biases, norms and position tables; optional layer-wise LR decay."""
    config = getattr(backbone.model.config, "vision_config", None) or backbone.model.config
    layers = int(config.num_hidden_layers)
    groups: dict[tuple, dict] = {}
    for name, param in backbone.named_parameters():
        if not param.requires_grad:
            continue
        layer = _layer_id(name, layers)
        scale = opts.layer_decay ** (layers + 1 - layer) if opts.layer_decay else 1.0
        no_decay = param.ndim <= 1 or name.endswith(_NO_DECAY)
        group = groups.setdefault(
            (layer, no_decay), {"params": [], "lr": lr * scale, "weight_decay": 0.0 if no_decay else opts.weight_decay}
        )
        group["params"].append(param)
    out = list(groups.values())
    head_params = [p for p in head.parameters() if p.requires_grad]
    if head_params:
        out.append({"params": head_params, "lr": lr * HEAD_LR_SCALE, "weight_decay": 0.0})
    return out


def warmup_cosine(total: int, warmup: float, floor: float = 0.01) -> Callable[[int], float]:
    """Multiplier of the base LR at each optimiser step: linear warm-up, then cosine down to ``floor``."""
    warm = max(1, round(total * warmup)) if warmup > 0 else 0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class _StopFlag:
    """First Ctrl-C: finish the current step, save, stop. Second Ctrl-C: stop at once."""

    def __init__(self):
        self.set = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# -- the run --------------------------------------------------------------------------------------
class _Run:
    def __init__(self, data: ImageSet, out: Path, opts: TrainOptions, progress: Callback | None):
        self.data, self.out, self.opts = data, out, opts
        self.base_dir: Path | None = None
        self.progress = progress
        self.device = choose_device(opts.device)
        self.precision = choose_precision(self.device, opts.precision)
        self.loss_name = opts.loss if opts.loss != "auto" else ("normsoftmax" if data.labelled else "infonce")
        if self.loss_name != "infonce" and not data.labelled:
            raise VitsearchError(f"loss {self.loss_name!r} needs labels, and {data.source} has none; use infonce")
        self.labelled = self.loss_name != "infonce"
        if opts.batch_size < 2 and (self.loss_name != "normsoftmax" or opts.instance_weight > 0):
            term = self.loss_name if self.loss_name != "normsoftmax" else "the instance term"
            raise UsageError(f"{term} compares the images of a batch with each other: batch_size must be at least 2")
        val_fraction = opts.val_fraction if data.labelled else 0.0
        self.train_idx, self.val_idx = split(data, val_fraction, opts.seed)
        self.files = files_digest(data)
        if len(self.train_idx) < 2:
            raise VitsearchError(f"{data.source} has {len(self.train_idx)} training image(s); at least 2 are needed")
        torch.manual_seed(opts.seed)
        self.backbone, self.base_name, base_prep = self._build_backbone()
        self.image_size = opts.image_size or max(base_prep.input_size)
        self.backbone = resize_backbone(self.backbone, self.image_size).to(self.device)
        if opts.freeze_layers:
            freeze_lower_layers(self.backbone, opts.freeze_layers)
        self.preprocessing = base_prep.at_size(self.image_size)
        if opts.whole_image:
            self.preprocessing = self.preprocessing.whole()
        self.teacher_rows: torch.Tensor | None = None  # one feature row per training image, once computed
        self.distill = SimilarityDistillation() if opts.teacher and opts.distill_weight > 0 else None
        self.bank = NeighbourBank(opts.distill_bank) if self.distill is not None and opts.distill_bank else None
        self.distilled_classes = None  # which label ids the distillation term sees (None: all)
        if self.distill is not None and opts.distill_only is not None:
            if not self.labelled:
                raise UsageError("--distill-only selects images by label; this run has no labels")
            pattern = re.compile(opts.distill_only)
            self.distilled_classes = torch.tensor([bool(pattern.search(c)) for c in data.classes], device=self.device)
            if not self.distilled_classes.any():
                raise UsageError(f"--distill-only {opts.distill_only!r} matches none of the {len(data.classes)} labels")
        dim = self.backbone.model.config.hidden_size
        self.head = build_loss(self.loss_name, dim, len(data.classes), opts.temperature).to(self.device)
        self.instance = InfoNCE() if self.labelled and opts.instance_weight > 0 else None
        self.views = train_views(self.image_size, opts.augment or ("light" if self.labelled else "strong"))
        self.batches_per_epoch = len(_epoch_batches(len(self.train_idx), opts.batch_size, opts.seed, 0))
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / opts.accumulate)
        lr = self.base_lr = opts.lr or (SCRATCH_LR if opts.from_scratch else FINETUNE_LR)
        self.optimizer = torch.optim.AdamW(param_groups(self.backbone, self.head, opts, lr), betas=(0.9, 0.999))
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.steps_per_epoch * opts.epochs, opts.warmup)
        )
        self.epoch, self.position, self.step = 0, 0, 0
        self.resumed = False  # True once load_state has read a checkpoint
        self.saved_at = time.monotonic()
        self.history: list[dict] = []
        # the epoch under way, so far: its step losses, images and seconds (a resumed epoch's line
        # then covers all of it, also when it resumes with no step left)
        self.partial: dict = _fresh_epoch()
        self.failed: dict[str, Failure] = {}
        self.normalise = Normalise(self.preprocessing.mean, self.preprocessing.std).to(self.device)  # of [0, 1] views

    def _build_backbone(self) -> tuple[VitBackbone, str, Preprocessing]:
        opts = self.opts
        if opts.from_scratch:
            size = opts.image_size or 224
            backbone = scratch_backbone(opts.from_scratch, size, opts.patch_size)
            prep = Preprocessing(None, None, size, size, 3, None, 1 / 255, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
            return backbone, f"scratch:{opts.from_scratch}", prep
        spec = load_spec(opts.base)
        self.base_dir = Path(spec.path)
        return load_backbone(spec).float(), spec.name, spec.preprocessing

    # -- checkpoints ----------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out / CHECKPOINT_DIR / STATE_FILE

    def data_signature(self) -> dict:
        return {"images": len(self.data), "classes": list(self.data.classes), "train": len(self.train_idx),
                "files": self.files}

    def diverged(self, where: str) -> None:
        """Stop a run whose loss or weights are no longer finite. Its checkpoint cannot help (a resume takes
        the same steps again, and cannot lower the learning rate): a new run's is removed, so the same
        command with a lower ``lr`` starts again; a resumed run's is left as it was at its last save."""
        advice = f"lower --lr (it was {self.base_lr:g})"
        if self.resumed:
            advice += f"; the checkpoint in {self.state_path.parent} is kept (start again with --overwrite)"
        else:
            self.state_path.unlink(missing_ok=True)  # the teacher's cache stays: it does not depend on lr
            if self.state_path.parent.is_dir() and not any(self.state_path.parent.iterdir()):
                self.state_path.parent.rmdir()
        raise VitsearchError(f"training diverged in {where}; {advice}")

    def save_state(self) -> None:
        if not all(torch.isfinite(p).all() for p in self.backbone.parameters()):
            self.diverged(f"epoch {self.epoch + 1}: the weights hold NaN or infinite values")
        state = {
            "vitsearch_version": __version__,
            "options": dataclasses.asdict(self.opts),
            "data": self.data_signature(),
            "epoch": self.epoch,
            "position": self.position,
            "step": self.step,
            "history": json.dumps(self.history),
            "partial": json.dumps(self.partial),
            "backbone": self.backbone.state_dict(),
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
        }
        tmp = self.state_path.with_suffix(".tmp")
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, tmp)
            os.replace(tmp, self.state_path)
        except OSError as exc:  # a disk that filled up during the run
            raise VitsearchError(f"cannot write the checkpoint {self.state_path}: {exc.strerror or exc}") from None
        self.saved_at = time.monotonic()

    def load_state(self) -> None:
        state = _read_state(self.state_path, self.device)
        then, now = state["data"], self.data_signature()
        if any(then[key] != now[key] for key in ("images", "classes", "train")):
            raise VitsearchError(
                f"the data changed since the checkpoint in {self.out} was written "
                f"({then['images']} images then, {len(self.data)} now); resume needs the same data"
            )
        if then.get("files", self.files) != self.files:  # a checkpoint from before vitsearch recorded it: not known
            raise VitsearchError(
                f"the data changed since the checkpoint in {self.out} was written (the same counts and classes, "
                "but other files: renamed, changed, or in another class); resume needs the same data"
            )
        self.resumed = True
        self.backbone.load_state_dict(state["backbone"])
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.epoch, self.position, self.step = state["epoch"], state["position"], state["step"]
        self.history = json.loads(state["history"])
        self.partial = json.loads(state["partial"]) if "partial" in state else _fresh_epoch()

    # -- steps ----------------------------------------------------------------------------------
    def _autocast(self):
        return autocast(self.device, self.precision)

    def _loss(self, pixels: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = pixels.to(self.device, non_blocking=True).float() / 255.0
        if self.labelled and self.instance is None:
            views, target = self.views(x), labels.to(self.device)
        else:
            views = torch.cat([self.views(x), self.views(x)])
            target = labels.to(self.device).repeat(2) if self.labelled else None
        teacher = images = None
        if self.teacher_rows is not None:
            teacher = self.teacher_rows[positions.to(self.teacher_rows.device)].to(self.device)
            teacher = teacher.repeat(len(views) // len(teacher), 1)
            images = positions.to(self.device).repeat(len(views) // len(positions))
        views = self.normalise(views)
        with self._autocast():
            z = self.backbone.cls_token(views).float()
        loss = self.head(z, target)
        if self.instance is not None:
            loss = loss + self.opts.instance_weight * self.instance(z)
        if teacher is not None:
            if self.distilled_classes is not None:
                keep = self.distilled_classes[target]
                z, teacher, images = z[keep], teacher[keep], images[keep]
            loss = loss + self.opts.distill_weight * self.distill(z, teacher.float(), images, self.bank)
            if self.bank is not None and len(z):
                self.bank.push(z, teacher, images)
        return loss

    def _loader(self, batches: list[list[int]], prep: Preprocessing | None = None):
        paths = [self.data.paths[i] for i in self.train_idx]
        labels = [self.data.labels[i] for i in self.train_idx]
        prep = prep or self.preprocessing
        edge = prep.shortest_edge or max(prep.input_size)
        load = dataclasses.replace(prep, crop=(edge, edge)) if prep.shortest_edge else prep
        workers = self.opts.num_workers if self.opts.num_workers is not None else default_workers(self.device)
        return torch.utils.data.DataLoader(
            _TrainImages(paths, labels, load),
            batch_sampler=batches,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=self.device == "cuda",
            worker_init_fn=worker_init if workers else None,
        )

    @property
    def teacher_path(self) -> Path:
        return self.out / CHECKPOINT_DIR / TEACHER_FILE

    def teacher_features(self) -> None:
        """The teachers' feature rows of every training image (whole, at each teacher's resolution), cached.

        The cache is keyed by the teachers, their size and the training images in their order (a row
        is found by its image's position, and another seed splits off other validation images, so
        the same counts are not enough). Each teacher's rows are centred on their mean and
        L2-normalised, then the teachers' rows are joined side by side. The row of an image that
        fails to decode stays zero (the image never reaches a step either).
        """
        if self.distill is None:
            return
        images = hashlib.sha256("\0".join(self.data.paths[i] for i in self.train_idx).encode("utf-8", "surrogatepass"))
        key = {"teacher": self.opts.teacher, "size": self.opts.teacher_size, "data": self.data_signature(),
               "train_images": images.hexdigest()}
        if self.teacher_path.is_file():
            try:
                cached = torch.load(self.teacher_path, map_location="cpu", weights_only=True)
                found = json.loads(cached["key"]) == key and len(cached["rows"]) == len(self.train_idx)
            except Exception:  # noqa: BLE001 - only a cache: a damaged one is computed again
                emit(self.progress, "teacher", message=f"the teacher's cache {self.teacher_path} is damaged: "
                                                       "computing its rows again")
                found = False
            if found:
                self.teacher_rows = cached["rows"]
                return
        parts = [self._teacher_rows(name.strip()) for name in self.opts.teacher.split(",")]
        self.teacher_rows = torch.cat(parts, 1)
        self.teacher_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.teacher_path.with_suffix(".tmp")
        torch.save({"key": json.dumps(key), "rows": self.teacher_rows}, tmp)
        os.replace(tmp, self.teacher_path)

    def _teacher_rows(self, name: str) -> torch.Tensor:
        """One teacher's rows: centred on the mean of the images that decoded, then L2-normalised."""
        from .teacher import load_teacher

        teacher = load_teacher(name, self.opts.teacher_size).to(self.device)
        n = len(self.train_idx)
        batch = max(self.opts.batch_size, 32)
        batches = [list(range(i, min(i + batch, n))) for i in range(0, n, batch)]
        emit(self.progress, "teacher",
             message=f"teacher {name}: features of {n} images at {teacher.size} px (once, cached)",
             info={"images": n, "size": teacher.size, "teacher": name})
        rows, seen = None, torch.zeros(n, dtype=torch.bool)
        with torch.inference_mode():
            for pixels, _, positions, failed in self._loader(batches, self.preprocessing.at_size(teacher.size)):
                for failure in failed:
                    self.failed.setdefault(failure.path, failure)
                if pixels is None:
                    continue
                with self._autocast():
                    out = teacher(pixels.to(self.device).float() / 255.0).float().cpu()
                if rows is None:
                    rows = torch.zeros(n, out.shape[1])
                rows[positions] = out
                seen[positions] = True
            if rows is None:
                return torch.zeros(n, 1)
            rows[seen] = F.normalize(rows[seen] - rows[seen].mean(0, keepdim=True), dim=-1)
        return rows

    def validate(self) -> dict | None:
        if not self.labelled or len(self.val_idx) < 2:
            return None
        val = self.data.subset(self.val_idx)
        spec = ModelSpec("(training)", "", "", self.backbone.model.config.hidden_size, "", self.preprocessing)
        self.backbone.eval()
        try:
            encoder = Encoder.wrap(
                self.backbone, spec, device=self.device, precision=self.precision,
                batch_size=max(self.opts.batch_size, 32), num_workers=self.opts.num_workers,
            )
            vectors, kept, failed = embed_set(encoder, val.paths)
            for failure in failed:
                self.failed.setdefault(failure.path, failure)
            labels = [val.labels[i] for i in kept]
            largest = max(collections.Counter(labels).values(), default=0)
            if largest < 2:
                return None
            # k at most the others of the largest held-out class: with 2-3 held-out images a class, P@10 could
            # not pass 0.2 even for a perfect model
            metrics = retrieval_metrics(vectors, labels, min(self.opts.val_k, largest - 1))
        finally:
            self.backbone.train()
        return {key: metrics[key] for key in ("k", "precision_at_1", "precision_at_k", "recall_at_k", "map_at_r")}

    def run(self, stop: _StopFlag) -> None:
        opts = self.opts
        self.teacher_features()
        self.backbone.train()
        start = {
            "epochs": opts.epochs, "epoch": self.epoch, "batches": self.batches_per_epoch,
            "position": self.position, "train": len(self.train_idx), "val": len(self.val_idx),
            "classes": len(self.data.classes), "loss": self.loss_name, "device": self.device,
            "precision": self.precision, "image_size": self.image_size,
        }
        emit(self.progress, "start", info=start, message=(
            f"training on {start['train']} images ({start['classes'] or 'no'} classes, {start['val']} held out), "
            f"{start['loss']}, {start['image_size']} px, {start['device']}/{start['precision']}"))
        while self.epoch < opts.epochs:
            started = time.perf_counter()
            batches = _epoch_batches(len(self.train_idx), opts.batch_size, opts.seed, self.epoch)
            earlier = self.partial if self.position else _fresh_epoch()
            losses, seen = list(earlier["losses"]), earlier["seen"]
            self.optimizer.zero_grad(set_to_none=True)
            for b, (pixels, labels, positions, failed) in enumerate(self._loader(batches[self.position :]), start=self.position):
                for failure in failed:
                    self.failed.setdefault(failure.path, failure)
                if pixels is not None:
                    torch.manual_seed(_step_seed(opts.seed, self.epoch, b))
                    loss = self._loss(pixels, labels, positions)
                    if not math.isfinite(value := loss.item()):
                        self.diverged(f"epoch {self.epoch + 1}, batch {b + 1}: the loss is {value}")
                    (loss / opts.accumulate).backward()
                    losses.append(value)
                    seen += len(pixels)
                if (b + 1) % opts.accumulate and b + 1 < len(batches):
                    continue
                if opts.clip_grad:
                    nn.utils.clip_grad_norm_(list(self.backbone.parameters()) + list(self.head.parameters()), opts.clip_grad)
                self.optimizer.step()
                self.schedule.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.position, self.step = b + 1, self.step + 1
                try:
                    step = {
                        "epoch": self.epoch, "batch": b + 1, "batches": len(batches),
                        "step": self.step, "loss": losses[-1] if losses else float("nan"),
                        "lr": self.base_lr * self.schedule.lr_lambdas[0](self.schedule.last_epoch),
                    }
                    emit(self.progress, "step", done=b + 1, total=len(batches), unit="batch", info=step,
                         task=f"epoch {self.epoch + 1}/{opts.epochs}",
                         message=f"loss {step['loss']:.4f}, lr {step['lr']:.2e}")
                except KeyboardInterrupt:  # raised by the caller's callback: a clean stop, like Ctrl-C
                    stop.set = True
                self.partial = {"losses": losses, "seen": seen,
                                "seconds": earlier["seconds"] + time.perf_counter() - started}
                if not stop.set and time.monotonic() - self.saved_at > SAVE_EVERY_SECONDS:
                    self.save_state()
                if stop.set:
                    self.save_state()
                    raise TrainingInterrupted(
                        f"stopped in epoch {self.epoch + 1}, batch {self.position} of {len(batches)}; "
                        f"the checkpoint in {self.out / CHECKPOINT_DIR} resumes it (add --resume)"
                    )
            seconds = earlier["seconds"] + time.perf_counter() - started
            val = self.validate()
            self.epoch, self.position, self.partial = self.epoch + 1, 0, _fresh_epoch()
            record = {
                "epoch": self.epoch, "loss": float(np.mean(losses)) if losses else None,
                "seconds": round(seconds, 2), "images_per_second": round(seen / seconds, 2) if seconds else None,
                "val": val,
            }
            self.history.append(record)
            self.save_state()
            emit(self.progress, "epoch", info=record, message=_epoch_line(record, opts.epochs))
        self.decode_undrawn()

    def decode_undrawn(self) -> None:
        """Decode the training images that no epoch drew (each drops its ragged tail), once, so that a broken
        one among them is listed as skipped too. The epochs' batches follow from the seed: no state needed."""
        n, opts = len(self.train_idx), self.opts
        drawn = {i for e in range(opts.epochs) for batch in _epoch_batches(n, opts.batch_size, opts.seed, e) for i in batch}
        undrawn = [i for i in range(n) if i not in drawn]
        for _, _, _, failed in self._loader([undrawn]) if undrawn else ():
            for failure in failed:
                self.failed.setdefault(failure.path, failure)

    def save_model(self) -> None:
        record = {
            "base": self.base_name,
            "image_size": self.image_size,
            "loss": self.loss_name,
            "data": self.data.source,
            "train_images": len(self.train_idx),
            "val_images": len(self.val_idx),
            "classes": list(self.data.classes),
            "options": dataclasses.asdict(self.opts),
            "history": self.history,
        }
        licence = self.base_dir / "LICENSE" if self.base_dir else None
        save_model(
            self.backbone, self.out, self.preprocessing, record=record, dtype=SAVE_DTYPES[self.opts.save_dtype],
            licence=licence if licence and licence.is_file() else None,
        )
        (self.out / "README.md").write_text(self.model_card(), encoding="utf-8")

    def model_card(self) -> str:
        last = self.history[-1] if self.history else {}
        val = last.get("val") or {}
        lines = [
            "---",
            "library_name: transformers",
            "pipeline_tag: image-feature-extraction",
            "tags: [vitsearch, image-retrieval]",
            "---",
            "# Image-retrieval encoder trained with vitsearch",
            "",
            f"Base: `{self.base_name}`; objective: {self.loss_name}"
            + (f" + {self.opts.instance_weight:g} × infonce on two views" if self.instance is not None else "")
            + (f" + {self.opts.distill_weight:g} × similarity distillation from `{self.opts.teacher}`"
               if self.distill is not None else "")
            + (f" (a bank of {self.opts.distill_bank} earlier views)" if self.bank is not None else "")
            + (f"; first {self.opts.freeze_layers} blocks frozen" if self.opts.freeze_layers else "")
            + f"; image size {self.image_size}; "
            f"{self.opts.epochs} epochs on {len(self.train_idx)} images"
            + (f" in {len(self.data.classes)} classes." if self.data.classes else " (unlabelled)."),
            "",
            ("The embedding is the final CLS token (`last_hidden_state[:, 0]`), L2-normalised; use it with "
             "`vitsearch index --model DIR` or `AutoModel.from_pretrained(DIR)`."),
        ]
        if val:
            pk = f"P@{val['k']} {val['precision_at_k']:.3f}, " if val["k"] > 1 else ""
            lines += ["", (f"Validation ({len(self.val_idx)} held-out images): P@1 {val['precision_at_1']:.3f}, "
                           f"{pk}mAP@R {val['map_at_r']:.3f}.")]
        return "\n".join(lines) + "\n"


def _epoch_line(record: dict, epochs: int) -> str:
    val = record["val"]
    shown = f", val P@{val['k']} {val['precision_at_k']:.4f}" if val else ""
    loss = record["loss"] if record["loss"] is not None else float("nan")
    return (f"epoch {record['epoch']}/{epochs}: loss {loss:.4f}{shown} "
            f"({record['seconds']:.0f}s, {record['images_per_second'] or 0:.1f} img/s)")


def _read_state(path: Path, device: str = "cpu") -> dict:
    """The training state in ``path``; one line when it cannot be read (torch's own message is paragraphs,
    and advises loading the file unsafely)."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(state, dict) or "options" not in state:
            raise ValueError("not a training state")
        return state
    except OSError as exc:
        raise VitsearchError(f"cannot read the checkpoint {path}: {exc.strerror or exc}") from None
    except Exception:  # noqa: BLE001 - any other failure: the file is not what a run wrote
        raise VitsearchError(f"the checkpoint {path} is damaged: start again without --resume (and with "
                             f"--overwrite), or remove {path.parent}") from None


def _resume_options(out: Path, given: dict) -> TrainOptions:
    path = out / CHECKPOINT_DIR / STATE_FILE
    if not path.is_file():
        raise VitsearchError(f"nothing to resume: {path} does not exist")
    saved = _read_state(path)["options"]
    for key, value in given.items():
        if key not in _RESUMABLE_CHANGES and key in saved and saved[key] != value:
            raise UsageError(f"--resume continues the interrupted run as it was; {key} was {saved[key]!r}, not {value!r}")
    return TrainOptions(**{**saved, **{k: v for k, v in given.items() if k in _RESUMABLE_CHANGES}})


def _check_writable(out: Path) -> None:
    """Make ``out`` and its checkpoint folder and write a file in each, before any work: a folder that
    cannot be written is one line now, not a traceback at the first checkpoint. Leaves nothing new behind."""
    made = [p for p in (out / CHECKPOINT_DIR, out, *out.parents) if not p.exists()]
    try:
        try:
            (out / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
            for folder in (out, out / CHECKPOINT_DIR):
                probe = folder / f".write-test-{os.getpid()}"
                with open(probe, "xb"):
                    pass
                probe.unlink()
        finally:
            for folder in made:  # deepest first
                if folder.is_dir():
                    folder.rmdir()
    except OSError as exc:
        raise VitsearchError(f"cannot write the model to {out} ({exc.filename or out}: {exc.strerror or exc})") from None


def train(
    data: str | os.PathLike | ImageSet,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: Callback | None = None,
    **options,
) -> TrainResult:
    """Train on ``data`` (class folders, a CSV manifest, or unlabelled images) and save the model to ``out``.

    Options are the fields of :class:`TrainOptions` (``base``, ``epochs``, ``batch_size``, ``lr``,
    ``image_size``, ``loss``...). ``resume=True`` continues the interrupted run in ``out`` with the
    options it had. ``progress`` is called with a :class:`~vitsearch.progress.Progress` per event: notes
    ``teacher``, ``start`` and ``epoch``, a count of the epoch's batches per ``step``; each event's ``info``
    holds its figures (loss, lr, held-out P@k, images/s...).
    Raises :class:`TrainingInterrupted` after Ctrl-C, once the checkpoint is written.
    """
    unknown = set(options) - {f.name for f in dataclasses.fields(TrainOptions)}
    if unknown:
        raise UsageError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    out = Path(os.path.abspath(os.path.expanduser(os.fspath(out))))
    started = time.perf_counter()
    world = world_size_from_env()
    if world > 1:
        raise UsageError(f"train runs in one process: under torchrun (WORLD_SIZE={world}) every process would train "
                         "into the same folder; run it without torchrun (only index scales out)")
    opts = _resume_options(out, options) if resume else TrainOptions(**options)
    opts.check()
    base = Path(os.path.expanduser(opts.base)) if opts.base else None
    if base is not None and base.is_dir() and base.resolve() == out.resolve():
        raise UsageError(f"the base model and --out are the same folder ({out}): save the trained model to another one")
    if not resume:
        if (out / CHECKPOINT_DIR / STATE_FILE).is_file() and not overwrite:
            raise VitsearchError(f"{out} holds an interrupted run; resume it with --resume, or choose another --out")
        # a run killed before its first checkpoint leaves only the teacher's cache (keyed by the teachers
        # and the data): the same command again starts from it instead of refusing the folder
        if out.is_dir() and any(p.name != CHECKPOINT_DIR for p in out.iterdir()) and not overwrite:
            raise VitsearchError(f"{out} is not empty; choose another --out (or --overwrite)")
        if out.exists() and not out.is_dir():
            raise VitsearchError(f"{out} exists and is not a folder")
    _check_writable(out)
    images = data if isinstance(data, ImageSet) else read_images(data, labels=opts.labels)
    run = _Run(images, out, opts, progress)
    if resume:
        run.load_state()
    elif overwrite and (out / CHECKPOINT_DIR).is_dir():
        shutil.rmtree(out / CHECKPOINT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    with _StopFlag() as stop:
        run.run(stop)
    run.save_model()
    if not opts.keep_checkpoint:
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    return TrainResult(
        out=str(out), epochs=run.epoch, steps=run.step, train_images=len(run.train_idx), val_images=len(run.val_idx),
        classes=len(images.classes), loss=run.loss_name, history=run.history,
        failed=list(images.failed) + list(run.failed.values()), seconds=time.perf_counter() - started,
    )
