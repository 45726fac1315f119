"""The one error of every dataset reader, whatever its modality."""


class DatasetUnavailable(ValueError):
    """The dataset cannot be loaded here (missing package, unknown name, unreadable file)."""
