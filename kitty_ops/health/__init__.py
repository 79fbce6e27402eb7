"""`kitty-ops health`: every component observed at once (run), judged (judge, pure) and written
for a person, a monitoring system, a program or Prometheus (render).

Reads the stack's graph and tiers below it; changes nothing it observes.
"""
