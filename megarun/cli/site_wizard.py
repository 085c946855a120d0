"""The questions of `megarun site init`, asked with rich prompts on stderr.

Every question has an option: an answer given as an option is checked and never asked; with
--no-input the preset's defaults answer the rest. A bad typed answer is explained and asked
again; a bad option is a usage error (exit 2). The checks and the setup itself live in
megarun.sites.setup.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from megarun.config.presets import Preset
from megarun.errors import EnvironmentProblem, MegarunError, UsageError
from megarun.homehost.context import Context
from megarun.sites import setup as site_init
from megarun.sites.registry import SshOptions
from megarun.transport.errors import HostKeyUnknown

if TYPE_CHECKING:
    from rich.console import Console

T = TypeVar("T")


@dataclass(frozen=True)
class Given:
    """The answers given as options (None: not given)."""

    preset: str | None
    name: str | None
    host: str | None
    user: str | None
    workdir: str | None
    account: str | None
    queue: str | None
    accept_host_key: bool
    ssh: SshOptions


class Wizard:
    """Asks what the options left open, then sets the site up."""

    def __init__(self, ctx: Context, interactive: bool) -> None:
        from rich.console import Console

        self.ctx = ctx
        self.interactive = interactive
        self.console: Console = Console(stderr=True, highlight=False)

    def run(self, given: Given) -> site_init.InitResult:
        preset = self.ask_preset(given.preset)
        name = self.answer(given.name, "Site name", preset.name,
                           lambda text: site_init.check_new_site_name(self.ctx, text.strip()))
        host = self.ask_host(preset, given.host, given.user)
        account = self.ask_account(preset, given.account)
        queue = self.ask_queue(preset, given.queue)
        suggested = site_init.suggest_workdir(self.ctx, preset, name, host, account)
        workdir = self.answer(given.workdir, "Work dir on the site ($VARS and ~ are expanded "
                              "there)", suggested, _non_empty("work dir"))
        request = site_init.InitRequest(preset.name, name, host, workdir, account, queue,
                                        given.accept_host_key, given.ssh)
        return self.set_up(request)

    # -- the questions ----------------------------------------------------------------------
    def ask_preset(self, given: str | None) -> Preset:
        if given is None and self.interactive:
            self.console.print("Presets:", style="bold")
            for row in site_init.preset_rows():
                self.console.print(f"  {row['number']:>2}  {row['name']:<16} {row['scheduler']:<7}"
                                   f" {row['description']}", markup=False)
        return self.answer(given, "Preset (number or name)", "1", site_init.pick_preset)

    def ask_host(self, preset: Preset, given: str | None, user: str | None) -> str | None:
        host = self.answer(given, "Host: [user@]host[:port], or 'local' for this machine",
                           preset.host or "local", site_init.normalize_host)
        if host is None or "@" in host:
            return site_init.normalize_host(host, user) if user else host
        return self.answer(user, f"User on {host} (empty: ~/.ssh/config, then your login name)",
                           "", lambda text: site_init.normalize_host(host, text.strip()))

    def ask_account(self, preset: Preset, given: str | None) -> str:
        if given is None and preset.scheduler == "local":
            return ""
        question = "Account (the project jobs are charged to)"
        if not preset.account_required:
            question += ", empty for none"
        return self.answer(given, question, preset.account,
                           lambda text: site_init.check_account(preset, text))

    def ask_queue(self, preset: Preset, given: str | None) -> str:
        if given is None and preset.scheduler == "local":
            return ""
        rows = site_init.queue_rows(preset)
        if rows and given is None and self.interactive:
            self.console.print(f"Queues of {preset.name}:", style="bold")
            for row in rows:
                self.console.print(f"  {row['number']:>2}  {row['name']:<18} {row['limits']:<26}"
                                   f" {row['description']}", markup=False)
        question = "Queue (number or name)" if rows else "Queue (empty: the scheduler's default)"
        return self.answer(given, question, preset.default_queue,
                           lambda text: site_init.pick_queue(preset, text))

    def answer(self, given: str | None, question: str, default: str,
               check: Callable[[str], T]) -> T:
        """The checked answer: the option's, the default's (no input), or typed until good."""
        if given is not None:
            return check(given)
        if not self.interactive:
            return check(default)
        while True:
            text = self.prompt(question, default)
            try:
                return check(text)
            except MegarunError as exc:
                self.console.print(f"  {exc}", style="red", markup=False)

    def prompt(self, question: str, default: str) -> str:
        from rich.prompt import Prompt

        try:
            return Prompt.ask(question, console=self.console, default=default,
                              show_default=bool(default))
        except EOFError:
            raise UsageError(f"no answer to {question!r} (input closed): give it as an option, "
                             "or pass --no-input to take the defaults") from None

    # -- the setup ---------------------------------------------------------------------------
    def set_up(self, request: site_init.InitRequest) -> site_init.InitResult:
        try:
            return site_init.init_site(self.ctx, request, self.progress)
        except HostKeyUnknown as exc:
            if request.accept_host_key or not self.trust(exc):
                raise EnvironmentProblem(
                    exc.message, "check the fingerprint with the host's admin, then run "
                    "megarun site init again with --accept-host-key") from None
        accepted = dataclasses.replace(request, accept_host_key=True)
        return site_init.init_site(self.ctx, accepted, self.progress)

    def trust(self, unknown: HostKeyUnknown) -> bool:
        """Ask before trusting an unknown host key (never without --accept-host-key otherwise)."""
        if not self.interactive:
            return False
        from rich.prompt import Confirm

        self.console.print(f"The host key of {unknown.host} is not known: {unknown.key_type} "
                           f"{unknown.fingerprint}", markup=False)
        try:
            return Confirm.ask(f"Trust it and add it to {unknown.known_hosts}?",
                               console=self.console, default=False)
        except EOFError:
            return False

    def progress(self, text: str) -> None:
        self.console.print(f"  {text}", style="dim", markup=False)


def _non_empty(what: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not text.strip():
            raise UsageError(f"the {what} may not be empty")
        return text.strip()

    return check
