"""The ``fivenines`` command: one group, its commands in one module per family.

=====================  ======================================================
module                 commands
=====================  ======================================================
:mod:`.run`            ``validate``, ``up``, ``schema``: the spec, run here
:mod:`.ops`            ``status``, ``events``, ``drain``, ``enable``,
                       ``maintenance``, ``weight``, ``reload``, ``restart``,
                       ``switchover``: a running fivenines, through its admin API
:mod:`.scale`          ``scale``: a manual count for a scaled group
:mod:`.model`          ``model``: predicted availability
:mod:`.chaos`          ``chaos``: faults under load, measured availability
:mod:`.backup`         ``backup``, ``backups``, ``restore``: backups of a
                       replicated group, restores and drills
:mod:`.aws`            ``aws plan|apply|status|destroy``: the spec on AWS
=====================  ======================================================

Shared parts: :mod:`.common` (consoles, exit codes, loading a spec, and
:func:`~fivenines.cli.common.report`, where an error no command handled becomes a
message and exit status 1, or 2 for a spec/configuration problem),
:mod:`.connect` (finding the running fivenines from ``--admin``/``-f``/``--token-file``)
and :mod:`.admin_client` (the one HTTP client of the admin API; chaos uses it too).

A new command family (``scale``, ``backup``, ``cluster`` ...) is a new module here
with its click commands (or a click group) in a ``COMMANDS`` tuple, named in
``FAMILIES`` below. A command that talks to a running fivenines builds its client
with :func:`fivenines.cli.connect.client` and, if the admin API lacks the call, adds
a method to :class:`~fivenines.cli.admin_client.AdminClient`. Heavy imports (the
runtime, boto3, the chaos runner) stay inside the command functions, so that
``fivenines status`` starts fast and ``fivenines up`` runs without boto3.
"""

from __future__ import annotations

import click

from fivenines import __version__
from fivenines.cli import aws, backup, chaos, model, ops, run, scale
from fivenines.cli.common import Main

FAMILIES = (run, ops, scale, model, chaos, aws, backup)
"""The modules whose ``COMMANDS`` make up ``fivenines``."""


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fivenines")
def main() -> None:
    """fivenines: a redundant service behind a health-checked load balancer, from one file."""


for _family in FAMILIES:
    for _command in _family.COMMANDS:
        main.add_command(_command)
