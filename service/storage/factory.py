"""Which storage this deployment uses: S3-compatible object storage when configured, else a directory."""

from __future__ import annotations

from service.core.settings import Settings
from service.storage.base import Storage
from service.storage.local import LocalStorage


def storage_from(settings: Settings) -> Storage:
    """The object store when ``S3_BUCKET`` is set (hosts share nothing else), else a local directory."""
    if settings.s3_bucket:
        from service.storage.s3 import S3Storage  # boto3 costs ~0.2 s to import: only when it is used

        return S3Storage.from_settings(settings)
    return LocalStorage(settings.storage_root)
