"""server/middleware."""
