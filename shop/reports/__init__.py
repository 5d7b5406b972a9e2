"""Sales reports for officials: village sales against target, roll-ups, trend, exports, reconciliation.

Importing the package installs the session listeners that keep the sales summary exact
(``shop/reports/summary.py``); ``core/app.py`` imports ``shop.reports.models`` at start-up.
"""
from shop.reports import summary as _summary

_summary.install()
