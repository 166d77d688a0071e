"""The TCP listener: plain HTTP routes, WebSocket upgrades, per-connection tasks, routing.

``listener`` accepts and routes; ``routes`` answers plain HTTP; ``connection`` runs one
WebSocket (a sender that also closes), ``reader`` handles what its client sends (rate limit,
``hello``) and ``requests`` answers it; ``stats`` holds the figures the admin channel reads;
``heartbeat`` pings every connection from one task; ``router`` maps request types to handlers;
``ws`` holds every call into the WebSocket library and writes the server's own frames, which
``frames`` builds; ``stream`` is the stream under the library (the request head replayed, then
the socket).
"""
