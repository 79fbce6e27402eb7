"""The native llama-server tier: model files (GGUF), the command line and the installed binary's
flags, the memory budget, validation before start, the start/stop lifecycle and status.

Uses the host primitives and the shared words; knows nothing of containers or the stack graph.
"""
