"""Every key a script touches arrives in its KEYS, built in Python from ``service.store.names``: no
script spells a key name or builds one (what Redis proxies and Cluster require)."""

from __future__ import annotations

import re

import pytest

from service.store import (
    batch_scripts,
    call_scripts,
    ending_scripts,
    limiter_scripts,
    lua,
    names,
    scripts,
    stream_leases,
    upload_quota,
    webhook_lua,
)

FRAGMENTS = {"COMMON", "RECORD_HELPERS", "ENDING_KEYS"}  # pieces of scripts, not scripts
MODULES = (
    scripts,
    ending_scripts,
    call_scripts,
    limiter_scripts,
    stream_leases,
    upload_quota,
    webhook_lua,
    batch_scripts,
)
SCRIPTS = {
    f"{module.__name__.rsplit('.', 1)[-1]}.{name}": getattr(module, name)
    for module in MODULES
    for name in dir(module)
    if name.isupper()
    and name not in FRAGMENTS
    and isinstance(getattr(module, name), str)
    and "redis.call" in getattr(module, name)
}
# Commands whose first argument is not a key.
KEYLESS = {"TIME", "PUBLISH"}
_CALL = re.compile(r"redis\.call\('([A-Z]+)'(?:,\s*([^,)]+))?")
_BOUND_FROM_KEYS = re.compile(r"local\s+([\w\s,]+?)\s*=\s*((?:KEYS\[\d+\][\s,]*)+|unpack\(KEYS\))")
_PARAMETERS = re.compile(r"local function \w+\(([^)]*)\)")


def key_arguments(source: str) -> list[str]:
    return [arg.strip() for command, arg in _CALL.findall(source) if command not in KEYLESS and arg]


def names_bound_from_keys(source: str) -> set[str]:
    bound = {
        name.strip() for match in _BOUND_FROM_KEYS.finditer(source) for name in match.group(1).split(",")
    }
    parameters = {
        name.strip() for match in _PARAMETERS.finditer(source) for name in match.group(1).split(",")
    }
    return bound | parameters


def test_the_scripts_are_all_found() -> None:
    assert {"scripts.SUBMIT", "scripts.START", "ending_scripts.COMPLETE", "call_scripts.RECORD"} <= set(
        SCRIPTS
    )
    assert len(SCRIPTS) >= 17


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_key_a_script_touches_comes_from_its_keys(name: str) -> None:
    source = SCRIPTS[name]
    assert "@" not in source  # every placeholder filled
    # No key name spelled inside a script (the pub/sub channels are channels, not keys).
    spelled = source.replace(f"'{names.CANCEL_CHANNEL}'", "").replace(f"'{names.WEBHOOKS_CHANNEL}'", "")
    assert "rs:" not in spelled and "arq:" not in spelled
    allowed = names_bound_from_keys(source)
    for arg in key_arguments(source):
        assert ".." not in arg, f"{name} builds a key: {arg}"
        # A choice between two keys ('cond and A or B') is as good as each of them.
        chosen = re.fullmatch(r".+ and (\w+(?:\[\d+\])?) or (\w+(?:\[\d+\])?)", arg)
        for key in chosen.groups() if chosen else (arg,):
            # KEYS[i]: a script over a variable number of jobs loops over the keys it was handed.
            from_keys = re.fullmatch(r"KEYS\[(?:\d+|[a-z_]\w*)\]", key)
            assert from_keys or key in allowed, f"{name}: {arg} is not from KEYS"


def test_the_checker_catches_a_built_key() -> None:
    built = (
        "local job = 'rs:job:' .. ARGV[1]\nredis.call('HGET', job, 'f')\nredis.call('GET', ARGV[2] .. ':x')"
    )
    args = key_arguments(built)
    assert args == ["job", "ARGV[2] .. ':x'"] and "job" not in names_bound_from_keys(built)
    assert key_arguments("redis.call('ZREM', ARGV[i], 'm')") == ["ARGV[i]"]  # not a key it was handed


def test_an_unknown_placeholder_is_refused() -> None:
    with pytest.raises(KeyError):
        lua.with_names("redis.call('GET', '@NO_SUCH_NAME@')")


def test_lua_knows_constants_only() -> None:
    channels = {names.CANCEL_CHANNEL, names.WEBHOOKS_CHANNEL}
    assert not any(value.startswith("rs:") and value not in channels for value in names.LUA_NAMES.values())
