"""Development and test helpers: local servers that stand in for production services."""
