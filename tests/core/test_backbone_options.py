"""Backbone option bounds: rates such as dropout take 0 (off) and stay below 1."""
from __future__ import annotations

import pytest

from core.backbones.sizes import check_options


@pytest.mark.parametrize("name, key", [("text_tiny", "dropout"), ("vit_tiny", "drop_path_rate")])
def test_a_rate_of_zero_is_off_and_one_is_refused(name, key):
    check_options(name, {key: 0.0})
    check_options(name, {key: 0.1})
    for bad in (1.0, -0.1, True):
        with pytest.raises(ValueError, match=f"{key} must be a rate in \\[0, 1\\)"):
            check_options(name, {key: bad})
