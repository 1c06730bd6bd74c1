"""Room for HOT updates of lead rows, and lz4 for their state (PostgreSQL only).

Every consumer batch rewrites the rows of the leads it touched. At the default fill factor a
page is full, so each rewrite goes to another page and adds an entry to each of the table's
eight indexes, although a score change touches no indexed column. With space left on the
page the new version stays there (a heap-only tuple) and no index changes. The state is the
one large column (TOASTed past about 2 kB); lz4 compresses it for a fraction of pglz's CPU.
Both settings apply to rows written from now on; nothing is rewritten.

Revision ID: scoring_0005
Revises: scoring_0004
"""

from alembic import op

revision = "scoring_0005"
down_revision = "scoring_0004"
branch_labels = None
depends_on = None

#: lz4 only where the server was built with it (Debian's and the official images are).
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
    op.execute("ALTER TABLE scoring_leads SET (fillfactor = 70)")
    op.execute(_LZ4)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE scoring_leads RESET (fillfactor)")
    op.execute("ALTER TABLE scoring_leads ALTER COLUMN state SET COMPRESSION default")
