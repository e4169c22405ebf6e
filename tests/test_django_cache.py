"""``scatterhoard.contrib.django.HoardCache`` against Django's cache backend contract.

The assertions of Django's own ``tests/cache/tests.py`` (``BaseCacheTests``
and ``BaseMemcachedTests``) for the features memcached backends support,
rewritten as pytest functions and run against a real memcached and a real
``hoard server``, over each client protocol.  What Django checks with
``time.sleep`` is checked here by reading the remaining TTL the server
reports (``mg <key> t``), so nothing depends on timing; what it checks with
mocks is checked with real failures.  Then ``django.contrib.sessions`` on
the cache backend: a session saved, loaded by key, found on the server,
deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import socket
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import require_module

django = require_module("django")

from django.conf import settings  # noqa: E402

if not settings.configured:
    settings.configure(
        SECRET_KEY="scatterhoard-tests",
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.sessions"],
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        USE_TZ=True,
        ALLOWED_HOSTS=["testserver"],
    )
    django.setup()

from django.core.cache import InvalidCacheKey  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.middleware.cache import FetchFromCacheMiddleware, UpdateCacheMiddleware  # noqa: E402
from django.test import RequestFactory, override_settings  # noqa: E402

from scatterhoard.contrib.django import HoardCache  # noqa: E402
from tests.support import hoard_server, recv_until  # noqa: E402
from tests.test_client_commands import quick_memcached  # noqa: E402

pytestmark = pytest.mark.timeout(120)

BACKEND = "scatterhoard.contrib.django.HoardCache"
MEMCACHED_MSG = "Cache key contains characters that will cause errors if used with memcached: %r"
THIRTY_DAYS = 60 * 60 * 24 * 30


def f() -> int:
    return 42


class C:
    def m(self) -> int:
        return 24


class Unpicklable:
    def __getstate__(self) -> Any:
        raise pickle.PickleError()


def custom_key_func(key: str, key_prefix: str, version: int) -> str:
    return "CUSTOM-" + "-".join([key_prefix, str(version), key])


class Caches:
    """The caches Django's tests use, all on one server: default, prefix, v2, custom_key."""

    def __init__(self, port: int, protocol: str) -> None:
        self.port = port
        self.location = f"127.0.0.1:{port}"
        self.options = {"protocol": protocol}
        self.default = self.make()
        self.prefix = self.make(KEY_PREFIX="cacheprefix")
        self.v2 = self.make(VERSION=2)
        self.custom_key = self.make(KEY_FUNCTION=custom_key_func)
        self.custom_key2 = self.make(KEY_FUNCTION="tests.test_django_cache.custom_key_func")

    def make(self, **params: Any) -> HoardCache:
        return HoardCache(self.location, {"OPTIONS": dict(self.options), **params})

    def settings(self) -> dict[str, Any]:
        return {"default": {"BACKEND": BACKEND, "LOCATION": self.location, "OPTIONS": dict(self.options)}}

    def ttl(self, made_key: str) -> int | None:
        """The seconds the server says ``made_key`` has left (-1: never expires; None: absent)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"mg " + made_key.encode() + b" t\r\n")
            line = recv_until(s, b"\r\n")
        if line.startswith(b"EN"):
            return None
        assert line.startswith(b"HD t"), line
        return int(line[4:].strip())


@pytest.fixture(scope="module")
def memcached_port() -> Iterator[int]:
    with quick_memcached() as port:
        yield port


@pytest.fixture(scope="module")
def hoard_port() -> Iterator[int]:
    with hoard_server() as port:
        yield port


@pytest.fixture(params=["memcached-text", "memcached-meta", "hoard-text", "hoard-binary", "hoard-meta"])
def caches(request: pytest.FixtureRequest) -> Iterator[Caches]:
    backend, protocol = request.param.split("-")
    c = Caches(request.getfixturevalue(f"{backend}_port"), protocol)
    c.default.clear()
    yield c
    c.default.clear()


# -- BaseCacheTests ------------------------------------------------------------------------------


def test_simple_and_none(caches: Caches) -> None:
    cache = caches.default
    cache.set("key", "value")
    assert cache.get("key") == "value"
    cache.set("key_default_none", None)
    assert cache.get("key_default_none", default="default") is None  # a cached None is not a miss


def test_add(caches: Caches) -> None:
    cache = caches.default
    assert cache.add("addkey1", "value") is True
    assert cache.add("addkey1", "newvalue") is False
    assert cache.get("addkey1") == "value"


def test_prefix(caches: Caches) -> None:
    cache, prefixed = caches.default, caches.prefix
    cache.set("somekey", "value")
    assert prefixed.has_key("somekey") is False
    prefixed.set("somekey", "value2")
    assert cache.get("somekey") == "value"
    assert prefixed.get("somekey") == "value2"


def test_non_existent(caches: Caches) -> None:
    assert caches.default.get("does_not_exist") is None
    assert caches.default.get("does_not_exist", "bang!") == "bang!"


def test_get_many(caches: Caches) -> None:
    cache = caches.default
    cache.set_many({"a": "a", "b": "b", "c": "c", "d": "d"})
    assert cache.get_many(["a", "c", "d"]) == {"a": "a", "c": "c", "d": "d"}
    assert cache.get_many(["a", "b", "e"]) == {"a": "a", "b": "b"}
    assert cache.get_many(iter(["a", "b", "e"])) == {"a": "a", "b": "b"}
    cache.set_many({"x": None, "y": 1})
    assert cache.get_many(["x", "y"]) == {"x": None, "y": 1}


def test_delete(caches: Caches) -> None:
    cache = caches.default
    cache.set_many({"key1": "spam", "key2": "eggs"})
    assert cache.get("key1") == "spam"
    assert cache.delete("key1") is True
    assert cache.get("key1") is None
    assert cache.get("key2") == "eggs"
    assert cache.delete("nonexistent_key") is False


def test_has_key_and_in(caches: Caches) -> None:
    cache = caches.default
    cache.set("hello1", "goodbye1")
    assert cache.has_key("hello1") is True
    assert cache.has_key("goodbye1") is False
    cache.set("no_expiry", "here", None)
    assert cache.has_key("no_expiry") is True
    cache.set("null", None)
    assert cache.has_key("null") is True
    assert "hello1" in cache and "null" in cache and "goodbye1" not in cache


def test_incr(caches: Caches) -> None:
    cache = caches.default
    cache.set("answer", 41)
    assert cache.incr("answer") == 42
    assert cache.get("answer") == 42
    assert cache.incr("answer", 10) == 52
    assert cache.get("answer") == 52
    assert cache.incr("answer", -10) == 42
    with pytest.raises(ValueError):
        cache.incr("does_not_exist")
    with pytest.raises(ValueError):
        cache.incr("does_not_exist", -1)
    cache.set("null", None)
    with pytest.raises(TypeError):
        cache.incr("null")


def test_decr(caches: Caches) -> None:
    cache = caches.default
    cache.set("answer", 43)
    assert cache.decr("answer") == 42
    assert cache.get("answer") == 42
    assert cache.decr("answer", 10) == 32
    assert cache.get("answer") == 32
    assert cache.decr("answer", -10) == 42
    with pytest.raises(ValueError):
        cache.decr("does_not_exist")
    with pytest.raises(ValueError):
        cache.decr("does_not_exist", -1)
    cache.set("null", None)
    with pytest.raises(TypeError):
        cache.decr("null")


def test_close_keeps_the_pool(caches: Caches) -> None:
    cache = caches.default
    cache.set("k", 1)
    pool = cache._client._pools[0]
    idle = list(pool.idle)
    cache.close()
    assert pool.idle == idle and idle  # nothing to reconnect on the next request
    assert cache.get("k") == 1


def test_data_types(caches: Caches) -> None:
    cache = caches.default
    values = {"string": "this is a string", "int": 42, "bool": True, "list": [1, 2, 3, 4],
              "tuple": (1, 2, 3, 4), "dict": {"A": 1, "B": 2}, "function": f, "class": C}
    for key, value in values.items():
        cache.set(key, value)
        got = cache.get(key)
        assert got == value and type(got) is type(value), key


def test_unicode(caches: Caches) -> None:
    cache = caches.default
    stuff = {"ascii": "ascii_value", "unicode_ascii": "Iñtërnâtiônàlizætiøn1",
             "Iñtërnâtiônàlizætiøn": "Iñtërnâtiônàlizætiøn2", "ascii2": {"x": 1}}
    for key, value in stuff.items():
        cache.set(key, value)
        assert cache.get(key) == value
    for key, value in stuff.items():
        assert cache.delete(key) is True
        assert cache.add(key, value) is True
        assert cache.get(key) == value
    for key in stuff:
        assert cache.delete(key) is True
    cache.set_many(stuff)
    for key, value in stuff.items():
        assert cache.get(key) == value


def test_binary_string(caches: Caches) -> None:
    cache = caches.default
    compressed = zlib.compress(b"value_to_be_compressed")
    cache.set("binary1", compressed)
    assert cache.add("binary1-add", compressed) is True
    cache.set_many({"binary1-set_many": compressed})
    for key in ("binary1", "binary1-add", "binary1-set_many"):
        assert zlib.decompress(cache.get(key)) == b"value_to_be_compressed"


def test_set_many_and_delete_many(caches: Caches) -> None:
    cache = caches.default
    assert cache.set_many({"key1": "spam", "key2": "eggs"}) == []
    assert cache.get("key1") == "spam" and cache.get("key2") == "eggs"
    assert cache.set_many({}) == []
    cache.set_many({"key1": "spam", "key2": "eggs", "key3": "ham"})
    assert cache.delete_many(["key1", "key2"]) is None
    assert cache.get("key1") is None and cache.get("key2") is None
    assert cache.get("key3") == "ham"
    assert cache.delete_many([]) is None


def test_clear(caches: Caches) -> None:
    cache = caches.default
    cache.set_many({"key1": "spam", "key2": "eggs"})
    cache.clear()
    assert cache.get("key1") is None and cache.get("key2") is None


def test_expiration_times_reach_the_server(caches: Caches) -> None:
    """Django's test_expiration / test_set_many_expiration / test_touch, read back as TTLs."""
    cache = caches.default
    cache.set("expire1", "very quickly", 1)
    cache.set_many({"expire2": "a", "expire3": "b"}, 1)
    for key in ("expire1", "expire2", "expire3"):
        ttl = caches.ttl(cache.make_key(key))
        assert ttl is not None and 0 <= ttl <= 1
    assert cache.touch("expire1", timeout=400) is True
    ttl = caches.ttl(cache.make_key("expire1"))
    assert ttl is not None and 1 < ttl <= 400
    assert cache.touch("expire2") is True  # the default timeout (300 s)
    ttl = caches.ttl(cache.make_key("expire2"))
    assert ttl is not None and 1 < ttl <= 300
    assert cache.touch("nonexistent") is False


def test_long_timeout(caches: Caches) -> None:
    """Over 30 days is an absolute time on the server; the client converts it."""
    cache = caches.default
    cache.set("key1", "eggs", THIRTY_DAYS + 1)
    assert cache.get("key1") == "eggs"
    assert cache.add("key2", "ham", THIRTY_DAYS + 1) is True
    assert cache.get("key2") == "ham"
    cache.set_many({"key3": "sausage", "key4": "lobster bisque"}, THIRTY_DAYS + 1)
    assert cache.get("key3") == "sausage" and cache.get("key4") == "lobster bisque"
    ttl = caches.ttl(cache.make_key("key1"))
    # absolute time on the wire, whole seconds, and memcached's once-a-second clock: up to 2 s of slack
    assert ttl is not None and THIRTY_DAYS - 60 < ttl <= THIRTY_DAYS + 3


def test_forever_timeout(caches: Caches) -> None:
    cache = caches.default
    cache.set("key1", "eggs", None)
    assert cache.get("key1") == "eggs"
    assert cache.add("key2", "ham", None) is True
    assert cache.get("key2") == "ham"
    assert cache.add("key1", "new eggs", None) is False
    assert cache.get("key1") == "eggs"
    cache.set_many({"key3": "sausage", "key4": "lobster bisque"}, None)
    assert cache.get("key3") == "sausage" and cache.get("key4") == "lobster bisque"
    cache.set("key5", "belgian fries", timeout=1)
    assert cache.touch("key5", timeout=None) is True
    for key in ("key1", "key2", "key3", "key5"):
        assert caches.ttl(cache.make_key(key)) == -1
    assert cache.get("key5") == "belgian fries"


def test_zero_timeout(caches: Caches) -> None:
    cache = caches.default
    cache.set("key1", "eggs", 0)
    assert cache.get("key1") is None
    assert cache.add("key2", "ham", 0) is True
    assert cache.get("key2") is None
    cache.set_many({"key3": "sausage", "key4": "lobster bisque"}, 0)
    assert cache.get("key3") is None and cache.get("key4") is None
    cache.set("key5", "belgian fries", timeout=5)
    assert cache.touch("key5", timeout=0) is True
    assert cache.get("key5") is None


def test_float_timeout(caches: Caches) -> None:
    caches.default.set("key1", "spam", 100.2)
    assert caches.default.get("key1") == "spam"


@pytest.mark.parametrize(("key", "message"), [
    ("key with spaces and 清", MEMCACHED_MSG),
    ("a" * 250 + "清", "Cache key will cause errors if used with memcached: %r (longer than 250)"),
    ("a" * 248, "Cache key will cause errors if used with memcached: %r (longer than 250)"),  # with ":1:"
])
def test_invalid_keys_raise(caches: Caches, key: str, message: str) -> None:
    cache = caches.default
    expected = message % cache.make_key(key)
    calls = [("add", [key, 1]), ("get", [key]), ("set", [key, 1]), ("incr", [key]), ("decr", [key]),
             ("touch", [key]), ("delete", [key]), ("get_many", [[key, "b"]]), ("set_many", [{key: 1, "b": 2}]),
             ("delete_many", [[key, "b"]])]
    for name, args in calls:
        with pytest.raises(InvalidCacheKey) as info:
            getattr(cache, name)(*args)
        assert str(info.value) == expected, name


def test_versioning_get_set_add_has_delete(caches: Caches) -> None:
    cache, v2 = caches.default, caches.v2
    cache.set("answer1", 42)
    assert (cache.get("answer1"), cache.get("answer1", version=1), cache.get("answer1", version=2)) == (42, 42, None)
    assert (v2.get("answer1"), v2.get("answer1", version=1), v2.get("answer1", version=2)) == (None, 42, None)
    cache.set("answer2", 42, version=2)
    assert (cache.get("answer2"), cache.get("answer2", version=2), v2.get("answer2")) == (None, 42, 42)
    v2.set("answer3", 42)
    assert (cache.get("answer3"), cache.get("answer3", version=2), v2.get("answer3", version=1)) == (None, 42, None)
    v2.set("answer4", 42, version=1)
    assert (cache.get("answer4"), v2.get("answer4"), v2.get("answer4", version=1)) == (42, None, 42)

    assert cache.add("answer5", 42, version=2) is True
    assert cache.add("answer5", 37, version=2) is False
    assert cache.add("answer5", 37, version=1) is True
    assert (cache.get("answer5", version=1), cache.get("answer5", version=2)) == (37, 42)
    assert v2.add("answer6", 42) is True and v2.add("answer6", 37) is False
    assert v2.add("answer6", 37, version=1) is True
    assert (cache.get("answer6", version=1), cache.get("answer6", version=2)) == (37, 42)

    assert (cache.has_key("answer1"), cache.has_key("answer1", version=2)) == (True, False)
    assert (v2.has_key("answer1"), v2.has_key("answer1", version=1)) == (False, True)

    cache.set("answer7", 37, version=1)
    cache.set("answer7", 42, version=2)
    assert cache.delete("answer7") is True
    assert (cache.get("answer7", version=1), cache.get("answer7", version=2)) == (None, 42)
    assert v2.delete("answer7") is True
    assert cache.get("answer7", version=2) is None


def test_versioning_incr_decr_and_many(caches: Caches) -> None:
    cache, v2 = caches.default, caches.v2
    cache.set("answer1", 37, version=1)
    cache.set("answer1", 42, version=2)
    assert cache.incr("answer1") == 38 and cache.get("answer1", version=2) == 42
    assert cache.decr("answer1") == 37
    assert v2.incr("answer1") == 43 and cache.get("answer1", version=1) == 37
    assert v2.decr("answer1", version=1) == 36

    cache.set_many({"ford1": 37, "arthur1": 42})
    assert cache.get_many(["ford1", "arthur1"]) == {"ford1": 37, "arthur1": 42}
    assert cache.get_many(["ford1", "arthur1"], version=2) == {}
    assert v2.get_many(["ford1", "arthur1"]) == {}
    assert v2.get_many(["ford1", "arthur1"], version=1) == {"ford1": 37, "arthur1": 42}
    v2.set_many({"ford2": 37, "arthur2": 42})
    assert cache.get_many(["ford2", "arthur2"]) == {}
    assert cache.get_many(["ford2", "arthur2"], version=2) == {"ford2": 37, "arthur2": 42}
    v2.set_many({"ford3": 37}, version=1)
    assert cache.get_many(["ford3"]) == {"ford3": 37} and v2.get_many(["ford3"]) == {}


def test_incr_and_decr_version(caches: Caches) -> None:
    cache, v2 = caches.default, caches.v2
    cache.set("answer", 42, version=2)
    assert cache.incr_version("answer", version=2) == 3
    assert (cache.get("answer", version=2), cache.get("answer", version=3)) == (None, 42)
    v2.set("answer2", 42)
    assert v2.incr_version("answer2") == 3
    assert (v2.get("answer2"), v2.get("answer2", version=3)) == (None, 42)
    with pytest.raises(ValueError):
        cache.incr_version("does_not_exist")
    cache.set("null", None)
    assert cache.incr_version("null") == 2

    cache.set("down", 42, version=2)
    assert cache.decr_version("down", version=2) == 1
    assert (cache.get("down"), cache.get("down", version=2)) == (42, None)
    with pytest.raises(ValueError):
        cache.decr_version("does_not_exist", version=2)
    cache.set("null2", None, version=2)
    assert cache.decr_version("null2", version=2) == 1


def test_custom_key_func(caches: Caches) -> None:
    cache = caches.default
    cache.set("answer1", 42)
    assert cache.get("answer1") == 42
    assert caches.custom_key.get("answer1") is None and caches.custom_key2.get("answer1") is None
    caches.custom_key.set("answer2", 42)
    assert cache.get("answer2") is None
    assert caches.custom_key.get("answer2") == 42 and caches.custom_key2.get("answer2") == 42


def test_cache_middleware_round_trip(caches: Caches) -> None:
    """Django's test_cache_write_unpicklable_object: a response with cookies, cached and fetched."""
    with override_settings(CACHES=caches.settings(), CACHE_MIDDLEWARE_ALIAS="default"):
        request = RequestFactory().get("/cache/test")
        request._cache_update_cache = True
        fetch = FetchFromCacheMiddleware(lambda req: HttpResponse())
        assert fetch.process_request(request) is None

        def respond(req: Any) -> HttpResponse:
            response = HttpResponse("Testing cookie serialization.")
            response.set_cookie("foo", "bar")
            return response

        response = UpdateCacheMiddleware(respond)(request)
        cached = fetch.process_request(request)
        assert cached is not None
        assert cached.content == b"Testing cookie serialization."
        assert cached.cookies == response.cookies


def test_pickle_errors_are_not_silent(caches: Caches) -> None:
    with pytest.raises(pickle.PickleError):
        caches.default.add("unpicklable", Unpicklable())
    with pytest.raises(pickle.PickleError):
        caches.default.set("unpicklable", Unpicklable())


def test_get_or_set(caches: Caches) -> None:
    cache = caches.default
    assert cache.get("projector") is None
    assert cache.get_or_set("projector", 42) == 42
    assert cache.get("projector") == 42
    assert cache.get_or_set("null", None) is None
    assert cache.get("null", "default") is None  # the None was stored
    assert cache.get_or_set("mykey", lambda: "value") == "value"
    assert cache.get_or_set("mykey", "other") == "value"
    assert cache.get_or_set("brian", 1979, version=2) == 1979
    with pytest.raises(TypeError, match="default"):
        cache.get_or_set("brian")  # type: ignore[call-arg]
    assert cache.get("brian", version=1) is None
    assert cache.get_or_set("brian", 42, version=1) == 42
    assert cache.get_or_set("brian", 1979, version=2) == 1979


def test_async_api(caches: Caches) -> None:
    cache = caches.default

    async def run() -> list[Any]:
        await cache.aset("akey", "avalue")
        out = [await cache.aget("akey"), await cache.aadd("akey", "x"), await cache.ahas_key("akey")]
        await cache.aset_many({"a1": 1, "a2": 2})
        out.append(await cache.aget_many(["a1", "a2", "a3"]))
        out.append(await cache.aincr("a1", 5))
        out.append(await cache.adelete("akey"))
        return out

    assert asyncio.run(run()) == ["avalue", False, True, {"a1": 1, "a2": 2}, 6, True]


# -- BaseMemcachedTests --------------------------------------------------------------------------


def test_location_multiple_servers() -> None:
    for location in (["server1.tld", "server2:11211"], "server1.tld;server2:11211", "server1.tld,server2:11211"):
        assert HoardCache(location, {})._servers == ["server1.tld", "server2:11211"]


@pytest.mark.parametrize("timeout", [None, 60 * 60 * 24 * 365])
def test_default_timeout_setting(caches: Caches, timeout: int | None) -> None:
    cache = caches.make(TIMEOUT=timeout)
    cache.set("future_foo", "bar")
    assert cache.get("future_foo") == "bar"
    ttl = caches.ttl(cache.make_key("future_foo"))
    assert ttl == -1 if timeout is None else (ttl is not None and ttl > THIRTY_DAYS)


@pytest.mark.parametrize("on_error", ["miss", "raise"])
def test_failed_set_deletes_the_key(caches: Caches, on_error: str) -> None:
    """Django's test_memcached_deletes_key_on_failed_set, and set_many reporting the failing key."""
    cache = caches.make(OPTIONS={**caches.options, "on_error": on_error})
    cache.set("small_value", "a")
    assert cache.get("small_value") == "a"
    with contextlib.suppress(Exception) if on_error == "raise" else contextlib.nullcontext():
        cache.set("small_value", "a" * (2**20 + 1))
    assert cache.get("small_value") is None
    if on_error == "miss":
        assert cache.set_many({"key": "a" * (2**20 + 1), "fine": 1}) == ["key"]
        assert cache.get("fine") == 1


# -- django.contrib.sessions on the cache backend ------------------------------------------------


def test_cached_sessions_round_trip(caches: Caches) -> None:
    with override_settings(CACHES=caches.settings(), SESSION_ENGINE="django.contrib.sessions.backends.cache"):
        from django.contrib.sessions.backends.cache import KEY_PREFIX, SessionStore
        from django.core.cache import caches as django_caches

        assert isinstance(django_caches["default"], HoardCache)
        session = SessionStore()
        session["user_id"] = 42
        session["cart"] = ["apple", "pear"]
        session.save()
        key = session.session_key
        assert key

        loaded = SessionStore(session_key=key)
        assert loaded["user_id"] == 42 and loaded["cart"] == ["apple", "pear"]
        assert loaded.exists(key) is True
        # on the server, under Django's key for it
        assert caches.ttl(caches.default.make_key(KEY_PREFIX + key)) is not None

        loaded["user_id"] = 43
        loaded.save()
        assert SessionStore(session_key=key)["user_id"] == 43

        loaded.delete()
        assert SessionStore(session_key=key).exists(key) is False
        assert SessionStore(session_key=key).load() == {}
