"""The TCP listener: plain HTTP routes, WebSocket upgrades, per-connection tasks, routing.

``listener`` accepts and routes; ``routes`` answers plain HTTP; ``connection`` runs one
WebSocket (a reader, and a sender that also closes) and ``requests`` answers what it reads;
``heartbeat`` pings every connection from one task; ``router`` maps request types to handlers;
``ws`` holds every call into the WebSocket library and writes the server's own frames, which
``frames`` builds; ``stream`` is the stream under the library (the request head replayed, then
the socket).
"""
