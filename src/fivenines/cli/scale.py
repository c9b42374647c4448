"""``fivenines scale GROUP N|auto``: an operator's count for a group with ``scaling:`` (docs/scaling.md).

The count must be within the group's ``scaling`` min..max; fivenines refuses anything else
(and a group without ``scaling:``) with its reason, exit 1. ``auto`` hands the group back
to its policies.
"""

from __future__ import annotations

import click

from fivenines.cli import connect
from fivenines.cli.common import out, refusal
from fivenines.cli.ops import scaling_line


def _count(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    if value == "auto":
        return None
    if not value.isdigit() or int(value) < 1:
        raise click.BadParameter(f"{value!r} is not a count (a whole number, at least 1) nor auto")
    return int(value)


@click.command()
@click.argument("group")
@click.argument("count", metavar="N|auto", callback=_count)
@connect.mutating_options
def scale(group: str, count: int | None, admin: str | None, spec_file: str | None, token_file: str | None) -> None:
    """Set GROUP's active count to N (within its scaling min..max) until `fivenines scale GROUP auto`.

    The group moves at once, in either direction (a scale-in drains the instances it removes).
    With auto, the policies decide again; a scale-in then still waits for the stabilisation window.
    """
    api = connect.client(admin, spec_file, token_file, token=True)
    with refusal(f"scale {group}"):
        st = api.scale(group, count)
    out.print(scaling_line(group, st), markup=False)


COMMANDS: tuple[click.Command, ...] = (scale,)
"""This family's commands, added to ``fivenines`` by :mod:`fivenines.cli`."""
