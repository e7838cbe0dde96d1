"""Many instances, one fleet: call registry, leases, placement and survivors.

Sans-I/O cores: ``leases.LeaseTable``, ``placement.Placement``,
``reaper.Reaper``, ``records`` (pure record changes). Asyncio adapters:
``registry.CallRegistry`` (JetStream KV), ``heartbeat`` (publish and listen),
``reaping.ReaperLoop``. See the "Fleet" section of ``docs/architecture.md``.
"""
