"""Progress: one event type for indexing, training and evaluation.

A ``progress=`` callback (:meth:`VisualSearch.index <vitsearch.api.VisualSearch.index>`,
:func:`vitsearch.training.train`, :func:`vitsearch.evaluation.evaluate`) is called with one
:class:`Progress` per event, from the thread that does the work. An exception it raises stops the
work (``KeyboardInterrupt`` stops training cleanly, with a checkpoint, as Ctrl-C does).

An event either **counts** (``total`` is a number: ``done`` of ``total`` units of ``task`` are
finished, ``done`` only grows until the task changes) or is a **note** (``total`` is None:
``message`` is a line for people). The ``kind`` says what happened:

=============  =====================================================================================
``embedding``  index: images embedded (count)
``fetching``   index: remote images fetched (count)
``copying``    copy: rows copied into the other store (count; ``unit`` rows)
``teacher``    train: the teacher's features are being computed (note; info: ``images``, ``size``)
``start``      train: the run starts or resumes (note; info: ``epochs``, ``epoch``, ``batches``,
               ``position``, ``train``, ``val``, ``classes``, ``loss``, ``device``, ``precision``,
               ``image_size``)
``step``       train: an optimiser step (count of the epoch's batches; info: ``epoch``, ``batch``,
               ``batches``, ``step``, ``loss``, ``lr``)
``epoch``      train: an epoch ended (note; info: ``epoch``, ``loss``, ``seconds``,
               ``images_per_second``, ``val``: the held-out P@k figures or None)
``embed``      eval: images embedded (count)
``near_dup``   eval: edited copies searched (count)
=============  =====================================================================================

``message`` is what a person reads: a note's line, or what a count shows beside its bar ("loss
0.4123, lr 1.00e-04"); ``task`` names what a count counts (the bar's title, "epoch 2/10"; the
``kind`` when empty) and ``unit`` its units; ``info`` holds the figures for programs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Progress:
    """One progress event: a count (``done`` of ``total`` units of ``task``, ``message`` shown beside it)
    or, with ``total`` None, a note (``message`` a line for people); ``kind`` says what happened
    (``embedding``, ``fetching``, ``copying``, ``teacher``, ``start``, ``step``, ``epoch``, ``embed``, ``near_dup``)
    and ``info`` holds its figures. The module's docstring lists what each kind carries."""

    kind: str
    done: int = 0
    total: int | None = None
    message: str = ""
    task: str = ""
    unit: str = "img"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """What the count is of: ``task``, else ``kind``."""
        return self.task or self.kind


Callback = Callable[[Progress], None]


def emit(progress: Callback | None, kind: str, **fields) -> None:
    """Call ``progress`` (when there is one) with ``Progress(kind, **fields)``."""
    if progress is not None:
        progress(Progress(kind, **fields))
