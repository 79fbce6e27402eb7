"""The host: processes (spawn detached, prove identity, signal a group), their records on disk,
TCP ports, the project lock, HTTP probes, the read-only view of a recorded process, and the one
seam (platform) for what macOS and Linux answer differently.

Mechanisms without policy: nothing here knows about llama servers, containers, settings or
runbooks, so it imports no other part of kitty_ops. Everything above builds on it.
"""
