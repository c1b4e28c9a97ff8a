"""The tenant: find the one practice a command or request names, by platform and account."""

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from plugin.core.models import Practice


class PracticeError(ValueError):
    """A practice cannot be added as asked."""


# The `--platform` option of every command that names a practice by its account id: accounts
# are unique per platform, not across platforms.
platform_option = click.option(
    "--platform", default="standard", show_default=True, help="The platform of ACCOUNT_ID."
)


def find_practice(session: Session, account_id: str, platform: str = "standard") -> Practice:
    """Return the practice installed as account_id on platform, or raise PracticeError."""
    practice = session.scalar(
        select(Practice).where(Practice.platform == platform, Practice.account_id == account_id)
    )
    if practice is None:
        raise PracticeError(
            f"no practice with account {account_id!r} on platform {platform!r}; "
            "see `alliance-check practice list`"
        )
    return practice
