import pytest
from PIL import Image

from tests.factories import ItemFactory, project_with_members


@pytest.mark.django_db
def test_item_factory_writes_a_real_png() -> None:
    project, manager, annotators = project_with_members(n_annotators=2)
    item = ItemFactory(project=project)
    with item.file.open("rb") as f:
        img = Image.open(f)
        img.verify()
    assert item.project.classes.count() == 3
    assert len(annotators) == 2 and manager.memberships.get().role == "manager"
