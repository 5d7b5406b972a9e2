#!/usr/bin/env bash
# One command for the whole test suite. DATABASE_URL=postgresql://... runs it on PostgreSQL.
# Browser tests need /usr/bin/chromium (Debian package `chromium`); without it they skip,
# except under CI=true where they must run.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" requirements-dev.txt
exec .venv/bin/python -m pytest "$@"
