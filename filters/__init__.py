"""Packet inspection without I/O: the packet model, flow table and TCP streams, app-layer parsers,
the pipeline that runs the engines (firewall, ATP, IPS, web filter, probe) and their verdicts.

Nothing here imports ``agent`` or ``opscenter`` at run time: the agent drives a ``filters.pipeline.Pipeline``
with packets and performs the I/O the engines ask for.
"""
