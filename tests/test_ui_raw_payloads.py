"""Raw HTTP payloads: what a client of the Gradio API can send that the page never would.

Every handler (found by introspection, as in `test_ui_handlers_fuzz.py`, plus the model picker)
is called with `None`, lone surrogates (JSON carries them, UTF-8 cannot encode them), lists,
dicts, numbers and booleans where text is expected: first in every field at once, then in one
field at a time of a valid call. Each call answers or raises a readable `gr.Error`, never
"Internal error", and a refused call changes nothing in WORKBENCH_HOME.
"""

from __future__ import annotations

import pytest

from test_ui_handlers_fuzz import HANDLERS, VALID_CALLS, call_checked, ctx, fuzzed_params  # noqa: F401

RAW_PAYLOADS = [None, "abc \ud800", "\udcff\udcfe", "ok \ud83d", ["a", 1], [], {"a": 1}, {}, 3.5, -7, 0, True,
                10**30, float("nan")]
ONE_FIELD_PAYLOADS = [None, "abc \ud800", ["a", 1], {"a": 1}, 3.5]
ALL_HANDLERS = sorted(HANDLERS)


def _load_model():
    from workbench.ui import app

    return app.load_model


@pytest.mark.parametrize("payload", RAW_PAYLOADS, ids=repr)
@pytest.mark.parametrize("name", ALL_HANDLERS + ["app.load_model"])
def test_every_field_holds_the_payload(ctx, name, payload):
    fn = _load_model() if name == "app.load_model" else HANDLERS[name]
    kwargs = {p.name: payload for p in fuzzed_params(fn)}
    if name == "tab_train.start_training" and not isinstance(payload, str):
        kwargs["run_name"] = "raw"  # never a training: every field is junk
    call_checked(fn, kwargs, ctx.home)


# An empty count is a valid request for every item (locally uncapped): too slow to repeat per payload
# here; tests/test_demo_limits.py covers it.
SLOW_WHEN_EMPTY = {("tab_evaluate.run_eval", "n"), ("tab_evaluate.run_globesumm", "n_events")}
ONE_FIELD = [(n, p.name) for n in ALL_HANDLERS if VALID_CALLS.get(n) for p in fuzzed_params(HANDLERS[n])
             if (n, p.name) not in SLOW_WHEN_EMPTY]


@pytest.mark.parametrize("name, field", ONE_FIELD)
def test_one_field_holds_each_payload(ctx, name, field):
    fn = HANDLERS[name]
    for payload in ONE_FIELD_PAYLOADS:
        kwargs = {**VALID_CALLS[name](ctx), field: payload}
        call_checked(fn, kwargs, ctx.home)
