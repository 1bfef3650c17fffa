"""Transcripts and their words (times, probabilities, G2P phonemes).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "transcripts",
        sa.Column("file_id", BigId, sa.ForeignKey("files.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("n_words", sa.Integer, nullable=False),
        sa.Column("transcribed_at", sa.Float, nullable=False),
    )
    op.create_table(
        "words",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("file_id", BigId, sa.ForeignKey("files.id", ondelete="CASCADE"), nullable=False),
        sa.Column("start", sa.Float, nullable=False),
        sa.Column("end", sa.Float, nullable=False),
        sa.Column("token", sa.Text, nullable=False),  # a transcriber may emit a very long "word"
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("phonemes", sa.Text, nullable=False),
    )
    op.create_index("ix_words_file", "words", ["file_id"])
    op.create_index("ix_words_token", "words", ["token"])


def downgrade() -> None:
    op.drop_table("words")
    op.drop_table("transcripts")
