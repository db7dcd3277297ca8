"""Application-layer protocols: detection per flow, the HTTP (1.x and h2c)/TLS/DNS/SMTP parsers and
their events.

The parsers in this package are sans-IO and work on the in-order stream bytes the flow table
delivers (or on datagrams for UDP). ``filters.app.layer.AppLayer`` detects the protocol of each
flow, feeds the parser and turns its output into ``(Hook, event)`` pairs for the pipeline; the
event dataclasses live in ``filters.app.events``.
"""
