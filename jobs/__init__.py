"""The service's shared layer: settings, tables, states, specs, storage."""
