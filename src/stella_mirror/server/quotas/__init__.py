"""Per-domain request quotas: a backend interface, an in-process backend and a Redis backend.

:class:`~stella_mirror.server.middleware.quotas.QuotaGate` applies them to requests.
"""

from stella_mirror.server.quotas.backend import QuotaBackend, QuotaDecision
from stella_mirror.server.quotas.memory import MemoryQuotaBackend
from stella_mirror.server.quotas.redis_backend import RedisQuotaBackend

__all__ = ["MemoryQuotaBackend", "QuotaBackend", "QuotaDecision", "RedisQuotaBackend"]
