"""Training options, kept free of torch so that the command line can show them instantly."""

from __future__ import annotations

from dataclasses import dataclass

LOSSES = ("normsoftmax", "supcon", "infonce")
SCRATCH_SIZES = ("tiny", "small", "base")
SAVE_DTYPES = ("fp32", "fp16", "bf16")
AUGMENTS = ("light", "strong", "robust", "copies")
LABEL_MODES = ("auto", "folders", "none")


@dataclass
class TrainOptions:
    base: str | None = None
    from_scratch: str | None = None
    patch_size: int = 16
    epochs: int = 10
    batch_size: int = 64
    lr: float | None = None
    weight_decay: float = 0.05
    warmup: float = 0.05
    layer_decay: float | None = None
    accumulate: int = 1
    clip_grad: float | None = 1.0
    image_size: int | None = None
    val_fraction: float = 0.1
    val_k: int = 10
    seed: int = 0
    loss: str = "auto"
    temperature: float | None = None
    instance_weight: float = 0.0
    teacher: str | None = None
    distill_weight: float = 1.0
    teacher_size: int | None = None
    freeze_layers: int = 0
    labels: str = "auto"
    augment: str | None = None
    save_dtype: str = "fp32"
    device: str | None = "auto"
    precision: str | None = "auto"
    num_workers: int | None = None
    keep_checkpoint: bool = False

    def check(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "accumulate": self.accumulate, "val_k": self.val_k}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be positive, not {self.lr}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), not {self.warmup}")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], not {self.layer_decay}")
        if self.from_scratch is not None and self.from_scratch not in SCRATCH_SIZES:
            raise ValueError(f"unknown size {self.from_scratch!r}; valid: {', '.join(SCRATCH_SIZES)}")
        if self.from_scratch and self.base:
            raise ValueError("give a base model or a from-scratch size, not both")
        if self.loss != "auto" and self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid: auto, {', '.join(LOSSES)}")
        if self.save_dtype not in SAVE_DTYPES:
            raise ValueError(f"save dtype must be one of {', '.join(SAVE_DTYPES)}, not {self.save_dtype!r}")
        if self.instance_weight < 0:
            raise ValueError(f"instance weight must be 0 or more, not {self.instance_weight}")
        if self.distill_weight < 0:
            raise ValueError(f"distill weight must be 0 or more, not {self.distill_weight}")
        if self.freeze_layers < 0:
            raise ValueError(f"freeze_layers must be 0 or more, not {self.freeze_layers}")
        if self.teacher_size is not None and self.teacher_size < 8:
            raise ValueError(f"teacher size must be at least 8, not {self.teacher_size}")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"image size must be at least 8, not {self.image_size}")
        if self.augment is not None and self.augment not in AUGMENTS:
            raise ValueError(f"unknown augmentation {self.augment!r}; valid: {', '.join(AUGMENTS)}")
        if self.labels not in LABEL_MODES:
            raise ValueError(f"labels must be one of {', '.join(LABEL_MODES)}, not {self.labels!r}")
