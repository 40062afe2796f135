"""Run time: the services that carry one call from decision to upstream.

``call`` (what a listener reads), ``pipeline`` (decide -> capture -> journal
-> forward), and the services the pipeline leans on: ``freezes`` (the kill
switch), ``tripwires``, ``approvals`` (the hold queue), ``rollbacks``,
``audit_trail`` and ``notify``. They decide through ``gateway.core`` and do
I/O only through the ports (``gateway.ports``).
"""
