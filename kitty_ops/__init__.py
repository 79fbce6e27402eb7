"""kitty-ops: run a local AI stack on one machine (llama-server processes, native services and a
docker compose stack) safely: one dependency graph to start and stop, health, backup, rescue,
supervision.

One subpackage per capability, imported only downward (the import-linter contracts in
pyproject.toml say so and `make lint` checks them):

    cli, render, demo        the face: options in, a renderer out, one exit code
    backup/, rescue/,        the state kept safe; the emergency stop and the preflight doctor;
    supervise/               the supervisor that keeps the stack up, and its service files
    health/                  judge every component at once, for people, cron and Prometheus
    stack/                   the graph (pure) and its start/stop, native services, after-start checks
    llama/, containers/      the two tiers: llama-server processes; the docker compose CLI
    config, outcomes, formats, problems, exitcodes, runbooks    the shared words
    host/                    processes, records, ports, locks, probes: no policy
"""

__version__ = "0.1.0"
