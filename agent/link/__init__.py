"""The link to the operations center: activation, heartbeats with the health report, the durable
alarm spool, the center's tasks, the outbound port check and the SNTP clock check.

May import ``agent`` (config, fsutil) and ``filters`` (EVE records, DNS building); nothing of
``agent.dataplane`` or ``agent.lifecycle``.
"""
