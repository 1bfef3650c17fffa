"""A catalogue id in meta: an index folder records it, so its vectors are never joined with
the rows of another catalogue (a writer's repair would drop every file whose vectors it lacks).

Revision ID: 0003
Revises: 0002
"""

import json
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.Text))


def upgrade() -> None:
    op.execute(meta.insert().values(key="catalogue_id", value=json.dumps(uuid.uuid4().hex)))


def downgrade() -> None:
    op.execute(meta.delete().where(meta.c.key == "catalogue_id"))
