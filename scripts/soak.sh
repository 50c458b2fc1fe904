#!/usr/bin/env bash
# Runs the engine's model-based test (crates/testing/tests/model.rs) for any
# number of operations with any seed: backups after random changes, forgets,
# prunes and copies, each possibly killed at a random write, every snapshot
# checked against the model after every step.
#
# Usage: scripts/soak.sh [OPS] [SEED] [local|encrypted|s3]
#   OPS   operations (default 5000)
#   SEED  MODEL_SEED to replay a run (default: from the clock, printed)
#   which repository: local (default), encrypted (local, age), s3 (moto)
#
# A failure prints the seed and the operation log that reproduce it.
set -euo pipefail
cd "$(dirname "$0")/.."

ops=${1:-5000}
seed=${2:-}
case "${3:-local}" in
  local) test=model_local_repository ;;
  encrypted) test=model_local_encrypted_repository ;;
  s3) test=model_s3_repository ;;
  *) echo "soak: unknown repository kind '${3}' (local, encrypted, s3)" >&2; exit 2 ;;
esac
export MODEL_OPS=$ops
if [ -n "$seed" ]; then export MODEL_SEED=$seed; fi
exec cargo test -q -p respaldo-testing --test model "$test" -- --exact --nocapture
