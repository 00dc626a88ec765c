"""Building the example model image: Debian base, Python deps, the model server, the model.

Only package registries are contacted (the machine's Debian mirror, pip's configured index);
everything else comes from this repository.
"""

from __future__ import annotations
