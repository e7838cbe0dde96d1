"""Plumbing every service uses: settings, the bus adapter, lifecycle, telemetry."""
