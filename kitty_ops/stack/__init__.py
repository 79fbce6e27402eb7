"""The whole stack as one dependency graph: the plan (pure), its start and stop across the llama,
native and compose tiers, the native services (the images API and worker), and the checks run
after a start.

Uses the llama and container tiers below it; the commands above (health, backup, rescue) use it.
"""
