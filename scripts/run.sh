#!/usr/bin/env bash
# One command for a newcomer: install, create the SQLite database with demo data, start the server.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" requirements.txt
export FLASK_APP=wsgi
# Demo only: a visibly fake 对公收款账户 so canteen orders show where to pay. Left alone if any of the
# three is set; production sets real values (or none, and the pages say it is not configured).
if [ -z "${BANK_TRANSFER_PAYEE:-}${BANK_TRANSFER_BANK:-}${BANK_TRANSFER_ACCOUNT:-}" ]; then
  export BANK_TRANSFER_PAYEE="湘西州消费帮扶服务平台（演示）"
  export BANK_TRANSFER_BANK="演示银行（仅供演示，请勿转账）"
  export BANK_TRANSFER_ACCOUNT="演示账号 0000 0000 0000 0000"
fi
# Demo only: online orders are paid in the clearly labelled simulated checkout (no money moves).
export SANDBOX_PAYMENTS="${SANDBOX_PAYMENTS:-1}"
.venv/bin/flask setup
.venv/bin/flask demo
echo "打开 http://127.0.0.1:${PORT:-5000}/ （演示账号见 README）"
exec .venv/bin/flask run --host 127.0.0.1 --port "${PORT:-5000}" "$@"
