#!/bin/sh
# The official rabbitmq image's entrypoint, reduced to what the stack's compose file calls
# (`docker-entrypoint.sh rabbitmq-server`, after its own check of RABBITMQ_DEFAULT_PASS): the
# Debian broker through rabbitmq-entrypoint; any other command runs as given.
set -eu
if [ "${1:-}" = rabbitmq-server ]; then
  exec rabbitmq-entrypoint
fi
exec "$@"
