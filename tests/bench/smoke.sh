#!/usr/bin/env bash
# The CI pass of the peer benchmarks: every workload on every peer with tiny
# durations, so the harness does not rot. Measures nothing. See run.sh.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/run.sh" --smoke "$@"
