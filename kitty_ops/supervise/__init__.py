"""`kitty-ops supervise` and `kitty-ops service`: keep the stack up (restart what failed, alone,
with backoff; give up on a crash loop; respect the operator's intent), and install that as a
launchd job or a systemd unit."""
