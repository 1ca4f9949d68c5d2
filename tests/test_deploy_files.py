"""docker/.env.example and docs/deploy.md keep up with the variables settings.py reads."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _settings_variables() -> set[str]:
    text = (REPO / "annotate" / "settings.py").read_text()
    return set(re.findall(r"""env(?:\.\w+)?\(\s*["']([A-Z][A-Z0-9_]*)["']""", text))


def test_env_example_lists_every_setting_variable() -> None:
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (REPO / "docker" / ".env.example").read_text(), re.M))
    missing = _settings_variables() - listed
    assert not missing, f"add to docker/.env.example: {sorted(missing)}"


def test_deploy_doc_settings_table_is_complete() -> None:
    doc = (REPO / "docs" / "deploy.md").read_text()
    missing = {name for name in _settings_variables() if f"| `{name}` |" not in doc}
    assert not missing, f"add to the settings table in docs/deploy.md: {sorted(missing)}"


def test_entrypoint_knows_every_compose_role() -> None:
    compose = (REPO / "docker" / "compose.yaml").read_text()
    entrypoint = (REPO / "docker" / "entrypoint.sh").read_text()
    roles = set(re.findall(r'command: \["([\w-]+)"\]', compose))
    assert roles >= {"migrate", "web", "worker-cpu", "worker-gpu", "beat"}
    for role in roles:
        assert f"\n  {role})" in entrypoint, role
