"""The container tier, through the `docker compose` CLI (v2) only: the resolved model, container
states, image pulls, the cached, secret-free outline of the model that the health check reads,
and the rule on image references (images: pinned, :latest, no longer published).

Uses the host primitives and the shared words; knows nothing of llama servers or the graph.
"""
