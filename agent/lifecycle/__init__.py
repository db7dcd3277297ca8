"""What changes the box over its life: signed signature bundles (TUF), remote configuration with
rollback, encrypted configuration backups, software upgrades in the maintenance window.

May import ``agent`` (config, fsutil, launcher constants), ``agent.link`` and ``filters``; nothing of
``agent.dataplane``.
"""
