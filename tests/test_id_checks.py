"""Ids and names are checked whole: a trailing newline (which `$` lets through) is not part of an id."""

from __future__ import annotations

import pytest

from service.api import reports
from service.api.events import endpoint
from service.storage.base import check_key
from service.store.keys import check_user_id
from service.store.uploads import upload_id_from_url

JOB_ID = "0123456789abcdef0123456789abcdef"


def test_job_ids_with_a_trailing_newline_are_not_job_ids() -> None:
    for pattern in (reports._JOB_ID, endpoint._JOB_ID):
        assert pattern.match(JOB_ID) and not pattern.match(JOB_ID + "\n")


def test_user_ids_upload_ids_and_storage_keys_refuse_a_trailing_newline() -> None:
    assert check_user_id("alice") == "alice"
    with pytest.raises(ValueError, match="user id"):
        check_user_id("alice\n")
    assert upload_id_from_url("input://inp_" + "a" * 32) is not None
    assert upload_id_from_url("input://inp_" + "a" * 32 + "\n") is None
    with pytest.raises(ValueError, match="unsafe"):
        check_key("reports/x.pdf\n")
