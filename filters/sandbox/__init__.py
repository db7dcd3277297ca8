"""The box's side of the sandbox: which files carry code (types.py) and the engine that looks their
SHA-256 up at the center, submits the unknown ones and holds them for the verdict (engine.py)."""
