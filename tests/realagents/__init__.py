"""Tools that run the real agent programs against local, scripted stand-ins for their model APIs."""
