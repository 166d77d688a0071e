"""Notifications (DESIGN §12): rules, the outbox, delivery.

``rules`` (which live events give birth to a notification, which settle one), ``plan`` (when a
destination gets a message: coalescing, rate limit, backoff) and ``message`` (what it says) are
sans-IO; ``outbox`` is the SQL of the outbox table; ``send`` the I/O to each destination;
``service`` the trio service that ties them to the hub and the store.
"""
