"""The agent side: each session's runs under their shims, the supervisor over them, and the
sessions hived did not start (hooks). The shim itself (``shim.py``) runs alone, on the standard
library only, so this package imports nothing."""
