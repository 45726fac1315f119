"""Pure loss functions; each file states its inputs' shapes."""
