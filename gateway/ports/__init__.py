"""The interfaces the pipeline and the admin API depend on: the store's roles and the bus
(``gateway.ports.store``), and how calls leave (``gateway.ports.upstream``). Importers
name them from here."""

from gateway.ports.store import (
    ApprovalStore,
    AuditStore,
    Bus,
    CheckpointStore,
    FreezeChange,
    FreezeStore,
    HeldCallStore,
    JournalStore,
    LeaseStore,
    LeftWriteStore,
    Notice,
    PlanStore,
    RecoveryStore,
    ReportStore,
    ResendStore,
    RollbackStore,
    Store,
    TripwireStore,
)
from gateway.ports.upstream import Headers, Observed, Upstream, UpstreamResponse, untraced

__all__ = [
    "ApprovalStore", "AuditStore", "Bus", "CheckpointStore", "FreezeChange", "FreezeStore",
    "HeldCallStore", "Headers", "JournalStore", "LeaseStore", "LeftWriteStore", "Notice", "Observed",
    "PlanStore", "RecoveryStore", "ReportStore", "ResendStore", "RollbackStore", "Store",
    "TripwireStore", "Upstream", "UpstreamResponse", "untraced",
]
