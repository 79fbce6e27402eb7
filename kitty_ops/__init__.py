"""kitty-ops: run a local AI stack (llama-server processes, later compose services) safely."""

__version__ = "0.1.0"
