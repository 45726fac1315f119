"""darkmatter core: the self-supervised method library (no service code here)."""
