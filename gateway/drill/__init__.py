"""``gateway drill``: ``run`` rehearses an incident, ``report`` judges and saves
what it found (``findings`` holds the values both share)."""

from gateway.drill.findings import DrillOptions
from gateway.drill.run import DrillContext, amain, main

__all__ = ["DrillContext", "DrillOptions", "amain", "main"]
