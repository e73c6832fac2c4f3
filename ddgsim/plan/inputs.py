"""Inputs named as a user names them, shared by the ``plan`` and ``simulate`` use cases.

:class:`InputError` is a :class:`~ddgsim.errors.ParameterError` whose message names its
parameters anywhere in the sentence (``give either {model} or {profile} FILE, not both``), so that
a command line names them as its flags; :func:`load_profile_file` reads a profile file for a batch
size, refusing another batch than the file's (a profile's costs are for its batch; none is scaled
silently).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ddgsim.errors import ParameterError
from ddgsim.profile.format import Profile

DEFAULT_BATCH = 128
"""The batch size of a model's profile when a plan or a simulation names none."""


class InputError(ParameterError):
    """A bad input whose message names parameters anywhere, each written ``{name}`` (``{{name}}`` in
    an f-string): ``str()`` names them as the library does, :meth:`naming` as a command line does
    (``give a {model} or {profile} FILE`` → ``give a MODEL or --profile FILE``). The parameters are
    the ``{name}`` words of ``template``, the first of them :attr:`param`."""

    def __init__(self, template: str) -> None:
        self.template = template
        params = list(dict.fromkeys(re.findall(r"\{(\w+)\}", template)))
        if not params:
            raise ValueError(f"an InputError names a parameter: {template!r}")
        super().__init__(params[0], "", params[1:])

    def naming(self, names: Mapping[str, str]) -> str:
        text = self.template
        for name in (self.param, *self.others):
            text = text.replace("{" + name + "}", names.get(name, name))
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.template,))


def check_profile_batch(batch_size: int | None, profile: Profile, path: str) -> None:
    """A :class:`ParameterError` naming ``batch_size`` when it asks for another batch than ``profile``
    (read from ``path``) was measured at; ``None`` asks for none."""
    from ddgsim.models.registry import buildable

    if batch_size is None or batch_size == profile.batch_size:
        return
    how = (f"python -m ddgsim profile {profile.model} --batch-size {batch_size} --out FILE"
           if buildable(profile.model) else "measure it where the profile came from")
    raise ParameterError("batch_size", f" {batch_size} but profile {path} was measured at batch {profile.batch_size}; "
                                       f"drop {{batch_size}} to plan batch {profile.batch_size}, or profile batch "
                                       f"{batch_size} ({how})")


def load_profile_file(path: str, batch_size: int | None = None) -> Profile:
    """The ``ddgsim-profile/1`` file ``path``, measured at ``batch_size`` (``None``: at any)."""
    from ddgsim.profile import format as profile_format

    profile = profile_format.load(path)
    check_profile_batch(batch_size, profile, path)
    return profile


def check_one_source(model: str | None, profile: str | None) -> None:
    """Not both a model's name and a profile file."""
    if model and profile:
        raise InputError("give either {model} or {profile} FILE, not both")
