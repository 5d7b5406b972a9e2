#!/usr/bin/env bash
# One command for a newcomer: install, create the SQLite database with demo data, start the server.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" requirements.txt
export FLASK_APP=wsgi
.venv/bin/flask setup
.venv/bin/flask demo
echo "打开 http://127.0.0.1:${PORT:-5000}/ （演示账号见 README）"
exec .venv/bin/flask run --host 127.0.0.1 --port "${PORT:-5000}" "$@"
