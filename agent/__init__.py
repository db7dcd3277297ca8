"""The software of the VCR116w box.

``cli`` (the ``vcr-agent`` command), ``config`` (the YAML schema), ``launcher`` (stdlib only, run by
systemd; imports nothing of the agent), small shared helpers (``evelog``, ``fsutil``, ``sdnotify``)
and one sub-package per concern: ``dataplane``, ``link``, ``lifecycle``, ``offline``.
"""
