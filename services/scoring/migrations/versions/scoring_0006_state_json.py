"""Lead state stored as json rather than jsonb (PostgreSQL only).

Every consumer batch writes the whole state of each lead it touched (a few kB of JSON for a
lead with a few dozen interactions), and nothing queries inside it: PostgreSQL only stores it
and hands it back. As jsonb, each write parsed the document into the binary form (sorting
every object's keys) and each read turned it back into text; as json the text is checked and
kept as it is. Measured with ``python -m bench.scoring``: the database backend's CPU per event
went from 90 to 81 µs.

The type change rewrites the table once (under an exclusive lock: minutes for millions of
leads).

Revision ID: scoring_0006
Revises: scoring_0005
"""

from alembic import op

revision = "scoring_0006"
down_revision = "scoring_0005"
branch_labels = None
depends_on = None

#: lz4 only where the server was built with it (as in scoring_0005).
_LZ4 = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression'
               AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE scoring_leads ALTER COLUMN state SET COMPRESSION lz4;
    END IF;
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE scoring_leads ALTER COLUMN state TYPE json USING state::json")
    op.execute(_LZ4)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE scoring_leads ALTER COLUMN state TYPE jsonb USING state::jsonb")
    op.execute(_LZ4)
