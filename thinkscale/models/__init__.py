"""GGUF models: the catalog, the verified download cache, and resolving a name or path to a file.

See :mod:`thinkscale.models.registry`. The ``thinkscale models`` commands live in :mod:`thinkscale.models.cli`.
"""

from thinkscale.models.registry import (
    CATALOG,
    DEFAULT_MODEL,
    TEST_MODEL,
    ModelError,
    ModelSpec,
    Part,
    catalog_rows,
    default_home,
    is_pulled,
    model_path,
    pull,
    resolve,
    verify,
)

__all__ = [
    "CATALOG",
    "DEFAULT_MODEL",
    "TEST_MODEL",
    "ModelError",
    "ModelSpec",
    "Part",
    "catalog_rows",
    "default_home",
    "is_pulled",
    "model_path",
    "pull",
    "resolve",
    "verify",
]
