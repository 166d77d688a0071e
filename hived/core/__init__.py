"""The synchronous, I/O-free core of hived. Nothing under this package imports trio."""
