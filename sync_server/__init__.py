"""The county server of Minqing (民情): sync API, ledger, scope, deadline sweep, web, audit."""

__version__ = "0.1.0"
