"""Agent drivers: the two-way protocol of each agent format, sans-IO (DESIGN §10)."""
