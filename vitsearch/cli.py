"""The ``vitsearch`` command: parsing and printing only; the work is done by :mod:`vitsearch.api`."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys

import click

from . import __version__
from .errors import ImageError, VitsearchError
from .settings import DEVICES, PRECISIONS
from .store import MAX_K


def _handle_errors(fn):
    """Library errors become one-line ``Error: ...`` messages (exit 1); Ctrl-C exits 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VitsearchError as exc:
            raise click.ClickException(str(exc)) from None
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)

    return wrapper


def store_options(fn):
    fn = click.option("--token", envvar="VITSEARCH_TOKEN", help="Milvus server token (user:password or API key).")(fn)
    fn = click.option(
        "--collection", envvar="VITSEARCH_COLLECTION", default="images", show_default=True, help="Collection name."
    )(fn)
    fn = click.option(
        "--uri",
        envvar="VITSEARCH_URI",
        help="Milvus Lite file (path ending in .db) or server URI (http://host:19530). "
        "Default: vitsearch.db in $XDG_DATA_HOME/vitsearch.",
    )(fn)
    return fn


def model_options(fn):
    fn = click.option(
        "--precision", type=click.Choice(PRECISIONS), envvar="VITSEARCH_PRECISION", default="auto", show_default=True,
        help="Autocast precision (auto: bf16 on GPUs and bf16-capable CPUs, else fp32).",
    )(fn)
    fn = click.option(
        "--device", type=click.Choice(DEVICES), envvar="VITSEARCH_DEVICE", default="auto", show_default=True,
        help="Where the model runs.",
    )(fn)
    fn = click.option(
        "--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True, help="Images per model call."
    )(fn)
    fn = click.option(
        "--model", envvar="VITSEARCH_MODEL",
        help="Hugging Face hub id or local save_pretrained directory. Default: the collection's model, "
        "else the bundled one.",
    )(fn)
    return fn


def _open(uri, collection, token, model=None, device="auto", precision="auto", batch_size=32, workers=None):
    from .api import VisualSearch

    return VisualSearch(
        uri, collection, model=model, token=token, device=device, precision=precision,
        batch_size=batch_size, num_workers=workers,
    )


def _tqdm_progress():
    """A progress-bar factory for the indexer: tqdm on stderr when it is a terminal, else nothing."""
    from .indexer import no_progress

    if not sys.stderr.isatty():
        return no_progress
    from tqdm import tqdm

    @contextlib.contextmanager
    def bar(total: int, desc: str):
        with tqdm(total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True) as t:
            yield t

    return bar


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vitsearch")
def main():
    """Find visually similar images: index folders into Milvus with a Vision Transformer, query by example."""


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@store_options
@model_options
@click.option("--workers", type=click.IntRange(0, 64), help="Decode worker processes (default: min(4, CPUs - 1)).")
@click.option("--keep-missing", is_flag=True, help="Keep rows of files that are gone from the indexed folders.")
@click.option("--reindex", is_flag=True, help="Drop the collection and index again (e.g. with another --model).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@_handle_errors
def index(paths, uri, collection, token, model, batch_size, device, precision, workers, keep_missing, reindex, as_json):
    """Index images under PATHS (folders are walked recursively; re-runs are incremental)."""
    with _open(uri, collection, token, model, device, precision, batch_size, workers) as vs:
        summary = vs.index(list(paths), keep_missing=keep_missing, reindex=reindex, progress=_tqdm_progress())
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
        return
    for failure in summary.failed:
        click.echo(f"skipped {failure.path}: {failure.reason}", err=True)
    d = summary.as_dict()
    click.echo(
        f"scanned {d['scanned']}, added {d['added']}, updated {d['updated']}, unchanged {d['unchanged']}, "
        f"removed {d['removed']}, failed {len(d['failed'])} in {d['seconds']:.1f}s "
        f"({d['embedded']} embedded, {d['reused']} reused)"
    )


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-k", "k", type=click.IntRange(1, MAX_K), default=10, show_default=True, help="Hits per query.")
@click.option("--filter", "filter_", metavar="EXPR", help='Milvus boolean expression, e.g. \'width > 500\'.')
@store_options
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per query (JSON Lines).")
@_handle_errors
def query(images, k, filter_, uri, collection, token, model, batch_size, device, precision, as_json):
    """Show the indexed images most similar to each IMAGE."""
    with _open(uri, collection, token, model, device, precision, batch_size) as vs:
        try:
            results = vs.query(list(images), k=k, filter=filter_)
        except ImageError as exc:
            raise VitsearchError(f"cannot read query image {exc}") from None
    for image, hits in zip(images, results):
        if as_json:
            record = {"query": os.path.abspath(image), "results": [h.as_dict() for h in hits]}
            click.echo(json.dumps(record, default=str))
            continue
        click.echo(f"query: {image}")
        if not hits:
            click.echo("  (no results)")
        for hit in hits:
            click.echo(f"  {hit.rank:>4}  {hit.score:.4f}  {hit.path}")


@main.command()
@store_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_handle_errors
def info(uri, collection, token, as_json):
    """Show the store, the collection, its model and how many images it holds."""
    with _open(uri, collection, token) as vs:
        data = vs.info()
    if as_json:
        click.echo(json.dumps(data))
        return
    for key in ("uri", "collection", "exists", "model", "fingerprint", "dimension", "count"):
        click.echo(f"{key:<12}{'' if data[key] is None else data[key]}")


if __name__ == "__main__":  # pragma: no cover
    main()
