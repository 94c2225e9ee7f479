"""Apps the HTTP benchmark compares kv against; each is one small module."""
