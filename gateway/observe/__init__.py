"""Observing agent calls: metrics, tracing and the access log behind one seam.

The hot path knows one object per call, a ``Watch``, and two things to do
with it: time a step (``with watch.step(CAPTURE, upstream) as step:``, with
``step.propagate(headers)`` for the headers of a request sent in that step)
and, once, ``watch.finish(record)`` when the agent has its answer. What is
behind it is decided at start from the settings (``observer_for``):

- metrics are always kept (``gateway.metrics``): the step and call durations
  feed the contract's histograms and counters;
- tracing (``telemetry:`` or ``OTEL_*``, off by default) makes the watch a
  ``gateway.call`` span whose steps are child spans, and puts the step's
  W3C ``traceparent`` on the request to the upstream;
- the access log (``access_log: true``) writes one JSON line per call.

``NO_WATCH`` does nothing at all; calls made outside the agent listener
(approved calls, rollback) use it unless the pipeline is given an observer.
"""

from gateway.observe.seam import (
    CAPTURE,
    JOURNAL,
    JOURNAL_OUTCOME,
    NO_OBSERVER,
    NO_WATCH,
    UPSTREAM,
    CallRecord,
    Observer,
    Step,
    Watch,
)

__all__ = ["CAPTURE", "JOURNAL", "JOURNAL_OUTCOME", "NO_OBSERVER", "NO_WATCH", "UPSTREAM",
           "CallRecord", "Observer", "Step", "Watch"]
