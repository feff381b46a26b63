"""Engine edge cases found by a bug hunt: request-id reuse, deadlines, CLI errors, random op sequences."""

from __future__ import annotations

import pytest
from bastion.__main__ import main as cli_main

pytestmark = pytest.mark.timeout(600)


# ----- CLI -------------------------------------------------------------------------------------
def test_cli_bad_model_path_is_a_clear_error(capsys) -> None:
    """A missing model is a one-line message on stderr and a non-zero exit, not a traceback."""
    code = cli_main(["generate", "hi", "--model", "/nonexistent/model.gguf"])
    err = capsys.readouterr().err
    assert code != 0
    assert "model not found" in err and "Traceback" not in err


def test_cli_bad_sampling_value_is_a_clear_error(capsys) -> None:
    """A bad sampling flag (``--max-tokens 0``) fails before the model loads, naming the field."""
    code = cli_main(["generate", "hi", "--max-tokens", "0"])
    err = capsys.readouterr().err
    assert code != 0
    assert "max_tokens" in err and "Traceback" not in err
