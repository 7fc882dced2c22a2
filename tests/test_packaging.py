"""What a wheel of the project ships: every package of the source tree, not only those an editable install finds."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_lists_every_package_of_the_source_tree():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "mu_lightning").rglob("__init__.py")}
    missing = sorted(found - listed)
    assert not missing, f"pyproject.toml [tool.setuptools] packages lacks {missing}: a non-editable install " \
                        "(pip install ., a wheel) would not ship them"
    assert listed - found == {"mu_lightning.conf"}  # conf/ ships as mu_lightning.conf (package-dir)
