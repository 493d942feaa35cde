#!/usr/bin/env bash
# Provisions this Debian 12 machine (engines, test images) and runs one sample
# job through berth as gitlab-runner would, printing its job log.
# Usage: integration/demo.sh [--backend socket]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
bash integration/provision.sh
exec go run ./integration/demo "$@"
