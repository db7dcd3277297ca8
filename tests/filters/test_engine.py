"""Tests for filters.engine: the typed hook methods and how the pipeline finds the ones an engine implements."""
from __future__ import annotations

import pytest

from filters.atp import Atp
from filters.engine import APP_HOOKS, Engine, Hook, implemented_hooks
from filters.firewall import Firewall
from filters.ips.engine import Ips
from filters.pipeline import Pipeline
from filters.flow import FlowTable
from filters.probe import Probe
from filters.webfilter.engine import WebFilter


def test_every_hook_has_its_method_on_the_base_engine():
    for hook in Hook:
        assert callable(getattr(Engine, hook.method)), hook
    assert Hook.HTTP_REQUEST.method == "on_http_request" and Hook.FILE.method == "on_file"
    assert not hasattr(Engine, "on_event") and not hasattr(Engine, "hooks")


def test_hooks_are_the_overridden_methods():
    class Dns(Engine):
        def on_dns(self, flow, msg):
            return None

    class MoreDns(Dns):  # inherited overrides count
        def on_flow_end(self, flow):
            return None

    assert implemented_hooks(Engine()) == frozenset()
    assert implemented_hooks(Dns()) == {Hook.DNS}
    assert implemented_hooks(MoreDns()) == {Hook.DNS, Hook.FLOW_END}
    patched = Engine()
    patched.on_file = lambda flow, file: None  # an instance attribute counts too
    assert implemented_hooks(patched) == {Hook.FILE}


def test_the_shipped_engines_take_the_hooks_they_took_before():
    assert implemented_hooks(Firewall()) == {Hook.FLOW_START}
    assert implemented_hooks(Probe()) == {Hook.FLOW_START}
    assert implemented_hooks(Atp()) == {Hook.FLOW_START, Hook.DNS, Hook.HTTP_REQUEST, Hook.TLS_HELLO}
    assert implemented_hooks(WebFilter()) == {Hook.FLOW_START, Hook.DNS, Hook.HTTP_REQUEST, Hook.TLS_HELLO}
    assert implemented_hooks(Ips()) == {Hook.PACKET, Hook.PACKET_END, Hook.STREAM, Hook.HTTP_REQUEST,
                                        Hook.HTTP_RESPONSE, Hook.TLS_HELLO, Hook.DNS}


@pytest.mark.parametrize("stale", ["hooks", "on_event"])
def test_the_old_interface_is_refused(stale):
    with pytest.raises(TypeError, match=stale):
        type("Old", (Engine,), {stale: frozenset() if stale == "hooks" else (lambda self, hook, flow, event: None)})


def test_the_pipeline_indexes_hooks_once_per_engine_set():
    fw = Firewall()
    pipe = Pipeline([fw], FlowTable())
    assert pipe.app is None  # no engine takes an app-layer hook: no parsing at all
    assert [e for e, _ in pipe._by_hook[Hook.FLOW_START]] == [fw]
    assert all(not pipe._by_hook[h] for h in Hook if h is not Hook.FLOW_START)
    ips = Ips()
    pipe.replace_engines([fw, ips])
    assert [e for e, _ in pipe._by_hook[Hook.PACKET]] == [ips]
    assert pipe.app is not None and not pipe.app.files and APP_HOOKS & implemented_hooks(ips)
