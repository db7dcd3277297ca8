"""Offline mode (``vcr-agent pcap``): the inline pipeline run over a capture file, and the pcap reader.

May import ``agent`` (config), ``agent.dataplane`` (the worker's pipeline and performers) and ``filters``.
"""
