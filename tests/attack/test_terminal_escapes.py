"""Text a client chose must not act on an operator's terminal, nor hide in object names.

The attacks: a dead letter whose task_id/task_type attributes held terminal escapes
(retitle the window, clear the screen, recolour) reached the operator raw through
`taskctl dlq list`; and object names with C1 controls or bidi overrides (a name that
reads `report.csv` but is `vsc.troper`) passed the name checks. Now every text output of
`taskctl dlq` writes control and format characters as visible escapes, and names with any
Unicode control or format character (Cc, Cf) are refused, upload names included.
"""

from __future__ import annotations

import io
import unicodedata

import pytest

from taskcore.payloads import check_object_name
from taskcore.publishing import Publisher
from tests.integration.dlq_helpers import taskctl

# Retitle the terminal, clear the screen, recolour; C1 CSI; bidi override; zero-width space.
HOSTILE = "\x1b]0;owned\x07\x1b[2J\x1b[31m\x9b31m\u202etxt.exe\u200b"
HIDDEN_NAMES = [
    "report\x85.csv",  # C1 NEL
    "report\x9b31m.csv",  # C1 CSI
    "cod\u202eexe.csv",  # right-to-left override
    "a\u2066b.csv",  # left-to-right isolate
    "zero\u200bwidth.csv",
    "bom\ufeff.csv",
    "surrogate\ud800.csv",
    "esc\x1b[2J.csv",
]


def hidden_in(text: str) -> list[str]:
    """Every character of text a terminal would act on rather than show."""
    return [c for c in text if unicodedata.category(c) in ("Cc", "Cf") and c not in "\n"]


@pytest.mark.parametrize("name", HIDDEN_NAMES, ids=range(len(HIDDEN_NAMES)))
def test_names_with_control_or_format_characters_are_refused(name):
    with pytest.raises(ValueError, match="control or format"):
        check_object_name(name)
    ordinary = "données/été 2024 – résumé.csv"  # letters and punctuation are fine
    assert check_object_name(ordinary) == ordinary


@pytest.mark.parametrize("name", HIDDEN_NAMES[:4], ids=range(4))
def test_a_task_filename_with_them_is_400(open_client, publisher, name):
    response = open_client.post(
        "/submit-task", json={"task_type": "file_processing", "filename": name}
    )

    assert response.status_code == 400
    assert response.get_json()["error"]["details"][0]["field"] == "filename"
    assert publisher.envelopes == []


@pytest.mark.parametrize("name", HIDDEN_NAMES[:4], ids=range(4))
def test_an_upload_name_with_them_is_400(open_client, name):
    response = open_client.post(
        "/uploads",
        data={"file": (io.BytesIO(b"x"), "a.txt"), "name": name},
        content_type="multipart/form-data",
        headers={"X-Requested-With": "test"},
    )

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_object_name"


# --- taskctl dlq, on the real emulators ----------------------------------------------------------


@pytest.fixture
def hostile_dead_letter(pipeline) -> str:
    """A dead letter whose id, type and error were written by an attacker; its message id."""
    attributes = {
        "task_id": f"t-{HOSTILE}",
        "task_type": HOSTILE,
        "dead_lettered_by": "worker",
        "error_type": f"boom{HOSTILE}",
        "error_message": f"it said {HOSTILE}\u2028and more",
    }
    publisher = Publisher(pipeline)
    try:
        return publisher.publish(pipeline.dlq_topic_path, b'{"x": "\x1b[2J\x7f"}', attributes)
    finally:
        publisher.close()


@pytest.mark.integration
@pytest.mark.parametrize(
    "args",
    [
        ("dlq", "list"),
        ("dlq", "replay", "--all", "--dry-run"),
        ("dlq", "purge", "--all", "--dry-run"),
    ],
    ids=["list", "replay-dry-run", "purge-dry-run"],
)
def test_taskctl_dlq_shows_escapes_instead_of_obeying_them(pipeline, hostile_dead_letter, args):
    result = taskctl(pipeline, *args)

    assert result.exit_code == 0, result.output
    assert hidden_in(result.output) == [], repr(result.output[:500])
    assert "\\x1b" in result.output, "shown, not dropped"
    # `show` and `--json` print JSON with ensure_ascii: every such character escaped.
    assert not hidden_in(taskctl(pipeline, "dlq", "show", f"t-{HOSTILE}").output)
