"""Every script's key names come from one module: no placeholder is left unfilled, none is unknown."""

from __future__ import annotations

import re

import pytest

from service.store import limiter_scripts, lua, names, scripts, stream_leases, upload_quota

SCRIPTS = {name: getattr(scripts, name) for name in dir(scripts) if name.isupper() and name != "COMMON"}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_scripts_carry_no_placeholder_and_no_name_of_their_own(name: str) -> None:
    source = SCRIPTS[name]
    assert "@" not in source
    # A key name spelled inside a script would be a second place for it: only names.py spells them.
    spelled = set(re.findall(r"'((?:rs|arq):[a-z-]+:?)", source))
    assert spelled <= set(names.LUA_NAMES.values())


def test_an_unknown_placeholder_is_refused() -> None:
    with pytest.raises(KeyError):
        lua.with_names("redis.call('GET', '@NO_SUCH_NAME@')")


def test_the_limiter_scripts_build_no_names() -> None:
    for source in (limiter_scripts.ACQUIRE, limiter_scripts.ADJUST, limiter_scripts.PAUSE):
        assert "rs:" not in source and "arq:" not in source


@pytest.mark.parametrize(
    ("source", "keys"),
    [
        (stream_leases.ACQUIRE, 1),
        (stream_leases.REFRESH, 1),
        (upload_quota.ADMIT, 2),
        (upload_quota.REFUND, 2),
    ],
)
def test_the_lease_and_upload_scripts_get_every_key_in_keys(source: str, keys: int) -> None:
    """No name built inside Lua: each key they touch comes in KEYS, named by names.py."""
    assert "rs:" not in source and "arq:" not in source and "@" not in source
    assert set(re.findall(r"KEYS\[(\d+)\]", source)) == {str(n) for n in range(1, keys + 1)}
    assert not re.search(r"redis\.call\('[A-Z]+', [^K]", source)  # every command's key is a KEYS entry
