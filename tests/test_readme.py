"""The README's configuration reference is the one the code generates (docs match behaviour)."""
from app.reference import README, markdown, readme_block


def test_readme_reference_is_current():
    assert readme_block(README.read_text()) == markdown(), "run `make docs` (python -m app.reference --write)"


def test_readme_shows_the_two_commands():
    text = README.read_text()
    assert "make run" in text and "make test" in text
