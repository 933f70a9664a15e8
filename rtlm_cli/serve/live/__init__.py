"""Real replays on the wall clock: rtlm's hf workers (``workers.py``), serving engines over HTTP with
one stream driver for direct dispatch and the gateway (``streams.py``, ``servers.py``), the priority
preflight and the live dashboard. Decisions come from ``serve/decide``; nothing here decides."""
