"""The bundle library: canonical JSON, digests, keys and signatures, and pure verification."""
