"""stella-mirror: the Concelier & Excititor mirror system.

Exports security advisories and VEX statements into signed bundles, syncs and verifies them,
publishes them atomically and serves them per mirror domain.
"""

__version__ = "0.1.0"
