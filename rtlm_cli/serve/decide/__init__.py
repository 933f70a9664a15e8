"""Decisions, with no clock, no I/O and no engine: the policies, the decision core (which request runs
where and when), offloading, and the gateway's per-slot dispatch. The simulator (``serve/sim``) and
the real executors (``serve/live``, the gateway service) drive the same objects; ``now`` is given."""
