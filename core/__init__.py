"""Shared kernel: app factory, extensions, config, users and roles, village registry,
money and time helpers, errors, permissions and the audit trail."""
