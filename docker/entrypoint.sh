#!/bin/sh
# Starts the image's service (HUBSIDE_SERVICE, set from the SERVICE build argument) unless a
# command is given: `docker run IMAGE check-config /etc/hubside/community.yaml`, `... migrate`.
set -eu
if [ "$#" -eq 0 ]; then
  set -- "${HUBSIDE_SERVICE:?HUBSIDE_SERVICE is not set}"
fi
# exec: node becomes PID 1 and receives SIGTERM itself, for a graceful shutdown.
exec node "${HUBSIDE_APP_DIR:-/app}/packages/cli/bin/hubside.js" "$@"
