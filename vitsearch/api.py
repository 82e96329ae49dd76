"""The Python API: what the CLI does, one call away.

    >>> from pathlib import Path
    >>> from vitsearch import VisualSearch
    >>> vs = VisualSearch("photos.db")                  # a Milvus Lite file, or "http://host:19530"
    >>> vs.index(["photos"]).as_dict()                  # doctest: +ELLIPSIS
    {'scanned': 4, 'added': 4, 'updated': 0, 'unchanged': 0, 'removed': 0, 'reused': 0, 'embedded': 4, ...}
    >>> vs.index(["photos"]).unchanged                  # a re-run: nothing changed, nothing embedded
    4
    >>> for hit in vs.query("photos/chelsea.jpg", k=2):
    ...     print(hit.rank, f"{hit.score:.2f}", Path(hit.path).name, hit.metadata["width"])
    1 1.00 chelsea.jpg 451
    2 1.00 chelsea_small_bright.png 225
    >>> vs.close()

Beyond folders, :meth:`VisualSearch.index` takes product feeds, object-store prefixes and image URLs,
and :meth:`VisualSearch.query` takes a URL (see docs/catalogues.md)::

    vs.index("products.csv", image_column="image_url", id_column="sku")   # a product feed
    vs.index("s3://bucket/catalogue/")                                     # an object-store prefix
    vs.query("https://cdn.example.com/shoe.jpg", k=5)                      # a query by URL
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import __version__
from .checkpoint import BUNDLED_DIR, ModelSpec, load_spec
from .dups import DupGroup, find_duplicates
from .errors import ImageError, ModelError, ModelMismatchError, StoreError, UsageError, VitsearchError, check_count
from .exif import read_exif
from .fetch import Fetcher, FetchError, FetchOptions, is_remote, local_path
from .filters import NearInput, PhotoFilter, TimeInput
from .images import ImageInput, check_data, describe, named_bytes
from .indexer import Indexer, IndexSummary
from .metadata import check_field, check_value, read_metadata
from .progress import Callback, Progress
from .search import Hit, check_min_score, query_vectors, search_images
from .settings import resolve_collection, resolve_model, resolve_token, resolve_uri
from .sources import Folders, open_sources
from .store import EXIF_FIELDS, Store, fields_to_keep, has_field, make_row, path_id, user_fields
from .tagging import Tag, tag_vectors

if TYPE_CHECKING:
    from typing_extensions import Self

    from .distributed import Dist
    from .embed import Encoder


# The suffix of the collection that a reindex builds before it replaces the collection
STAGING = "__reindex"
# Rows a copy reads before it writes them (a page of the source's rows; at 384 dimensions about 2 MB)
COPY_BATCH = 1000


def model_record(spec: ModelSpec) -> dict:
    return {
        "model": spec.name,
        "fingerprint": spec.fingerprint,
        "dim": spec.dim,
        "bundled": spec.is_bundled,
        "vitsearch": __version__,
    }


class VisualSearch:
    """A collection of indexed images and the encoder that made its vectors.

    ``uri`` is a Milvus Lite file (a path ending in ``.db``) or a Milvus server (``http://host:19530``,
    with ``token``); by default ``$VITSEARCH_URI``, else ``vitsearch.db`` in ``$XDG_DATA_HOME/vitsearch``.
    ``collection`` defaults to ``images``. ``model`` (a hub id or a local ``save_pretrained``
    directory) defaults to the model that built the collection, else the bundled one. Nothing is
    opened or loaded until it is needed: the store at the first call, the model's weights at the
    first image that needs embedding. Use it as a context manager, or call :meth:`close`. ``fetch``
    sets how images given by URL or URI are fetched (concurrency, timeouts, retries, size limit,
    cache: :class:`~vitsearch.fetch.FetchOptions`).

    Its parts can be passed in instead: ``store`` (a :class:`~vitsearch.store.Store`, in place of
    ``uri``, ``collection`` and ``token``) and ``encoder`` (an :class:`~vitsearch.embed.Encoder` already
    built, in place of ``model``, ``device``, ``precision`` and ``num_workers``; its model is the one
    the collection is checked against). :meth:`close` closes the store, also one passed in.

    ``encoder_process=True`` suits a process that indexes or queries once and exits (the CLI does
    this): each :meth:`index` of local files and each :meth:`query` starts the model in a second
    process at once, so that its import and weights load while the store opens, then ends it
    (:mod:`vitsearch.encoder_process`).

    Metadata is stored with the rows, and queries filter on it:

        >>> from pathlib import Path
        >>> fields = {"photos/chelsea.jpg": {"kind": "cat", "price": 12.5},
        ...           "photos/chelsea_small_bright.png": {"kind": "cat", "price": 4.0}}
        >>> with VisualSearch("shop.db") as vs:
        ...     added = vs.index(["photos"], metadata=fields).added
        ...     hits = vs.query("photos/rocket.jpg", k=5, filter='kind == "cat" and price < 10')
        >>> added, [(Path(hit.path).name, hit.metadata["price"]) for hit in hits]
        (4, [('chelsea_small_bright.png', 4.0)])
    """

    def __init__(
        self,
        uri: str | None = None,
        collection: str | None = None,
        *,
        model: str | None = None,
        token: str | None = None,
        device: str | None = "auto",
        precision: str | None = "auto",
        batch_size: int | None = None,
        num_workers: int | None = None,
        fetch: FetchOptions | None = None,
        store: Store | None = None,
        encoder: Encoder | None = None,
        encoder_process: bool = False,
    ):
        if store is not None and (uri, collection, token) != (None, None, None):
            raise UsageError("give a store, or its uri, collection and token, not both")
        if encoder is not None and model is not None:
            raise UsageError("give an encoder, or the model to build one with, not both")
        self.fetch_options = fetch or FetchOptions()
        if store is None:
            store = Store(resolve_uri(uri), resolve_collection(collection), token=resolve_token(token))
        self.store = store
        self.model_arg = None if encoder is not None else resolve_model(model)
        self.device, self.precision = device, precision
        self.batch_size, self.num_workers = batch_size, num_workers
        self._spec: ModelSpec | None = encoder.spec if encoder is not None else None
        self._encoder: Encoder | None = encoder
        self.encoder_process = encoder_process

    # -- model ------------------------------------------------------------------------------
    @property
    def spec(self) -> ModelSpec:
        if self._spec is None:
            meta = self.store.meta() or {}
            name = self.model_arg
            if name is None and meta.get("model"):
                name = None if meta.get("bundled") else meta["model"]
            if name is not None and self.model_arg is None and self._moved(name):
                raise ModelError(
                    f"collection {self.store.collection!r} was indexed with the model at {name}, which is no longer "
                    "there: give its new place with --model (or model=), or rebuild with `vitsearch index --reindex`"
                )
            self._spec = load_spec(name)
        return self._spec

    @staticmethod
    def _moved(recorded: str) -> bool:
        """Whether a collection's recorded model is a local folder that is gone (a hub id is never local)."""
        return os.path.isabs(recorded) and not os.path.exists(recorded)

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            from .embed import Encoder  # torch is imported only when something is embedded

            self._encoder = Encoder(
                self.spec,
                device=self.device,
                precision=self.precision,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                lazy=True,  # indexing decodes its first batches while the weights load
            )
        return self._encoder

    def _check_model(self) -> None:
        if self.store.meta() is None:
            return
        meta = _model_record_of(self.store, "--collection")
        if self._spec is None and self.model_arg is None and not meta.get("bundled") and self._moved(meta["model"]):
            # the collection's own model, moved away: what needs no model (an unchanged re-index, a query
            # by an indexed image) goes on; what needs it is told where it was (see ``spec``)
            return
        if meta.get("fingerprint") == self.spec.fingerprint:
            return
        if meta.get("bundled") and self.spec.is_bundled:
            raise ModelMismatchError(
                f"collection {self.store.collection!r} was indexed with an earlier bundled model (fingerprint "
                f"{meta.get('fingerprint')}); this vitsearch bundles another one ({self.spec.fingerprint}). "
                "Rebuild the collection with `vitsearch index PATH --reindex`"
            )
        was = "the bundled model" if meta.get("bundled") else repr(meta.get("model"))
        now = "the bundled model" if self.spec.is_bundled else repr(self.spec.name)
        raise ModelMismatchError(
            f"collection {self.store.collection!r} was indexed with {was} (fingerprint {meta.get('fingerprint')}), "
            f"not {now} (fingerprint {self.spec.fingerprint}); use that model, another --collection, "
            "or rebuild this one with `vitsearch index --reindex`"
        )

    def ensure_collection(self) -> None:
        """Make the collection ready for writing: create it for this model when it is absent (another
        process creating it at the same moment is fine if its model is ours), else check that its model
        is this one (:class:`ModelMismatchError` if not)."""
        if self.store.exists():
            self._check_model()
            return
        try:
            self.store.create(model_record(self.spec))
        except StoreError:
            if not self.store.exists():
                raise
            self._check_model()  # another writer created it a moment ago: fine if its model is ours

    def require(self) -> None:
        """The collection must exist and have been built with this model: :class:`VitsearchError` saying
        to index first when it does not exist, :class:`ModelMismatchError` when its model is another."""
        self._require_collection()
        self._check_model()

    def _require_collection(self) -> None:
        if not self.store.exists():
            raise VitsearchError(
                f"collection {self.store.collection!r} does not exist in {self.store.uri}: run `vitsearch index` first"
            )

    # -- operations -------------------------------------------------------------------------
    def index(
        self,
        paths: Sequence[str | os.PathLike] | str | os.PathLike,
        *,
        keep_missing: bool = False,
        reindex: bool = False,
        metadata: str | os.PathLike | dict[str, dict] | None = None,
        progress: Callback | None = None,
        dist: Dist | None = None,
        image_column: str | None = None,
        id_column: str | None = None,
    ) -> IndexSummary:
        """Sync images into the collection (incremental; see :class:`Indexer`): local files and folders,
        product feeds (``.csv``, ``.jsonl``, ``.parquet``, with ``image_column``; see
        :mod:`vitsearch.feeds`), image URLs, and object-store URIs such as ``s3://bucket/prefix``.

        ``metadata``: a CSV / JSON Lines file (see :mod:`vitsearch.metadata`) or a dict
        ``{path: {field: value}}``; its fields are stored with the rows and can be filtered on.
        ``id_column``: a feed column kept as text in a field of that name (e.g. ``sku``).
        ``reindex``: embed every image again (with the model asked for, else the collection's) into a new
        collection that takes the old one's place when the run is complete: the metadata stored with
        each image (labels written by :meth:`tag`, ``metadata``, feed columns) is kept, and the old
        collection answers until then; a reindex that is stopped leaves it as it was, and the next one
        goes on where that one stopped. Rows of images no longer listed are counted as ``removed``.
        ``dist``: this process's place in a torch.distributed group (:mod:`vitsearch.distributed`);
        every rank calls ``index`` with the same arguments and rank 0 gets the whole run's summary.
        ``progress``: called with a :class:`~vitsearch.progress.Progress` count as images are embedded
        (``embedding``) or downloaded (``fetching``).
        """
        fetcher = Fetcher(self.fetch_options)
        try:
            sources = open_sources(_paths(paths), image_column=image_column, id_column=id_column, fetcher=fetcher)
            local = all(isinstance(s, Folders) for s in sources)
            if dist is not None and not local:
                raise VitsearchError("under torchrun, vitsearch indexes local files and folders; index feeds, "
                                     "URLs and buckets with one process")
            early = self._start_encoder_process() if local and dist is None else None
            try:
                return self._index(sources, fetcher, keep_missing, reindex, metadata, progress, dist, early)
            finally:
                if early is not None:
                    early.close()
        finally:
            fetcher.close()

    def _index(self, sources, fetcher, keep_missing, reindex, metadata, progress, dist, early=None) -> IndexSummary:
        if metadata is not None and not isinstance(metadata, dict):
            metadata = read_metadata(metadata)
        elif metadata:
            checked = {}
            for path, fields in metadata.items():
                if not isinstance(fields, dict):
                    raise UsageError(f"metadata[{path!r}] must be a dict of fields, not {type(fields).__name__}")
                for name, value in fields.items():
                    check_field(name, "metadata")
                    if value is not None:  # None: no value, as an empty CSV cell
                        check_value(name, value, f"metadata of {path}")
                checked[_key(path)] = {k: v for k, v in fields.items() if v is not None}
            metadata = checked
        model = None
        kept: dict[str, dict] = {}
        old_ids: set[int] = set()
        old = None  # with reindex: the collection being replaced
        if dist is None or dist.is_main:  # with a Milvus Lite file, only rank 0 may open it
            # decided before a --reindex switches collections: the asked-for model, else the collection's
            # (otherwise only when something is embedded: a run with nothing new needs no model)
            spec = self.spec if reindex or dist is not None else None
            if reindex:
                old, (kept, old_ids) = self.store, self._kept_fields()
                self.store = self._staging(spec)
            self.ensure_collection()
            model = None if spec is None or spec.is_bundled else spec.name
        if dist is not None:
            model = dist.broadcast(model)  # also: the collection exists before any rank writes to it
            if not dist.is_main:
                self._spec = load_spec(model)
                if reindex:
                    old, self.store = self.store, self._staging_store()
        try:
            indexer = Indexer(self.store, lambda: self._encoder_for(early), batch_size=self.batch_size,
                              progress=progress, fetcher=fetcher)
            summary = indexer.sync(sources, keep_missing=keep_missing, metadata=metadata, dist=dist, kept=kept)
            if old is not None and (dist is None or dist.is_main):
                summary.removed = self._replace(old, old_ids)
        finally:
            if old is not None and self.store is not old:  # stopped before the swap: the old collection stays
                self.store.close()
                self.store = old
        return summary

    def _kept_fields(self) -> tuple[dict[str, dict], set[int]]:
        """For a reindex: the metadata of the collection's rows (the user's fields, not EXIF's nor
        vitsearch's) by path, for the new rows to keep, and the ids of all its rows."""
        kept: dict[str, dict] = {}
        ids: set[int] = set()
        if not self.store.exists():
            return kept, ids
        _model_record_of(self.store, "--collection")  # not vitsearch's rows: nothing to rebuild, nothing to drop
        for row in self.store.iter_rows(fields=["id", "path", "$meta"]):
            ids.add(row["id"])
            fields = fields_to_keep(row, from_feed=True)  # a feed's columns come from the feed again
            if fields:
                kept[row["path"]] = fields
        return kept, ids

    def _staging(self, spec: ModelSpec) -> Store:
        """The collection a reindex builds (``<name>__reindex``) before it takes the old one's place. One
        left by a reindex of the same model that was stopped is kept: its rows are not embedded again."""
        staging = self._staging_store()
        if staging.exists() and (staging.meta() or {}).get("fingerprint") != spec.fingerprint:
            staging.drop()
        return staging

    def _staging_store(self) -> Store:
        return self.store.sibling(self.store.collection + STAGING)

    def _replace(self, old: Store, old_ids: set[int]) -> int:
        """Put the collection a reindex built in the place of ``old``; returns how many of the rows of
        ``old`` (``old_ids``) the new one does not have (images no longer listed, or that failed now)."""
        new_ids = {row["id"] for row in self.store.iter_rows(fields=["id"])} if old_ids else set()
        old.take_over(self.store)
        self.store = old
        return len(old_ids - new_ids)

    def _start_encoder_process(self):
        """With ``encoder_process``: the model starting in a second process now, before the store
        opens, with a guess of the model (the one asked for, else the bundled one); else None."""
        if not self.encoder_process or self._encoder is not None:
            return None
        from .encoder_process import EncoderProcess

        return EncoderProcess(self.model_arg, device=self.device, precision=self.precision,
                              batch_size=self.batch_size, num_workers=self.num_workers)

    def _encoder_for(self, early):
        """The encoder to embed with: ``early`` (from :meth:`_start_encoder_process`) when its guess is
        the model this collection needs, else the in-process one."""
        if early is not None and early.fingerprint == self.spec.fingerprint:
            return early
        return self.encoder

    def put(
        self,
        path: str | os.PathLike,
        vector: Sequence[float],
        *,
        sha256: str,
        width: int,
        height: int,
        exif: dict | None = None,
        fields: dict | None = None,
    ) -> tuple[dict, bool]:
        """Write the row of one local file whose vector the caller has already made (the server embeds
        its uploads in micro-batches); returns (the row, whether it is new). The collection must exist
        (see :meth:`ensure_collection`).

        The file's size and mtime are read from disk; ``width`` and ``height`` are its upright size.
        ``exif``: its EXIF fields (:func:`vitsearch.exif.read_exif`), read from the file when not given.
        The user metadata of a stored row of the same path is kept, with ``fields`` over it.
        """
        for name in fields or {}:
            check_field(name, "field")
        key = os.path.abspath(os.fspath(path))
        stat = os.stat(key)
        if exif is None:
            exif = read_exif(key)
        old = self.store.get([path_id(key)], ["*"])
        kept = user_fields(old[0]) if old else {}
        row = make_row(key, stat.st_size, stat.st_mtime, sha256, width, height, vector, exif=exif,
                       user={**kept, **(fields or {})}, previous=old[0] if old else None)
        self.store.upsert([row])
        return row, not old

    def query(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        k: int = 10,
        filter: str | None = None,
        group_by: str | None = None,
        taken_after: TimeInput | None = None,
        taken_before: TimeInput | None = None,
        near: NearInput | None = None,
        camera: str | None = None,
        min_score: float | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """Nearest indexed images: one query → a list of hits; a list of queries → a list of lists.

        ``group_by`` names a metadata field (e.g. ``product_id``): the result is then the best image
        of each of the ``k`` nearest distinct values; images without the field count on their own.
        ``taken_after`` (inclusive) and ``taken_before`` (exclusive): dates or times ('2024-06-01',
        '2024-06-01T18:30+02:00', ``datetime``, epoch seconds; UTC unless an offset is given).
        ``near``: 'LAT,LON,KM' or (lat, lon, km). ``camera``: words of the camera's make or model
        ('iphone 15'), in any case. Each keeps only the photos whose EXIF says so, and combines with
        ``filter`` (see :mod:`vitsearch.filters` for the expressions they become).
        A query that is an indexed file, unchanged since, or the bytes of one, uses its stored vector
        (see :func:`vitsearch.search.stored_vectors`): the model is loaded only for the others.
        A query given as a URL or an object-store URI is fetched first (its bytes are not kept).
        ``min_score`` (a cosine similarity, -1 to 1) keeps only the hits at least that similar, so a
        query unlike everything indexed gets fewer than ``k`` hits, or none.
        """
        single = not isinstance(images, (list, tuple))
        photo = PhotoFilter.build(taken_after=taken_after, taken_before=taken_before, near=near, camera=camera)
        early = self._start_encoder_process()  # ended unused if every query is an indexed image
        try:
            self.require()
            items = self.fetch_images([images] if single else list(images))
            results = search_images(
                lambda: self._encoder_for(early), self.store, items, k=k, filter=filter, group_by=group_by,
                photo=photo, min_score=min_score,
            )
        finally:
            if early is not None:
                early.close()
        return results[0] if single else results

    def fetch_images(self, images: list[ImageInput]) -> list[ImageInput]:
        """``images`` with each URL or object-store URI replaced by its bytes, which messages call by the
        URL (:class:`ImageError` naming the URL and the reason when one cannot be fetched, or is not
        an image: then with what the server said it sent, as the indexer says it)."""
        images = [local_path(item) if isinstance(item, str) else item for item in images]  # file:// URIs
        remote = [i for i, item in enumerate(images) if isinstance(item, str) and is_remote(item)]
        if not remote:
            return images
        out = list(images)
        with Fetcher(self.fetch_options) as fetcher:
            for i in remote:
                url = images[i]
                try:
                    fetched = fetcher.open(url)
                except FetchError as exc:
                    raise ImageError(f"{url}: {exc}") from None
                try:
                    check_data(fetched.data)
                except ImageError as exc:
                    raise ImageError(f"{url}: {exc}{fetched.hint}") from None
                out[i] = named_bytes(fetched.data, url)
        return out

    def tag(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        field: str = "label",
        k: int = 15,
        min_confidence: float = 0.0,
        filter: str | None = None,
        write: bool = False,
        min_score: float | None = None,
    ) -> list[Tag]:
        """Predict ``field`` for each image from its ``k`` nearest labelled neighbours (one :class:`Tag` each).

        Indexed images never vote for themselves. With ``min_score`` only neighbours at least that
        similar vote, so an image unlike every labelled one gets no label. ``write=True`` stores confident labels on the rows of
        indexed images (given by path) that have no value for ``field`` yet.

            >>> labels = {"photos/chelsea.jpg": {"label": "cat"}, "photos/rocket.jpg": {"label": "rocket"}}
            >>> with VisualSearch("photos.db") as vs:
            ...     _ = vs.index(["photos"], metadata=labels)
            ...     tag, = vs.tag("photos/chelsea_small_bright.png", k=1, write=True)
            >>> tag.label, tag.confidence, tag.written
            ('cat', 1.0, True)
        """
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        check_min_score(min_score)
        self.require()
        vectors = query_vectors(self.store, items, lambda: self.encoder)
        names = [os.path.abspath(os.fspath(i)) if isinstance(i, (str, os.PathLike)) else describe(i) for i in items]
        exclude = [{path_id(n), n} for n in names]
        tags = tag_vectors(self.store, vectors, names, field_name=field, k=k, min_confidence=min_confidence,
                           filter=filter, exclude=exclude, min_score=min_score)
        if write:
            wanted = {path_id(t.query): t.label for t, item in zip(tags, items)
                      if t.label is not None and isinstance(item, (str, os.PathLike))}
            written = self._write_labels(field, wanted)
            for t in tags:
                t.written = path_id(t.query) in written
        return tags

    def tag_missing(
        self,
        *,
        field: str = "label",
        k: int = 15,
        min_confidence: float = 0.0,
        filter: str | None = None,
        write: bool = True,
        batch_size: int = 256,
        min_score: float | None = None,
    ) -> list[Tag]:
        """Tag every indexed image that has no ``field`` yet, from its stored vector (nothing is embedded);
        the options as in :meth:`tag`."""
        check_field(field, "--field")
        check_min_score(min_score)
        check_count(batch_size, "batch_size")
        self.require()
        missing = [row["id"] for row in self.store.iter_rows("", ["id", field]) if row.get(field) is None]
        tags = []
        for start in range(0, len(missing), batch_size):
            rows = self.store.get(missing[start : start + batch_size], ["*"])
            found = tag_vectors(
                self.store, [r["vector"] for r in rows], [r["path"] for r in rows], field_name=field, k=k,
                min_confidence=min_confidence, filter=filter, exclude=[{r["id"]} for r in rows], min_score=min_score,
            )
            if write:
                written = self._write_labels(field, {r["id"]: t.label for r, t in zip(rows, found) if t.label is not None}, rows)
                for r, t in zip(rows, found):
                    t.written = r["id"] in written
            tags += found
        return tags

    def _write_labels(self, field: str, labels: dict[int, object], rows: list[dict] | None = None) -> set[int]:
        """Store ``labels`` (row id → value) on rows that lack ``field``; returns the ids written."""
        if not labels:
            return set()
        rows = rows if rows is not None else self.store.get(sorted(labels), ["*"])
        updated = [{**row, field: labels[row["id"]]} for row in rows if row["id"] in labels and row.get(field) is None]
        self.store.upsert(updated)
        return {row["id"] for row in updated}

    def duplicates(self, threshold: float = 0.95) -> list[DupGroup]:
        """Groups of exact (same sha256) and near duplicates (cosine ≥ ``threshold``), each with a keeper.

        The keeper is the member with the most pixels, then the largest file.

            >>> from pathlib import Path
            >>> with VisualSearch("photos.db") as vs:
            ...     _ = vs.index(["photos"])
            ...     groups = vs.duplicates(threshold=0.95)
            >>> [(sorted(Path(p).name for p in g.paths), Path(g.keep).name, g.exact) for g in groups]
            [(['chelsea.jpg', 'chelsea_small_bright.png'], 'chelsea.jpg', False)]
        """
        self._require_collection()
        return find_duplicates(self.store, threshold)

    def remove(self, paths: Sequence[str | os.PathLike] | str | os.PathLike) -> int:
        """Delete the rows of these files, or of every file under these folders (or URLs, or object-store
        prefixes); returns the count.

        The files themselves stay; paths that no longer exist work too. A collection that does not
        exist is a :class:`VitsearchError` (as for :meth:`query`).

            >>> with VisualSearch("photos.db") as vs:
            ...     _ = vs.index(["photos"])
            ...     vs.remove(["photos/rocket.jpg"]), vs.count()
            (1, 3)
        """
        self._require_collection()
        ids = []
        for path in _paths(paths):
            key = _key(path)
            sep = "/" if is_remote(key) else os.sep
            ids += [row["id"] for row in self.store.rows_under(key, ["id", "path"], sep=sep)]
        return self.store.delete(sorted(set(ids)))

    def copy(
        self,
        uri: str | os.PathLike,
        collection: str | None = None,
        *,
        token: str | None = None,
        progress: Callback | None = None,
    ) -> CopySummary:
        """Copy every row of this collection (vector, file facts, EXIF fields and metadata) into
        ``collection`` (default: this one's name) of the store at ``uri`` (a Milvus Lite file or a
        server, with ``token``), embedding nothing: the way from Milvus Lite to a server, a backup, or
        a second copy to try something on.

        A collection that is not there is created with this one's model record, so the copy is used
        (queried, indexed into, served) exactly as this one. One that is there must have been built
        with the same model (else :class:`ModelMismatchError`): rows of the same path are replaced,
        its other rows stay. So a copy cut short is finished by running it again. Rows keep their
        paths: a file indexed on this machine keeps its path there (a query by stored vector and the
        search work anywhere; the server's thumbnails need the files where the paths say).

            >>> with VisualSearch("photos.db") as vs:
            ...     _ = vs.index(["photos"])
            ...     vs.copy("backup.db").as_dict()          # doctest: +ELLIPSIS
            {'copied': 4, 'created': True, 'count': 4, 'uri': '.../backup.db', 'collection': 'images', ...}
            >>> with VisualSearch("backup.db") as copy:     # an unchanged re-index embeds nothing
            ...     copy.index(["photos"]).unchanged
            4
        """
        self._require_collection()
        meta = _model_record_of(self.store, "--collection")
        if not isinstance(uri, (str, os.PathLike)) or not str(os.fspath(uri)).strip():
            raise UsageError("give the store to copy into: a Milvus Lite file (.db) or a server URI")
        target = Store(os.fspath(uri), collection or self.store.collection, token=token)
        if _same_collection(self.store, target):
            raise UsageError(
                f"collection {target.collection!r} in {target.uri} is the collection being copied: give another "
                "store or collection to copy into"
            )
        started = time.monotonic()
        summary = CopySummary(uri=target.uri, collection=target.collection)
        try:
            summary.created = not target.exists()
            if summary.created:
                target.create({key: value for key, value in meta.items() if key != "schema"})
            else:
                there = _model_record_of(target, "--to-collection")
                if there["fingerprint"] != meta["fingerprint"]:
                    raise ModelMismatchError(
                        f"collection {target.collection!r} in {target.uri} was indexed with another model "
                        f"(fingerprint {there['fingerprint']}, this one's is {meta['fingerprint']}): copy into "
                        "another collection, or remove that one first"
                    )
            total = self.store.count()
            batch: list[dict] = []

            def write() -> None:
                if not summary.created:
                    _replacing(target, batch)
                target.upsert(batch)
                summary.copied += len(batch)
                batch.clear()
                if progress is not None:
                    progress(Progress("copying", summary.copied, max(total, summary.copied), unit="rows"))

            for row in self.store.iter_rows(fields=["*", "vector"]):
                batch.append(row)
                if len(batch) >= COPY_BATCH:
                    write()
            if batch:
                write()
            target.flush()  # sealed segments: a Milvus Lite copy searches at full speed at once
            summary.count = target.count()
        finally:
            target.close()
        summary.seconds = time.monotonic() - started
        return summary

    def count(self) -> int:
        return self.store.count()

    def info(self, *, exif: bool = True) -> dict:
        """The store, the collection and its model; with ``exif``, also how many rows have each EXIF
        field (one count query per field)."""
        meta = self.store.meta() or {}
        model = meta.get("model")
        if meta.get("bundled"):
            model = str(BUNDLED_DIR)
        exists = bool(meta) or self.store.exists()
        out = {
            "uri": self.store.uri,
            "collection": self.store.collection,
            "exists": exists,
            "model": model,
            "fingerprint": meta.get("fingerprint"),
            "dimension": meta.get("dim"),
            "count": self.store.count(),
            "schema": meta.get("schema"),
            "indexed_by": meta.get("vitsearch"),
        }
        if exif:
            out["exif"] = {name: self.store.count(has_field(name), strong=False) if exists else 0 for name in EXIF_FIELDS}
        return out

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class CopySummary:
    """What :meth:`VisualSearch.copy` did: rows ``copied`` into ``collection`` of the store at ``uri``,
    whether it ``created`` that collection, the ``count`` of rows it holds now and the run's
    ``seconds``. :meth:`as_dict` is what ``copy --json`` prints."""

    uri: str
    collection: str
    copied: int = 0
    created: bool = False
    count: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"copied": self.copied, "created": self.created, "count": self.count, "uri": self.uri,
                "collection": self.collection, "seconds": round(self.seconds, 3)}


def _replacing(target: Store, rows: list[dict]) -> None:
    """Make ``rows`` replace the rows of the same id in ``target`` whole: a field that a stored row has
    and the new one lacks is written as null, since Milvus Lite merges an upsert's dynamic fields into
    the stored ones (see :func:`~vitsearch.store.make_row`)."""
    new = {row["id"]: row for row in rows}
    for stored in target.get(list(new), ["*"]):
        for name in stored:
            new[stored["id"]].setdefault(name, None)


def _model_record_of(store: Store, option: str) -> dict:
    """The model record of ``store``'s collection (which exists); a :class:`StoreError` naming ``option``
    (the one to change) when it has none: a collection vitsearch did not create."""
    meta = store.meta() or {}
    if not meta.get("fingerprint"):
        raise StoreError(
            f"collection {store.collection!r} in {store.uri} was not created by vitsearch "
            f"(it has no model record); choose another {option}"
        )
    return meta


def _same_collection(a: Store, b: Store) -> bool:
    """Whether two stores name one collection (a Lite file by its real path, a server by its URI)."""
    if a.collection != b.collection or a.is_server != b.is_server:
        return False
    if a.is_server:
        return a.uri.rstrip("/").lower() == b.uri.rstrip("/").lower()
    return os.path.realpath(a.uri) == os.path.realpath(b.uri)


def _paths(paths) -> list[str | os.PathLike]:
    """One path or an iterable of them, as a list; each a path (``_key`` says so of one that is empty)."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else paths
    try:
        items = list(items)
    except TypeError:
        raise UsageError(f"give a path or a list of paths, not {type(paths).__name__}") from None
    for item in items:
        _key(item)  # the checks, before anything is done
    return items


def _key(path: str | os.PathLike) -> str:
    """A row's key for a path given by a user: URLs and URIs as given, local paths made absolute.
    An empty path is a :class:`UsageError`: made absolute it would be the current folder, and a
    blank cell or an unset variable must never name every row under it (``remove``)."""
    if not isinstance(path, (str, os.PathLike)):
        raise UsageError(f"a path must be a string or os.PathLike, not {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise UsageError(f"a path must be text, not {type(text).__name__} (decode it with os.fsdecode)")
    if not text.strip():
        raise UsageError("an empty path names no file (a blank cell or an unset variable?)")
    return text if is_remote(text) else os.path.abspath(local_path(text))
