"""Node-local content-addressed store: verified blobs, an index of images, a disk budget."""

from __future__ import annotations

from warmstart.store.errors import (
    BlobNotFound,
    BlobTooLarge,
    BudgetExceeded,
    StoreDigestMismatch,
    StoreError,
    StoreSizeMismatch,
)
from warmstart.store.eviction import EvictionPlan, ImageUsage, StoreSnapshot, plan_eviction
from warmstart.store.layout import Layout
from warmstart.store.models import (
    BlobSource,
    GCReport,
    ImageRecord,
    ProgressFn,
    RecoveryReport,
    VerifyReport,
)
from warmstart.store.pins import Pin
from warmstart.store.store import ContentStore

__all__ = [
    "BlobNotFound",
    "BlobSource",
    "BlobTooLarge",
    "BudgetExceeded",
    "ContentStore",
    "EvictionPlan",
    "GCReport",
    "ImageRecord",
    "ImageUsage",
    "Layout",
    "Pin",
    "ProgressFn",
    "RecoveryReport",
    "StoreDigestMismatch",
    "StoreError",
    "StoreSizeMismatch",
    "StoreSnapshot",
    "VerifyReport",
    "plan_eviction",
]
