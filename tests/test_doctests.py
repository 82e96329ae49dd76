"""The examples in vitsearch's docstrings run, as a user would type them.

Every docstring under ``vitsearch/`` that holds ``>>>`` lines is one test. It runs in a scratch
folder holding ``photos/``: three sample photos and a planted near-duplicate of one of them. The
examples that embed use the bundled model (no network; the examples print only what any machine
gives: ranks, paths, counts, scores to two decimals). Its weights are loaded once for all the
examples here, which is all the harness changes.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil
import shutil
from pathlib import Path

import pytest
from helpers import SAMPLES

import vitsearch

PACKAGE = Path(vitsearch.__file__).resolve().parent
PHOTOS = {"chelsea.jpg": SAMPLES / "photos" / "chelsea.jpg", "rocket.jpg": SAMPLES / "photos" / "rocket.jpg",
          "coffee.jpg": SAMPLES / "photos" / "coffee.jpg",
          "chelsea_small_bright.png": SAMPLES / "near_duplicates" / "chelsea_small_bright.png"}
# The public API whose docstrings must show an example (the reference pages are made from them).
MUST_HAVE_EXAMPLES = (
    "vitsearch", "vitsearch.api", "vitsearch.api.VisualSearch", "vitsearch.api.VisualSearch.tag",
    "vitsearch.api.VisualSearch.duplicates", "vitsearch.api.VisualSearch.remove", "vitsearch.embed.Encoder",
    "vitsearch.checkpoint.load_spec", "vitsearch.images.load_image", "vitsearch.report.contact_sheet",
)


def _modules_with_examples() -> list[str]:
    """Modules whose source holds '>>>' (read as text first, so that no other module is imported)."""
    names = ["vitsearch"] + [f"vitsearch.{m.name}" for m in pkgutil.iter_modules([str(PACKAGE)])]
    found = []
    for name in names:
        path = PACKAGE / ("__init__.py" if name == "vitsearch" else f"{name.split('.', 1)[1]}.py")
        if path.exists() and ">>>" in path.read_text(encoding="utf-8"):
            found.append(name)
    return found


def _examples() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = []
    for name in _modules_with_examples():
        tests += [t for t in finder.find(importlib.import_module(name)) if t.examples]
    return sorted(tests, key=lambda t: t.name)


EXAMPLES = _examples()


_BACKBONES: dict = {}


def _shared_backbone(spec):
    """``vitsearch.embed.load_backbone``, loaded once per model for this module's examples."""
    from vitsearch.model import load_backbone

    key = (spec.path, spec.fingerprint)
    if key not in _BACKBONES:
        _BACKBONES[key] = load_backbone(spec)
    return _BACKBONES[key]


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr("vitsearch.embed.load_backbone", _shared_backbone, raising=False)
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, source in PHOTOS.items():
        shutil.copy(source, folder / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("test", EXAMPLES, ids=[t.name for t in EXAMPLES])
def test_docstring_example_runs(test, scratch):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    result = runner.run(test, out=report.write)
    assert result.failed == 0, report.getvalue()


def test_the_public_api_shows_examples():
    names = {t.name for t in EXAMPLES}
    assert not [name for name in MUST_HAVE_EXAMPLES if name not in names]
