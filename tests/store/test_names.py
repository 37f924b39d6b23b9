"""Every script's key names come from one module: no placeholder is left unfilled, none is unknown."""

from __future__ import annotations

import re

import pytest

from service.store import limiter_scripts, lua, names, scripts, stream_leases

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


def test_the_stream_lease_scripts_build_no_names() -> None:
    """Every key they touch comes in KEYS, named by names.py on the Python side."""
    for source in (stream_leases.ACQUIRE, stream_leases.REFRESH):
        assert "rs:" not in source and "arq:" not in source and "KEYS[2]" not in source
