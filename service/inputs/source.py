"""Where a job's input comes from: a URL fetched with the SSRF guard, or a file the user uploaded."""

from __future__ import annotations

from service.core.errors import InputRejected
from service.inputs import text as input_text
from service.inputs.fetch import FetchedInput, InputFetcher
from service.storage.base import Storage
from service.store.uploads import UploadStore, storage_key, upload_id_from_url


class InputSource:
    def __init__(self, fetcher: InputFetcher, uploads: UploadStore, storage: Storage) -> None:
        self._fetcher = fetcher
        self._uploads = uploads
        self._storage = storage

    async def load(self, url: str, user_id: str) -> FetchedInput:
        input_id = upload_id_from_url(url)
        if input_id is None:
            return await self._fetcher.fetch(url)
        upload = await self._uploads.owned(input_id, user_id)
        body = await self._storage.get(storage_key(input_id)) if upload is not None else None
        if upload is None or body is None:
            raise InputRejected("the uploaded input has expired or was removed; upload it again")
        return FetchedInput(
            text=input_text.decode_text(body, None),
            content_type=upload.content_type,
            name=upload.name,
            size=len(body),
        )
