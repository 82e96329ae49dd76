"""The ``vitsearch`` command: parsing and printing only; the work is done by :mod:`vitsearch.api`."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import threading
import time

import click

from . import __version__
from .errors import ImageError, TrainingInterrupted, UsageError, VitsearchError
from .options import TrainOptions
from .settings import DEVICES, PRECISIONS
from .store import MAX_K, is_utf8

# Set by the commands that only read (query, info) once everything is printed: `run` then ends the
# process at once. Tearing torch, gRPC and Milvus Lite down at interpreter exit took 0.7-2 s on a
# 2-core CPU (a fifth of a query or more), and such a command has closed its store and has nothing to save.
_READ_ONLY_DONE = False


def _done_reading() -> None:
    global _READ_ONLY_DONE
    _READ_ONLY_DONE = True


def _thread_exception(args) -> None:
    """Threads' uncaught exceptions, but for the one of Milvus Lite's in-process gRPC server thread when
    the store is closed under it at Ctrl-C ("server must be started and not shutting down"): the
    user pressed Ctrl-C and is told "Interrupted.", not a traceback of a thread they never started."""
    if isinstance(args.exc_value, ValueError) and "not shutting down" in str(args.exc_value):
        return
    _THREAD_HOOK(args)


_THREAD_HOOK = threading.excepthook


def run() -> None:
    """The ``vitsearch`` console command: :func:`main`, then a quick exit after a read-only command."""
    threading.excepthook = _thread_exception
    try:
        main(prog_name="vitsearch")
    except SystemExit as exc:
        if _READ_ONLY_DONE and exc.code in (0, None):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        raise


def _handle_errors(fn):
    """Library errors become one-line messages: a :class:`~vitsearch.errors.UsageError` a usage error (exit 2),
    any other ``VitsearchError`` ``Error: ...`` (exit 1); Ctrl-C exits 130. Anything else is a bug: its
    traceback is shown as Python shows it (exit 1)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UsageError as exc:
            raise click.UsageError(str(exc)) from None
        except VitsearchError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)

    return wrapper


def _json(data) -> str:
    """``data`` as one line of strict JSON: a string that is not valid UTF-8 (a file name's undecodable
    bytes, which Python keeps as lone surrogates that strict parsers refuse) is quoted as :func:`_shown`
    quotes it, ``$'caf\\xe9.jpg'``; every other string stays raw."""

    def valid(value):
        if isinstance(value, str):
            return value if is_utf8(value) else _shown(value)
        if isinstance(value, dict):
            return {valid(k): valid(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [valid(v) for v in value]
        return value

    return json.dumps(valid(data), default=str)


_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", "'": "\\'"}


def _shown(path: str) -> str:
    """``path`` for a human-readable line: as it is, unless it holds a control character (a newline...),
    a line separator or bytes that are not UTF-8; then quoted as GNU ``ls`` and bash's ``$'...'`` do:
    ``$'a\\nb.jpg'``, with ``\\n \\t \\r \\\\ \\'`` and ``\\xHH`` for every other byte of such a character.
    Pasted into a shell, it names the file again. ``--json`` output keeps paths raw but for names that
    are not UTF-8 (see :func:`_json`)."""
    import unicodedata

    def odd(c: str) -> bool:
        return unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")

    if not any(odd(c) for c in path):
        return path

    def escape(c: str) -> str:
        if c in _ESCAPES:
            return _ESCAPES[c]
        if odd(c):
            try:
                raw = c.encode("utf-8", "surrogateescape")  # a byte of a name that is not UTF-8: that byte
            except UnicodeEncodeError:
                raw = c.encode("utf-8", "surrogatepass")
            return "".join(f"\\x{b:02x}" for b in raw)
        return c

    return "$'" + "".join(escape(c) for c in path) + "'"


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


device_option = click.option(
    "--device", type=click.Choice(DEVICES), envvar="VITSEARCH_DEVICE", default="auto", show_default=True,
    help="Where the model runs.",
)
precision_option = click.option(
    "--precision", type=click.Choice(PRECISIONS), envvar="VITSEARCH_PRECISION", default="auto", show_default=True,
    help="Autocast precision (auto: bf16 on GPUs and bf16-capable CPUs, else fp32).",
)


def device_options(fn):
    return device_option(precision_option(fn))


def batch_size_option(default: int | None = None, help: str = "Images per model call [default: 32 on a CPU, 256 on a GPU]."):
    """``--batch-size`` of every command that runs the model (train gives its own default and help)."""
    return click.option("--batch-size", type=click.IntRange(1, 4096), default=default,
                        show_default=default is not None, help=help)


def workers_option(name: str = "workers"):
    """``--workers``, passed to the command as ``name``."""
    return click.option("--workers", name, type=click.IntRange(0, 64),
                        help="Decode worker processes [default: CPUs - 1, at most 4 (16 with a GPU)].")


def model_options(fn):
    fn = device_options(fn)
    fn = batch_size_option()(fn)
    fn = click.option(
        "--model", envvar="VITSEARCH_MODEL",
        help="Hugging Face hub id or local save_pretrained directory. Default: the collection's model, "
        "else the bundled one.",
    )(fn)
    return fn


def _open(uri, collection, token, model=None, device="auto", precision="auto", batch_size=None, workers=None,
          fetch=None, encoder_process=False):
    from .api import VisualSearch

    return VisualSearch(
        uri, collection, model=model, token=token, device=device, precision=precision,
        batch_size=batch_size, num_workers=workers, fetch=fetch, encoder_process=encoder_process,
    )


def _local_or_remote(dir_okay: bool = True):
    """A click callback: URLs and object-store URIs pass as given; local paths must exist (exit 2)."""

    def check(ctx, param, values):
        from .fetch import is_remote, local_path

        for value in values:
            if is_remote(value):
                continue
            path = local_path(value)  # file:// URIs name local files
            if not os.path.exists(path):
                raise click.BadParameter(f"Path {value!r} does not exist.", ctx, param)
            if not dir_okay and os.path.isdir(path):
                raise click.BadParameter(f"File {value!r} is a directory.", ctx, param)
        return values

    return check


def fetch_options(fn):
    """How URLs and object-store URIs are fetched (index and query)."""
    for option in reversed([
        click.option("--concurrency", type=click.IntRange(1, 1024), default=32, show_default=True,
                     help="Images downloaded at once."),
        click.option("--per-host", type=click.IntRange(1, 1024), default=8, show_default=True,
                     help="Images downloaded at once from one host (or bucket)."),
        click.option("--timeout", type=click.FloatRange(0, min_open=True), default=30.0, show_default=True,
                     help="Seconds for one download (connect, headers and body)."),
        click.option("--retries", type=click.IntRange(0, 20), default=3, show_default=True,
                     help="More tries after a timeout, a dropped connection, 408, 425, 429, 500, 502, 503, 504 "
                     "(Retry-After honoured)."),
        click.option("--max-image-mb", type=click.FloatRange(0, min_open=True), default=20.0, show_default=True,
                     help="Larger images are skipped (the same default as serve's --max-upload-mb)."),
        click.option("--cache-dir", type=click.Path(file_okay=False),
                     help="Keep downloaded images here (by default none is written to disk); later runs ask the "
                     "server whether they changed and read them from here."),
    ]):
        fn = option(fn)
    return fn


def _fetch_options(concurrency, per_host, timeout, retries, max_image_mb, cache_dir):
    from .fetch import FetchOptions

    return FetchOptions(concurrency=concurrency, per_host=per_host, timeout=timeout, retries=retries,
                        max_bytes=int(max_image_mb * 1024 * 1024), cache_dir=cache_dir)


class _ProgressDisplay:
    """Every :class:`~vitsearch.progress.Progress` (index, train, eval) on stderr. A note is a line. A count
    is a tqdm bar per task on a terminal; elsewhere (a log file) a line at most every ``LOG_EVERY``
    seconds, so a short run writes none. A context manager: leaving it closes an open bar."""

    LOG_EVERY = 60.0

    def __init__(self):
        self.tty = sys.stderr.isatty()
        self.bar = None
        self.title = None
        self.logged = time.monotonic()

    def __call__(self, event) -> None:
        if event.total is None:
            if event.message:
                self._line(event.message)
        elif not self.tty:
            if time.monotonic() - self.logged >= self.LOG_EVERY:
                self.logged = time.monotonic()
                self._line(f"{event.title}: {event.done}/{event.total} {event.unit}"
                           + (f", {event.message}" if event.message else ""))
        elif event.total:
            self._count(event)

    def _count(self, event) -> None:
        if self.bar is None or self.title != event.title or event.done < self.bar.n:
            from tqdm import tqdm

            self.close()
            self.title = event.title
            self.bar = tqdm(total=event.total, desc=event.title, unit=event.unit, file=sys.stderr, dynamic_ncols=True)
        self.bar.update(event.done - self.bar.n)
        if event.message:
            self.bar.set_postfix_str(event.message, refresh=False)
        if event.done >= event.total:
            self.close()

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)  # above the bar, which stays
        else:
            click.echo(text, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar, self.title = None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vitsearch")
def main():
    """Find visually similar images: index folders into Milvus with a Vision Transformer, query by example."""
    from . import store

    store.DENSE_ONLY = True  # this process hands Milvus dense vectors only


@main.command()
@click.argument("paths", nargs=-1, required=True, callback=_local_or_remote())
@store_options
@model_options
@click.option("--image-column", metavar="COL", help="In a feed: the column of image URLs, URIs or paths (a list "
              "gives one image each).")
@click.option("--id-column", metavar="COL", help="In a feed: a column kept as text in a field of that name (e.g. sku).")
@fetch_options
@workers_option()
@click.option("--keep-missing", is_flag=True, help="Keep rows of images that are gone from the indexed folders, "
              "feeds or prefixes.")
@click.option("--reindex", is_flag=True, help="Embed every image again (e.g. with another --model) into a new collection that "
              "replaces this one when complete; stored metadata and labels are kept.")
@click.option("--metadata", type=click.Path(exists=True, dir_okay=False),
              help="CSV (with a 'path' column) or JSON Lines (with a 'path' key): fields to store with each image.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@_handle_errors
def index(paths, uri, collection, token, model, batch_size, device, precision, image_column, id_column, concurrency,
          per_host, timeout, retries, max_image_mb, cache_dir, workers, keep_missing, reindex, metadata, as_json):
    """Index images under PATHS (folders are walked recursively; re-runs are incremental).

    A PATH may also be a product feed (.csv, .jsonl, .parquet, with --image-column), an image URL, or
    an object-store URI listed recursively (s3://bucket/prefix, gs://, az://: pip install
    'vitsearch[s3]', [gcs] or [azure]).

    Under torchrun (`torchrun --nproc-per-node N -m vitsearch index ...`) each process embeds its
    share of the images; rank 0 plans the run and prints the summary.
    """
    from . import encoder_process
    from .distributed import init_from_env, shutdown, world_size_from_env

    dist = None
    if world_size_from_env() > 1:
        dist = init_from_env(device)
    try:
        fetch = _fetch_options(concurrency, per_host, timeout, retries, max_image_mb, cache_dir)
        with (
            _open(uri, collection, token, model, device, precision, batch_size, workers, fetch,
                  encoder_process=dist is None and encoder_process.enabled()) as vs,
            _ProgressDisplay() as display,
        ):
            summary = vs.index(
                list(paths), keep_missing=keep_missing, reindex=reindex, metadata=metadata,
                progress=display if dist is None or dist.is_main else None, dist=dist,
                image_column=image_column, id_column=id_column,
            )
        if dist is not None:
            # Leave together: rank 0 still deletes and flushes after the last collective, and a rank that
            # tore the gloo group down meanwhile was seen to abort in CI ("terminate called without an
            # active exception"). Only on success: after a failure the other ranks may be gone.
            dist.barrier()
    finally:
        if dist is not None:
            shutdown()
    if dist is not None and not dist.is_main:
        return
    if as_json:
        click.echo(_json(summary.as_dict()))
        return
    for failure in summary.failed:
        click.echo(f"skipped {_shown(failure.path)}: {failure.reason}", err=True)
    d = summary.as_dict()
    click.echo(
        f"scanned {d['scanned']}, added {d['added']}, updated {d['updated']}, unchanged {d['unchanged']}, "
        f"removed {d['removed']}, failed {len(d['failed'])} in {d['seconds']:.1f}s "
        f"({d['embedded']} embedded, {d['reused']} reused" + (f", {d['fetched']} downloaded)" if d["fetched"] else ")")
    )
    if metadata or d["metadata_updated"]:  # a --metadata file, or a feed's changed columns
        click.echo(f"metadata: {d['metadata_updated']} unchanged images updated", err=True)
        if d["metadata_unmatched"]:
            click.echo(f"metadata: {d['metadata_unmatched']} entries name no file under {', '.join(paths)}", err=True)


@main.command()
@click.argument("images", nargs=-1, required=True, callback=_local_or_remote(dir_okay=False))
@click.option("-k", "k", type=click.IntRange(1, MAX_K), default=10, show_default=True, help="Hits per query.")
@click.option("--filter", "filter_", metavar="EXPR", help='Milvus boolean expression, e.g. \'width > 500\'.')
@click.option("--group-by", metavar="FIELD", help="Best image per value of this metadata field (k distinct values).")
@click.option("--min-score", type=click.FloatRange(-1, 1), metavar="SCORE",
              help="Only hits at least this similar (cosine, -1 to 1), e.g. 0.5: fewer than k, or none, when "
                   "nothing indexed is that close.")
@click.option("--taken-after", metavar="DATE",
              help="Only photos taken at or after DATE (EXIF), e.g. 2024-06-01 or 2024-06-01T18:00+02:00 (UTC unless given).")
@click.option("--taken-before", metavar="DATE", help="Only photos taken before DATE (EXIF).")
@click.option("--near", metavar="LAT,LON,KM", help="Only photos whose EXIF GPS position is within KM of LAT,LON.")
@click.option("--camera", metavar="TEXT", help="Only photos whose camera make or model has these words (any case).")
@click.option("--html", "html_out", type=click.Path(dir_okay=False, writable=True),
              help="Also write a self-contained HTML page of the results (thumbnails embedded).")
@click.option("--grid", "grid_out", type=click.Path(dir_okay=False, writable=True),
              help="Also write a contact sheet (PNG, or as the name's extension says: .jpg, .webp): one row per "
                   "query, the query first.")
@store_options
@model_options
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=30.0, show_default=True,
              help="Seconds to download a query image given by URL.")
@click.option("--max-image-mb", type=click.FloatRange(0, min_open=True), default=20.0, show_default=True,
              help="Larger query images given by URL are refused.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per query (JSON Lines).")
@_handle_errors
def query(images, k, filter_, group_by, min_score, taken_after, taken_before, near, camera, html_out, grid_out, uri,
          collection, token, model, batch_size, device, precision, timeout, max_image_mb, as_json):
    """Show the indexed images most similar to each IMAGE (a file, or an image URL or URI).

    --taken-after, --taken-before, --near and --camera keep the photos whose EXIF says so; each is a
    Milvus expression on the EXIF fields (see docs/photos.md) and combines with --filter.
    """
    from . import encoder_process
    from .fetch import is_remote

    fetch = _fetch_options(1, 1, timeout, 3, max_image_mb, None)
    with _open(uri, collection, token, model, device, precision, batch_size, fetch=fetch,
               encoder_process=encoder_process.enabled()) as vs:
        try:
            results = vs.query(list(images), k=k, filter=filter_, group_by=group_by, taken_after=taken_after,
                               taken_before=taken_before, near=near, camera=camera, min_score=min_score)
        except ImageError as exc:
            raise VitsearchError(f"cannot read query image {exc}") from None
    _write_reports(html_out, grid_out, images, results)
    for image, hits in zip(images, results):
        if as_json:
            record = {"query": image if is_remote(image) else os.path.abspath(image),
                      "results": [h.as_dict() for h in hits]}
            click.echo(_json(record))
            continue
        click.echo(f"query: {_shown(image)}")
        if not hits:
            click.echo("  (no results)" if min_score is None else f"  (no results with a score of at least {min_score:g})")
        for hit in hits:
            click.echo(f"  {hit.rank:>4}  {hit.score:.4f}  {_shown(hit.path)}")
    _done_reading()


@main.command()
@store_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_handle_errors
def info(uri, collection, token, as_json):
    """Show the store, the collection, its model and how many images it holds."""
    with _open(uri, collection, token) as vs:
        data = vs.info()
    if as_json:
        click.echo(_json(data))
    else:
        for key in ("uri", "collection", "exists", "model", "fingerprint", "dimension", "count"):
            click.echo(f"{key:<12}{'' if data[key] is None else data[key]}")
        if data["exists"]:
            click.echo(f"{'exif':<12}" + ", ".join(f"{name} {n}" for name, n in data["exif"].items()))
    _done_reading()


@main.command()
@click.argument("images", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--field", default="label", show_default=True, help="The metadata field to predict.")
@click.option("-k", "k", type=click.IntRange(1, 1000), default=15, show_default=True, help="Neighbours that vote.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Below this share of the vote, no label is given.")
@click.option("--min-score", type=click.FloatRange(-1, 1), metavar="SCORE",
              help="Only neighbours at least this similar (cosine) vote: an image unlike every labelled one gets "
                   "no label.")
@click.option("--filter", "filter_", metavar="EXPR", help="Only neighbours matching this Milvus expression vote.")
@click.option("--missing", is_flag=True, help="Tag every indexed image that has no value for --field (stored vectors).")
@click.option("--write", is_flag=True, help="Store the labels given (those that pass --min-confidence and --min-score) on indexed images that "
                   "lack one.")
@store_options
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per image (JSON Lines).")
@_handle_errors
def tag(images, field, k, min_confidence, min_score, filter_, missing, write, uri, collection, token, model, batch_size,
        device, precision, as_json):
    """Predict a label for each IMAGE from its nearest labelled neighbours (similarity-weighted vote)."""
    if not images and not missing:
        raise click.UsageError("give IMAGE... to tag, or --missing to tag the indexed images without a label")
    with _open(uri, collection, token, model, device, precision, batch_size) as vs:
        try:
            tags = vs.tag(list(images), field=field, k=k, min_confidence=min_confidence, filter=filter_,
                          write=write, min_score=min_score) if images else []
        except ImageError as exc:
            raise VitsearchError(f"cannot read image {exc}") from None
        if missing:
            tags += vs.tag_missing(field=field, k=k, min_confidence=min_confidence, filter=filter_, write=write,
                                   min_score=min_score)
    for t in tags:
        if as_json:
            click.echo(_json(t.as_dict()))
        elif not t.votes and min_score is not None:
            click.echo(f"{_shown(t.query)}\t(no label: no image with {field!r} scores at least {min_score:g})")
        elif not t.votes:
            click.echo(f"{_shown(t.query)}\t(no label: no indexed image has {field!r})")
        elif t.label is None:
            best = max(t.votes.items(), key=lambda kv: kv[1])[0]
            click.echo(f"{_shown(t.query)}\t(no label: best {best!r} at {t.confidence:.2f})")
        else:
            click.echo(f"{_shown(t.query)}\t{t.label}\t{t.confidence:.2f}")
    if write:
        click.echo(f"wrote {sum(t.written for t in tags)} labels to images that had none", err=True)


def _write_reports(html_out, grid_out, images, results) -> None:
    from PIL import Image

    from .report import contact_sheet, query_html, write_text

    try:
        if html_out:
            write_text(html_out, query_html([(os.path.abspath(i), hits) for i, hits in zip(images, results)]))
            click.echo(f"wrote {html_out}", err=True)
        if grid_out:
            rows = [[(i, "query")] + [(h.path, f"{h.rank}: {h.score:.3f}") for h in hits] for i, hits in zip(images, results)]
            sheet = contact_sheet(rows)
            # the format the name asks for (.png, .jpg, .webp …); a name without one known is PNG
            fmt = Image.registered_extensions().get(os.path.splitext(grid_out)[1].lower(), "PNG")
            fmt = fmt if fmt in Image.SAVE else "PNG"
            sheet.save(grid_out, fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
            click.echo(f"wrote {grid_out}", err=True)
    except OSError as exc:
        raise VitsearchError(f"cannot write {exc.filename}: {exc.strerror}") from None


@main.command()
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True,
              help="Cosine similarity at or above which two images are near-duplicates.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False, writable=True),
              help="Also write a self-contained HTML page of the groups, keepers outlined.")
@store_options
@click.option("--json", "as_json", is_flag=True, help='Print {"groups": [{"paths", "keep", "similarity", "exact"}]}.')
@_handle_errors
def dups(threshold, html_out, uri, collection, token, as_json):
    """Find groups of duplicate and near-duplicate images in the collection, with a copy to keep.

    Exact copies (same content) are grouped first, then images whose embeddings are at least
    --threshold alike. The suggested keeper has the most pixels; among equals, the earliest EXIF
    taken_at, then the most EXIF fields, then the largest file.
    """
    with _open(uri, collection, token) as vs:
        groups = vs.duplicates(threshold)
    if html_out:
        from .report import dups_html, write_text

        try:
            write_text(html_out, dups_html(groups))
        except OSError as exc:
            raise VitsearchError(f"cannot write {html_out}: {exc.strerror}") from None
        click.echo(f"wrote {html_out}", err=True)
    if as_json:
        click.echo(_json({"groups": [g.as_dict() for g in groups]}))
        return
    for n, group in enumerate(groups, start=1):
        kind = "identical" if group.exact else f"similarity >= {group.similarity:.3f}"
        click.echo(f"group {n} ({len(group.paths)} images, {kind})")
        for path in group.paths:
            click.echo(f"  {'keep' if path == group.keep else '    '}  {_shown(path)}")
    click.echo(f"{len(groups)} groups, {sum(len(g.paths) - 1 for g in groups)} images could go", err=True)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@store_options
@click.option("--json", "as_json", is_flag=True, help="Print {\"removed\": N} as JSON.")
@_handle_errors
def remove(paths, uri, collection, token, as_json):
    """Delete the rows of these files, or of every file under these folders (the files stay on disk).

    PATHS need not exist any more: rows are matched by the absolute path they were indexed under.
    """
    for path in paths:
        if not is_utf8(path):  # no row has it: the indexer skips such names
            click.echo(f"skipped {_shown(path)}: file name is not valid UTF-8 (such files are never indexed)", err=True)
    with _open(uri, collection, token) as vs:
        removed = vs.remove(list(paths))
    if as_json:
        click.echo(_json({"removed": removed}))
    else:
        click.echo(f"removed {removed} row{'s' if removed != 1 else ''}")


@main.command()
@click.option("--to", "to_uri", required=True, metavar="URI",
              help="The store to copy into: a Milvus Lite file (.db) or a server URI (http://host:19530).")
@click.option("--to-collection", metavar="NAME", help="The collection there [default: the same name as here].")
@click.option("--to-token", metavar="TOKEN", help="That server's token, if it needs one (--token is this store's).")
@store_options
@click.option("--json", "as_json", is_flag=True, help='Print {"copied", "created", "count", "uri", "collection", "seconds"}.')
@_handle_errors
def copy(to_uri, to_collection, to_token, uri, collection, token, as_json):
    """Copy the collection, vectors and metadata, into another store without embedding anything again.

    The way from Milvus Lite to a Milvus server (vitsearch copy --to http://host:19530), or a backup
    to another file. The copy keeps the collection's model record: query it, index into it (an
    unchanged re-index embeds nothing) and serve it as the original. A collection that is already
    there must hold the same model's vectors; rows of the same path are replaced, the others stay,
    so a copy cut short is finished by running it again. Rows keep their paths.
    """
    with _open(uri, collection, token) as vs, _ProgressDisplay() as display:
        summary = vs.copy(to_uri, to_collection, token=to_token, progress=display)
    if as_json:
        click.echo(_json(summary.as_dict()))
        return
    where = f"collection {summary.collection!r} in {summary.uri}"
    click.echo(f"copied {summary.copied} row{'s' if summary.copied != 1 else ''} into "
               f"{'a new ' if summary.created else ''}{where} in {summary.seconds:.1f}s; it holds {summary.count}")


class _ListItem(click.ParamType):
    """One value of a repeatable option that its environment variable gives as a comma-separated list;
    ``check`` validates it, and its message never quotes the value (an API key stays out of errors)."""

    envvar_list_splitter = ","

    def __init__(self, name: str, check):
        self.name, self.check = name, check

    def convert(self, value, param, ctx):
        value = value.strip()
        if not value:
            return value  # a blank between commas: dropped by the command
        try:
            return self.check(value)
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


def _api_key(value: str) -> str:
    from .serving.auth import check_key

    return check_key(value)


def _origin(value: str) -> str:
    from .serving.cors import check_origin

    return check_origin(value)


def _serve_warnings(host: str, port: int, keys, keys_for_reads: bool) -> list[str]:
    """What `serve` warns about before it starts: writes open to a network, a short key, a flag without keys."""
    from .serving.auth import SHORT_KEY, is_loopback

    out = []
    if not keys and not is_loopback(host):
        out.append(f"no API key is set and {host} is not a loopback address: anyone who reaches port {port} "
                   "can add and delete images (POST /images, DELETE /images/{id}); "
                   "set --api-key or VITSEARCH_API_KEYS")
    if keys_for_reads and not keys:
        out.append("--keys-for-reads has no effect without --api-key / VITSEARCH_API_KEYS: every route is open")
    if any(len(k) < SHORT_KEY for k in keys):
        out.append(f"an API key shorter than {SHORT_KEY} characters is easy to guess "
                   "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return out


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: every one).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@store_options
@model_options
@click.option("--upload-dir", type=click.Path(file_okay=False),
              help="Where POST /images stores uploads. Default: uploads/ in $XDG_DATA_HOME/vitsearch.")
@click.option("--thumbnail-dir", type=click.Path(file_okay=False),
              help="Thumbnail cache. Default: vitsearch/thumbnails in $XDG_CACHE_HOME.")
@click.option("--max-upload-mb", type=click.FloatRange(0, min_open=True), default=20.0, show_default=True,
              help="Larger uploads get 413.")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=32, show_default=True,
              help="Concurrent requests embedded in one model call (1: no micro-batching).")
@click.option("--read-timeout", type=click.FloatRange(0, min_open=True), default=30.0, show_default=True,
              help="Seconds a client may take to send a request's headers, or between two chunks of its body "
              "(slower ones are dropped, or get 408).")
@click.option("--allow-private-urls", is_flag=True,
              help="Let POST /search fetch {\"url\": ...} from loopback, private and link-local addresses "
              "(refused by default: a client could otherwise make the server reach internal hosts).")
@click.option("--max-connections", type=click.IntRange(1), default=256, show_default=True,
              help="Open connections served at once; more get 503 at once.")
@click.option("--api-key", "api_keys", multiple=True, type=_ListItem("key", _api_key), envvar="VITSEARCH_API_KEYS",
              show_envvar=True, metavar="KEY",
              help="Accept this key as 'Authorization: Bearer KEY' (repeatable; the variable: comma-separated). "
              "With keys, POST /images and DELETE /images/{id} need one (401 without).")
@click.option("--keys-for-reads", is_flag=True, envvar="VITSEARCH_KEYS_FOR_READS",
              help="Searches, files, rows, stats and metrics need a key too (/healthz and the page never do).")
@click.option("--cors-origin", "cors_origins", multiple=True, type=_ListItem("origin", _origin),
              envvar="VITSEARCH_CORS_ORIGINS", show_envvar=True, metavar="ORIGIN",
              help="Let pages from this origin (https://shop.example, or *) call the API (repeatable). Default: none.")
@click.option("--shutdown-timeout", type=click.FloatRange(0), default=30.0, show_default=True,
              help="On SIGTERM / SIGINT, seconds to let requests in flight finish before they are cancelled.")
@click.option("--log-level", type=click.Choice(("critical", "error", "warning", "info", "debug")), default="info",
              show_default=True, help="info: one access-log line per request on stderr.")
@click.option("--log-json", is_flag=True, envvar="VITSEARCH_LOG_JSON", help="Log JSON lines instead of text.")
@_handle_errors
def serve(host, port, uri, collection, token, model, batch_size, device, precision, upload_dir, thumbnail_dir,
          max_upload_mb, max_batch, read_timeout, allow_private_urls, max_connections, api_keys, keys_for_reads,
          cors_origins, shutdown_timeout, log_level, log_json):
    """Serve the HTTP API and the search page (http://HOST:PORT/, API docs at /docs, Prometheus at /metrics).

    The model is loaded and the store opened once. With a Milvus Lite file, this process owns it while
    it runs: add images through POST /images, or index into a Milvus server that both can reach.
    SIGTERM / SIGINT stop it gracefully: no new connections, requests in flight finish, the store is
    flushed, exit 0.
    """
    import logging
    import socket

    from .server import Service
    from .server import serve as run_server
    from .serving import logs
    from .serving.auth import Keys
    from .serving.run import exit_past_stuck_threads

    keys = [k for k in api_keys if k]
    access = Keys(keys, reads=keys_for_reads)
    if log_json:  # gRPC's C core (the Milvus client) writes its own plain lines to stderr: not in a JSON log
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    logs.configure(log_level, log_json)
    log = logging.getLogger(logs.SERVER_LOGGER)
    try:  # before the model loads: a taken port should fail at once
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    for warning in _serve_warnings(host, port, keys, keys_for_reads):
        log.warning("%s", warning)
    vs = _open(uri, collection, token, model, device, precision, batch_size)
    service = Service(
        vs, upload_dir=upload_dir, thumbnail_dir=thumbnail_dir, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_batch=max_batch, read_timeout=read_timeout, allow_private_urls=allow_private_urls,
    )
    guarded = ("reads and writes" if keys_for_reads else "writes") if keys else "nothing"
    log.info("serving %r in %s (%d images, %s) on http://%s:%d/; API keys: %d (guarding %s); CORS origins: %s",
             service.vs.store.collection, service.vs.store.uri, service.vs.count(), service.vs.spec.name, host, port,
             len(access), guarded, ", ".join(o for o in cors_origins if o) or "none")
    stopped_by = run_server(service, host, port, log_level, max_connections, keys=access,
                            cors_origins=[o for o in cors_origins if o], log_json=log_json,
                            shutdown_timeout=shutdown_timeout)
    if stopped_by is not None:
        log.info("stopped (%s): store flushed and closed", _signal_name(stopped_by))
        exit_past_stuck_threads()


def _signal_name(sig: int) -> str:
    import signal

    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def _explicit(ctx: click.Context, options: dict) -> dict:
    """The options the user gave (command line or environment); the rest keep the library's defaults."""
    from click.core import ParameterSource

    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {name: value for name, value in options.items() if ctx.get_parameter_source(name) in given}


# Options of `train` whose declaration other commands share: field name -> the option, given the field.
_SHARED_TRAIN_OPTIONS = {
    "batch_size": lambda f: batch_size_option(f.default, f.metadata["help"]),
    "device": lambda f: device_option,
    "precision": lambda f: precision_option,
    "num_workers": lambda f: workers_option(f.name),
}


def _train_option(f: dataclasses.Field, kind: type):
    """The click option of one :class:`TrainOptions` field, from its metadata (see ``options._option``)."""
    if f.name in _SHARED_TRAIN_OPTIONS:
        return _SHARED_TRAIN_OPTIONS[f.name](f)
    if "help" not in f.metadata:
        raise TypeError(f"TrainOptions.{f.name} has no `vitsearch train` option: declare it with options._option")
    meta = f.metadata
    name = meta.get("option", "--" + f.name.replace("_", "-"))
    if "flag" in meta:
        return click.option(name, f.name, flag_value=meta["flag"], default=f.default, help=meta["help"])
    if "choices" in meta:
        kind = click.Choice(meta["choices"])
    elif "min" in meta or "max" in meta:
        bounds = {k: meta[k] for k in ("min", "max", "min_open", "max_open") if k in meta}
        kind = click.IntRange(**bounds) if kind is int else click.FloatRange(**bounds)
    return click.option(name, f.name, type=kind, default=f.default, show_default=f.default is not None,
                        help=meta["help"] or None)


def train_options(fn):
    """One option per :class:`TrainOptions` field, handed to the command as one dict, ``options``."""
    import typing

    fields = dataclasses.fields(TrainOptions)
    hints = typing.get_type_hints(TrainOptions)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, options={f.name: kwargs.pop(f.name) for f in fields}, **kwargs)

    for f in reversed(fields):
        kind = next(t for t in (*typing.get_args(hints[f.name]), hints[f.name]) if t is not type(None))
        wrapper = _train_option(f, kind)(wrapper)
    return wrapper


@main.command()
@click.argument("data", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the trained model.")
@train_options
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out.")
@click.option("--overwrite", is_flag=True, help="Replace what --out holds.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.pass_context
@_handle_errors
def train(ctx, data, out, resume, overwrite, as_json, options):
    """Fine-tune the encoder on DATA so that alike images embed close together.

    DATA is a folder with one sub-folder per class, a CSV manifest (path,label), or a folder of
    unlabelled images (self-supervised). The result in --out is a save_pretrained directory for
    --model in every command.
    """
    from .training import train as run_training

    options = _explicit(ctx, options)
    try:
        with _ProgressDisplay() as display:
            result = run_training(data, out, resume=resume, overwrite=overwrite, progress=display, **options)
    except TrainingInterrupted as exc:
        click.echo(f"Interrupted: {exc}", err=True)
        sys.exit(130)
    for failure in result.failed:
        click.echo(f"skipped {_shown(failure.path)}: {failure.reason}", err=True)
    if as_json:
        click.echo(_json(result.as_dict()))
        return
    last = result.history[-1] if result.history else {}
    val = last.get("val")
    summary = f"saved {result.out} ({result.epochs} epochs, {result.steps} steps, {result.seconds:.0f}s"
    if val:
        summary += f"; validation P@1 {val['precision_at_1']:.4f}"
        if val["k"] > 1:
            summary += f", P@{val['k']} {val['precision_at_k']:.4f}"
    click.echo(summary + ")")


def _check_train_params(command: click.Command) -> None:
    """Every option of ``train`` is a :class:`TrainOptions` field or an argument of its function (so none is
    parsed and then dropped); raises at import otherwise."""
    import inspect

    fields = {f.name for f in dataclasses.fields(TrainOptions)}
    own = set(inspect.signature(command.callback).parameters) - {"ctx", "options"}
    stray = {p.name for p in command.params} - fields - own
    if stray or fields & own:
        raise TypeError(f"train options that reach no field: {sorted(stray)}; fields taken twice: {sorted(fields & own)}")


_check_train_params(train)


@main.command(name="eval")
@click.argument("data", type=click.Path(exists=True))
@click.option("--model", envvar="VITSEARCH_MODEL", help="Hub id or local directory. Default: the bundled model.")
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True, help="Depth of P@k and R@k.")
@click.option("--near-dup", is_flag=True, help="Also measure recall@1 of each image from edited copies of it.")
@click.option("--limit", type=click.IntRange(2), help="Evaluate a class-balanced random sample of this many images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --limit and of the --near-dup edits.")
@batch_size_option()
@device_options
@workers_option()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_handle_errors
def eval_(data, model, k, near_dup, limit, seed, batch_size, device, precision, workers, as_json):
    """Measure retrieval on DATA: each image queries all the others (P@1, P@k, R@k, mAP@R).

    DATA is labelled like for `train` (class folders or a CSV manifest); with --near-dup any folder works.
    """
    from .evaluation import evaluate

    with _ProgressDisplay() as display:
        report = evaluate(
            data, model=model, k=k, near_dup=near_dup, limit=limit, seed=seed, device=device, precision=precision,
            batch_size=batch_size, num_workers=workers, progress=display,
        )
    for failure in report.failed:
        click.echo(f"skipped {_shown(failure.path)}: {failure.reason}", err=True)
    d = report.as_dict()
    if as_json:
        click.echo(_json(d))
        return
    click.echo(f"model         {d['model']}")
    click.echo(f"images        {d['n']}" + (f" in {d['classes']} classes" if d["classes"] else ""))
    if "precision_at_1" in d:
        click.echo(f"P@1           {d['precision_at_1']:.4f}")
        click.echo(f"P@{k:<12}{d['precision_at_k']:.4f}")
        click.echo(f"R@{k:<12}{d['recall_at_k']:.4f}")
        click.echo(f"mAP@R         {d['map_at_r']:.4f}")
    if report.near_dup:
        nd = report.near_dup
        edits = ", ".join(f"{name} {value:.3f}" for name, value in nd["by_edit"].items())
        click.echo(f"near-dup R@1  {nd['recall_at_1']:.4f} ({nd['copies']} copies: {edits})")
        click.echo(f"  vs originals only {nd['recall_at_1_originals_only']:.4f} (the copies not in the set)")


if __name__ == "__main__":  # pragma: no cover
    run()
