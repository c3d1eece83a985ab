"""which AIBUDGET_ADMIN_KEY opened a dashboard session

Sessions opened with the environment's admin key now keep its HMAC-SHA256 under the server secret
(`admin_sessions.env_key_hmac`) and are valid only while the variable holds that key, so rotating a
leaked key ends them. Sessions it opened before this revision kept nothing to check that by: they
are deleted here (their operators sign in again). Sessions of stored keys are kept.

Downgrading deletes the sessions of the environment's key too: the older code would take them on
trust from whichever key the variable holds.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

END_ENV_SESSIONS = "DELETE FROM admin_sessions WHERE key_id = 'env-admin'"


def upgrade() -> None:
    """Upgrade schema."""
    op.execute(END_ENV_SESSIONS)
    # NULL for the sessions of stored keys, which are checked against `api_keys` instead
    op.add_column("admin_sessions", sa.Column("env_key_hmac", sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    op.execute(END_ENV_SESSIONS)
    with op.batch_alter_table("admin_sessions") as batch:
        batch.drop_column("env_key_hmac")
