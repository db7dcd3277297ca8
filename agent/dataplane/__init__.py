"""The box's data path: the bridge and its kernel ruleset, the NFQUEUE workers, NFLOG alarms,
packets sent on the engines' behalf, the engines' I/O performers and the block page server.

``daemon`` supervises it all. May import ``agent`` (config, evelog, fsutil, sdnotify), ``agent.link``
and ``agent.lifecycle`` (the daemon starts them) and ``filters``.
"""
