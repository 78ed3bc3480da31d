"""Which profile serves a client: the main profile's context, those a proxy username selects
(the profile's `selectable`), and the credentials the proxy requires.

Invariants: when the proxy requires credentials, a client gets the main context only with
exactly those, compared in constant time (no selection by username then: auth and selectable
exclude each other in a profile); an unknown username is refused with the names it may choose,
never served by the main profile instead.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import TYPE_CHECKING

from anonproxy import logs
from anonproxy.config.profiles import LoadedProfile, ProfileError, load_profile, open_geo
from anonproxy.exits.context import Context
from anonproxy.exits.tor_datadir import tor_binary
from anonproxy.exits.tor_process import Tor, TorSpec
from anonproxy.runtime.tors import site_renewal_words
from anonproxy.wire.address import Address
from anonproxy.wire.errors import AuthRequired, NoSuchProfile

if TYPE_CHECKING:
    from anonproxy.tls.authority import Authority


class Contexts:
    """The contexts of one profile (and its selectable ones), as loaded at start or a reload."""

    def __init__(self, main: Context, selectable: dict[str, Context],
                 credentials: tuple[str, str] | None) -> None:
        self.main, self.selectable, self.credentials = main, selectable, credentials

    @classmethod
    def load(cls, loaded: LoadedProfile, listen: Address, credentials: tuple[str, str] | None,
             *, tors: dict[TorSpec, Tor], admin: Address | None,
             loopback_allowed: bool) -> Contexts:
        """Contexts for `loaded` and the profiles it makes selectable (ProfileError when one
        cannot be loaded; TorUnavailable when one needs a managed tor and there is no tor)."""
        authority: list[Authority] = []  # the local CA, loaded once when a profile inspects

        def context(profile: LoadedProfile) -> Context:
            inspects = bool(profile.profile.inspect.hosts)
            if inspects and not authority:
                authority.append(local_authority(profile))
            made = Context(profile, listen, geo=open_geo(profile), tors=tors, admin=admin,
                           loopback_allowed=loopback_allowed,
                           authority=authority[0] if authority else None)
            if inspects:
                site_trust(made)
            return made

        main, selectable = context(loaded), {}
        for given in loaded.profile.selectable:
            relative = given.endswith(".toml") and not Path(given).is_absolute()
            other = load_profile(str(loaded.path.parent / given) if relative else given)
            if other.profile.reverse:
                raise ProfileError(f"{other.path}: [[reverse]] entries run from the profile "
                                   f"serve starts with, not from a selectable one ({given})")
            selectable[other.name] = context(other)
        made = cls(main, selectable, credentials)
        if any(spec.managed for ctx in made.all() for spec in ctx.tor_specs()):
            tor_binary()  # no tor program: say so now, with what to do instead
        return made

    def has_identities(self) -> bool:
        """Whether any profile has an exit with identities to renew (Tor)."""
        return any(plan.identity is not None
                   for ctx in self.all() for plan in ctx.plans.values())

    def renewal_words(self, site: str) -> str:
        return site_renewal_words(site, [(ctx.loaded.name, plan.name, plan.identity)
                                         for ctx in self.all()
                                         for plan in ctx.plans.values()
                                         if plan.identity is not None])

    def warn_if_direct(self) -> None:
        """Say in the log which profiles send traffic out with this machine's address."""
        for ctx in self.all():
            profile = ctx.profile
            direct = [n for n in {profile.default, *(r.exit for r in profile.rules)}
                      if n in ctx.plans and ctx.plans[n].exposes_address]
            if direct and profile.forwarding:
                logs.log.warning(
                    "profile '%s' sends traffic DIRECT (exit %s): those sites see this machine's "
                    "address. Headers are stripped, but the address is not hidden.",
                    ctx.loaded.name, ", ".join(f"'{n}'" for n in sorted(direct)))

    def all(self) -> list[Context]:
        return [self.main, *self.selectable.values()]

    def for_client(self, credentials: tuple[str, str] | None) -> Context:
        """The context for a client: the main profile, or the one its proxy username names.
        Raises AuthRequired when the proxy requires credentials and these are not them."""
        if self.credentials is not None:
            user, password = credentials or ("", "")
            if not (hmac.compare_digest(user.encode(), self.credentials[0].encode())
                    & hmac.compare_digest(password.encode(), self.credentials[1].encode())):
                raise AuthRequired("this proxy needs the credentials it was started with")
            return self.main
        username = credentials[0] if credentials else None
        if username is None or not self.selectable:
            return self.main
        try:
            return self.selectable[username]
        except KeyError:
            raise NoSuchProfile(
                f"no selectable profile named '{username[:64]}' "
                f"(choose one of: {', '.join(sorted(self.selectable))})"
            ) from None


def local_authority(loaded: LoadedProfile) -> Authority:
    """The local CA that signs what the proxy shows clients of opened hosts (created on first
    use: tls/authority.py); ProfileError naming the profile's `[inspect]` when it is unusable."""
    from anonproxy.tls.authority import Authority, AuthorityError  # (cryptography: when needed)

    try:
        return Authority.load_or_create()
    except AuthorityError as error:
        raise ProfileError(f"{loaded.path}: inspect.hosts: the local CA cannot be used: "
                           f"{error}") from None


def site_trust(ctx: Context) -> None:
    """Check now that the sites' certificates can be verified as `[inspect] ca_bundle` says
    (ProfileError naming it), rather than at each opened connection."""
    from anonproxy.tls.trust import TrustError

    try:
        ctx.site_tls()
    except TrustError as error:
        raise ProfileError(f'{ctx.loaded.path}: inspect.ca_bundle = '
                           f'"{ctx.profile.inspect.ca_bundle}": {error}') from None


def profile_credentials(loaded: LoadedProfile) -> tuple[str, str] | None:
    """The credentials the profile's `auth` requires, if any."""
    auth = loaded.profile.auth
    return (auth.username, auth.password) if auth is not None else None
