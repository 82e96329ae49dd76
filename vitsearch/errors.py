"""The exceptions the library raises. Only the CLI and the server turn them into messages and exit codes."""


class VitsearchError(Exception):
    """Base class of every error vitsearch raises on purpose."""


class ImageError(VitsearchError):
    """An image could not be read or decoded (the message says why)."""


class ModelError(VitsearchError):
    """A model could not be found, loaded or understood."""


class StoreError(VitsearchError):
    """The Milvus store could not be opened, read or written."""


class StoreLockedError(StoreError):
    """Another process holds the Milvus Lite store."""


class ModelMismatchError(StoreError):
    """The collection was built with another model than the one asked for."""


class FilterError(StoreError):
    """A filter expression was rejected by Milvus."""
