"""The Pipeline: modgate's stages behind one mitmproxy addon, driven by mitmproxy's own
addon manager."""

from __future__ import annotations

import asyncio
import inspect
import logging

import pytest
from mitmproxy import exceptions, http
from mitmproxy.addonmanager import Loader
from mitmproxy.flow import Error
from mitmproxy.hooks import Hook
from mitmproxy.proxy.layers.http import (
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)
from mitmproxy.test import taddons, tflow

from modgate.addons import all_addons
from modgate.addons.audit import Auditor
from modgate.addons.auth import AuthGate
from modgate.addons.cache import CacheGate
from modgate.addons.fasthit import FastHitGate
from modgate.addons.metrics import MetricsGate
from modgate.addons.pipeline import Pipeline, hook_names
from modgate.addons.readahead import ReadAheadGate
from modgate.addons.router import Router
from modgate.addons.rules import RulesGate
from modgate.addons.settings import Settings
from modgate.addons.trace import Tracer
from modgate.addons.transparent import TransparentGate
from modgate.addons.vcs import VcsGate


class Sync:
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    def load(self, loader: Loader) -> None:
        loader.add_option("sync_limit", int, 1, "a positive number")

    def configure(self, updated: set[str]) -> None:
        from mitmproxy import ctx

        if "sync_limit" in updated and ctx.options.sync_limit < 1:
            raise exceptions.OptionsError("sync_limit must be positive")

    def request(self, flow: http.HTTPFlow) -> None:
        self.seen.append("sync request")


class Async:
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    async def request(self, flow: http.HTTPFlow) -> None:
        self.seen.append("async request")

    def response(self, flow: http.HTTPFlow) -> None:
        self.seen.append("async's response")


class Broken:
    def request(self, flow: http.HTTPFlow) -> None:
        raise RuntimeError("stage fell over")


def deliver(pipeline: Pipeline, *events: Hook) -> None:
    """Send `events` through mitmproxy's addon manager, as the proxy does."""

    async def main() -> None:
        with taddons.context(pipeline) as tctx:
            for event in events:
                await tctx.master.addons.handle_lifecycle(event)

    asyncio.run(main())


def test_each_hook_calls_the_stages_that_answer_it_in_order() -> None:
    seen: list[str] = []
    flow = tflow.tflow(resp=True)
    deliver(Pipeline([Async(seen), Sync(seen)]), HttpRequestHook(flow), HttpResponseHook(flow))
    assert seen == ["async request", "sync request", "async's response"]


def test_a_hook_no_stage_answers_is_not_offered_to_mitmproxy() -> None:
    pipeline = Pipeline([Sync([])])
    assert not hasattr(pipeline, "response") and not hasattr(pipeline, "update")
    # mitmproxy calls load and configure synchronously: they must not be coroutines.
    assert not inspect.iscoroutinefunction(pipeline.configure)
    assert inspect.iscoroutinefunction(Pipeline([Async([]), Sync([])]).request)


def test_a_failing_stage_is_logged_and_the_next_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []
    flow = tflow.tflow()
    with caplog.at_level(logging.ERROR):
        deliver(Pipeline([Broken(), Sync(seen), Async(seen)]), HttpRequestHook(flow))
    assert seen == ["sync request", "async request"]
    # ... and the flow is answered by modgate, never left for mitmproxy to forward.
    assert flow.response is not None and flow.response.status_code == 502
    assert flow.response.text == (
        "modgate: internal error: Broken.request failed (RuntimeError: stage fell over); "
        "not served\n"
    )
    assert flow.metadata["modgate.error"].startswith("internal error: Broken.request failed")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "Broken.request: stage fell over" in errors[0].getMessage()
    assert errors[0].exc_info is not None  # with its traceback


def test_options_are_loaded_and_a_bad_value_is_refused() -> None:
    pipeline = Pipeline([Sync([])])
    with taddons.context(pipeline) as tctx:
        assert tctx.options.sync_limit == 1
        with pytest.raises(exceptions.OptionsError, match="sync_limit must be positive"):
            tctx.configure(pipeline, sync_limit=0)


def test_modgate_runs_as_one_addon_with_its_stages_in_the_documented_order() -> None:
    [pipeline] = all_addons()
    assert isinstance(pipeline, Pipeline)
    kinds = [type(s) for s in pipeline.stages]
    assert kinds == [Settings, AuthGate, FastHitGate, TransparentGate, Router, VcsGate, RulesGate,
                     ReadAheadGate, CacheGate, Tracer, Auditor, MetricsGate]  # fmt: skip
    assert pipeline.stage(Settings) is pipeline.stages[0]
    with pytest.raises(LookupError, match="no int in the pipeline"):
        pipeline.stage(int)
    # Every hook a stage answers reaches it: none has a method mitmproxy does not know
    # under a hook's name, and every hook method is offered.
    for stage in pipeline.stages:
        for name in hook_names():
            if callable(getattr(stage, name, None)):
                assert callable(getattr(pipeline, name)), (type(stage).__name__, name)


class Silent:
    """A stage that answers nothing (as a stage with a bug that forgot to would)."""

    def request(self, flow: http.HTTPFlow) -> None:
        pass


def _gated(flow: http.HTTPFlow) -> bool:
    return flow.request.host == "proxy.example"


@pytest.mark.parametrize(
    ("host", "metadata", "answered"),
    [
        ("proxy.example", {}, True),  # gated and unanswered: modgate's 502
        ("other.example", {}, False),  # not modgate's: left to mitmproxy
        ("proxy.example", {"modgate.blob": "/blob/1"}, False),  # handed to modgate's own server
    ],
)
def test_a_gated_flow_no_stage_answered_gets_modgate_s_502(
    host: str, metadata: dict[str, str], answered: bool
) -> None:
    flow = tflow.tflow()
    flow.request.host = host
    flow.metadata.update(metadata)
    deliver(Pipeline([Silent()], gated=_gated), HttpRequestHook(flow))
    if answered:
        assert flow.response is not None and flow.response.status_code == 502
        assert "no stage answered this request; not served" in flow.response.text
    else:
        assert flow.response is None


def test_the_check_runs_even_when_no_stage_has_a_request_hook() -> None:
    flow = tflow.tflow()
    flow.request.host = "proxy.example"
    deliver(Pipeline([], gated=_gated), HttpRequestHook(flow))
    assert flow.response is not None and flow.response.status_code == 502


def test_when_it_cannot_tell_whether_a_flow_is_gated_it_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(flow: http.HTTPFlow) -> bool:
        raise KeyError("settings")

    flow = tflow.tflow()
    with caplog.at_level(logging.ERROR):
        deliver(Pipeline([Silent()], gated=broken), HttpRequestHook(flow))
    assert flow.response is not None and flow.response.status_code == 502
    assert "broken" in caplog.text


def test_a_gated_request_body_is_never_streamed_to_the_origin() -> None:
    class Streams:
        def requestheaders(self, flow: http.HTTPFlow) -> None:
            flow.request.stream = True

    flow = tflow.tflow()
    flow.request.host = "proxy.example"
    deliver(Pipeline([Streams()], gated=_gated), HttpRequestHeadersHook(flow))
    assert not flow.request.stream
    other = tflow.tflow()
    deliver(Pipeline([Streams()], gated=_gated), HttpRequestHeadersHook(other))
    assert other.request.stream


class BrokenHeaders:
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        raise RuntimeError("headers fell over")


def test_a_failure_while_a_server_body_is_on_its_way_cuts_the_flow() -> None:
    """mitmproxy would fill a replacement response with the server's body: cut instead."""
    flow = tflow.tflow(resp=True)
    assert flow.response is not None
    flow.response.data.content = None  # headers only, as in the responseheaders hook
    deliver(Pipeline([BrokenHeaders()]), HttpResponseHeadersHook(flow))
    assert flow.error is not None and flow.error.msg == Error.KILLED_MESSAGE
    assert flow.metadata["modgate.error"].startswith("internal error: BrokenHeaders")


def test_a_failure_after_modgate_made_the_answer_replaces_it() -> None:
    class BrokenResponse:
        def response(self, flow: http.HTTPFlow) -> None:
            raise ValueError("trace fell over")

    flow = tflow.tflow(resp=True)
    deliver(Pipeline([BrokenResponse()]), HttpResponseHook(flow))
    assert flow.response is not None and flow.response.status_code == 502
    assert "BrokenResponse.response failed (ValueError: trace fell over)" in flow.response.text
