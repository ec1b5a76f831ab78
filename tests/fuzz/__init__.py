"""Hostile input against the county server and both bundle parsers (docs/fuzz.md).

``python -m tests.fuzz`` runs every part with large numbers (``make fuzz``);
``test_fuzz.py`` and ``test_parsers.py`` run bounded versions inside ``make test``.
"""
