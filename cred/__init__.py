"""cred package."""
