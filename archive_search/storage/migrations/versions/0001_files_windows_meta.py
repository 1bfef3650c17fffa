"""Files, windows and key/value meta: the catalogue as first made.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("path", sa.LargeBinary, nullable=False, unique=True),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("size", BigId, nullable=False),
        sa.Column("mtime", sa.Float, nullable=False),
        sa.Column("duration", sa.Float, nullable=False),
        sa.Column("sample_rate", sa.Integer, nullable=False),
        sa.Column("n_windows", sa.Integer, nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("indexed_at", sa.Float, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "windows",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("file_id", BigId, sa.ForeignKey("files.id", ondelete="CASCADE"), nullable=False),
        sa.Column("start", sa.Float, nullable=False),
        sa.Column("end", sa.Float, nullable=False),
        sa.Column("scale", sa.SmallInteger, nullable=False),
        sqlite_autoincrement=True,  # window ids are FAISS ids: never reused
    )
    op.create_index("ix_windows_file", "windows", ["file_id"])
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("meta")
    op.drop_table("windows")
    op.drop_table("files")
