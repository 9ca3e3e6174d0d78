"""What a request's cache controls decide, over `cache.mode`."""

from __future__ import annotations

import pytest

from cache.policy import decide


def run(mode="opt-in", caching=None, **controls):
    return decide(mode=mode, caching=caching, controls=controls, default_ttl=3600,
                  default_namespace="turnout")


@pytest.mark.parametrize(("mode", "caching", "controls", "enabled"), [
    pytest.param("opt-in", None, {}, False, id="opt-in-default-off"),
    pytest.param("opt-in", True, {}, True, id="opt-in-caching-true"),
    pytest.param("opt-in", None, {"use-cache": True}, True, id="opt-in-use-cache"),
    pytest.param("always", None, {}, True, id="always-default-on"),
    pytest.param("always", False, {}, False, id="always-caching-false"),
    pytest.param("always", None, {"use-cache": False}, False, id="always-use-cache-false"),
    pytest.param("opt-in", False, {"use-cache": True}, False, id="caching-flag-wins"),
    pytest.param("opt-in", None, {"no-cache": True}, False, id="controls-alone-do-not-opt-in"),
])
def test_caching_is_on_when_asked(mode, caching, controls, enabled):
    assert run(mode, caching, **controls).enabled is enabled


def test_controls_apply_when_on():
    d = run("opt-in", True, **{"ttl": 30, "s-maxage": 10, "no-cache": True, "no-store": True,
                               "namespace": "team"})
    assert (d.ttl, d.max_age, d.lookup, d.store, d.namespace) == (30, 10, False, False, "team")


def test_defaults_when_on():
    d = run("always")
    assert (d.ttl, d.max_age, d.lookup, d.store, d.namespace) == (3600, None, True, True,
                                                                   "turnout")


def test_zero_ttl_stores_nothing():
    assert run("always", ttl=0).store is False
