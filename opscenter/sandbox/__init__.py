"""The sandbox at the center: analyzer interface and the static reference analyzer (analyzer.py), the
analysis queue and the shared verdicts by SHA-256 (queue.py), its worker (worker.py) and the device
endpoints (api.py). docs/sandbox.md."""
