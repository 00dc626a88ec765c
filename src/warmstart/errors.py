"""The errors every layer raises for bad input or failed I/O, gathered for the CLI.

The CLI prints any of these as one line and exits non-zero; anything else is a bug.
"""

from __future__ import annotations

from warmstart.model_dir import ModelDirError
from warmstart.oci.errors import OCIError
from warmstart.registry.errors import RegistryError
from warmstart.store.errors import StoreError

USER_ERRORS: tuple[type[BaseException], ...] = (OCIError, RegistryError, StoreError, ModelDirError)
