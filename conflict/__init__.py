"""The merge core of Minqing: the hybrid logical clock, the fold, conflicts, digests.

Pure: time and node id come in as arguments; no database, clock, randomness or
network. The one exception is ``conflict.replica``, which applies ops to SQLite through
the pure fold; it is never imported from here, so ``import conflict`` stays pure.
"""
