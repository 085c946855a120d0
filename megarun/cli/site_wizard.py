"""The questions of `megarun site init`, asked with rich prompts on stderr.

Every question has an option: an answer given as an option is checked and never asked; with
--no-input the preset's defaults answer the rest. A bad typed answer is explained and asked
again; `back` returns to the previous question asked; a bad option is a usage error (exit 2).
The checks and the setup itself live in megarun.sites.setup.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from rich.console import Console
from rich.markup import escape
from rich.prompt import Confirm, Prompt

from megarun.config.presets import Preset
from megarun.errors import EnvironmentProblem, MegarunError, UsageError
from megarun.homehost.context import Context
from megarun.sites import setup as site_init
from megarun.sites.registry import SshOptions
from megarun.transport.errors import HostKeyUnknown

T = TypeVar("T")

#: Typed at any question, returns to the one asked before it.
BACK = "back"


class GoBack(Exception):
    """The user typed `back`: ask the previous question again."""


@dataclass
class Answers:
    """The answers so far, filled question by question (and again after `back`)."""

    preset: Preset | None = None
    name: str = ""
    server: str | None = None  # the host question's answer; None: this machine
    host: str | None = None  # with the user question's answer put in front
    account: str = ""
    queue: str = ""
    workdir: str = ""

    @property
    def chosen(self) -> Preset:
        """The preset: asked first, so there for every question after it."""
        assert self.preset is not None
        return self.preset


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
        self.ctx = ctx
        self.interactive = interactive
        self.console: Console = Console(stderr=True, highlight=False)
        self.asked = False  # whether the current question was typed (not an option's answer)

    def run(self, given: Given) -> site_init.InitResult:
        answers = Answers()
        self.ask_all(given, answers)
        request = site_init.InitRequest(answers.chosen.name, answers.name, answers.host,
                                        answers.workdir, answers.account, answers.queue,
                                        given.accept_host_key, given.ssh)
        return self.set_up(request)

    def ask_all(self, given: Given, answers: Answers) -> None:
        """Ask the questions in order; `back` returns to the last one that was typed."""
        questions: list[Callable[[Given, Answers], None]] = [
            self.ask_preset, self.ask_name, self.ask_host, self.ask_user, self.ask_account,
            self.ask_queue, self.ask_workdir]
        if self.interactive:
            self.console.print("Type 'back' at any question to return to the one before.",
                               style="dim")
        typed: list[int] = []  # the questions answered by typing, in order
        index = 0
        while index < len(questions):
            self.asked = False
            try:
                questions[index](given, answers)
            except GoBack:
                if typed:
                    index = typed.pop()
                else:
                    self.console.print("  this is the first question", style="red")
                continue
            if self.asked:
                typed.append(index)
            index += 1

    # -- the questions ----------------------------------------------------------------------
    def ask_preset(self, given: Given, answers: Answers) -> None:
        area_root = self.ctx.area.root
        if given.preset is None and self.interactive:
            self.console.print("Presets:", style="bold")
            for row in site_init.preset_rows(area_root):
                origin = "" if row["origin"] == "shipped" else f" ({row['origin']})"
                self.console.print(f"  {row['number']:>2}  {row['name']:<16} {row['scheduler']:<7}"
                                   f" {row['description']}{origin}", markup=False)
        answers.preset = self.answer(given.preset, "Preset (number or name)", "1",
                                     lambda text: site_init.pick_preset(text, area_root))

    def ask_name(self, given: Given, answers: Answers) -> None:
        answers.name = self.answer(
            given.name, "Site name (letters, digits, '_', '.', '-')", answers.chosen.name,
            lambda text: site_init.check_new_site_name(self.ctx, text.strip()))

    def ask_host(self, given: Given, answers: Answers) -> None:
        answers.server = self.answer(given.host, "Host: [user@]host[:port], or 'local' for "
                                     "this machine", answers.chosen.host or "local",
                                     site_init.normalize_host)

    def ask_user(self, given: Given, answers: Answers) -> None:
        host = answers.server
        if host is None or "@" in host:
            answers.host = site_init.normalize_host(host, given.user) if given.user else host
            return
        answers.host = self.answer(
            given.user, f"User on {host} (empty: ~/.ssh/config, then your login name)", "",
            lambda text: site_init.normalize_host(host, text.strip()))

    def ask_account(self, given: Given, answers: Answers) -> None:
        preset = answers.chosen
        answers.account = ""  # a site without a scheduler charges no account
        if given.account is None and preset.scheduler == "local":
            return
        question = "Account (the project jobs are charged to)"
        if not preset.account_required:
            question += ", empty for none"
        answers.account = self.answer(given.account, question, preset.account,
                                      lambda text: site_init.check_account(preset, text))

    def ask_queue(self, given: Given, answers: Answers) -> None:
        preset = answers.chosen
        answers.queue = ""  # nor has it queues
        if given.queue is None and preset.scheduler == "local":
            return
        rows = site_init.queue_rows(preset)
        if rows and given.queue is None and self.interactive:
            self.console.print(f"Queues of {preset.name}:", style="bold")
            for row in rows:
                self.console.print(f"  {row['number']:>2}  {row['name']:<18} {row['limits']:<26}"
                                   f" {row['description']}", markup=False)
        question = "Queue (number or name)" if rows else "Queue (empty: the scheduler's default)"
        answers.queue = self.answer(given.queue, question, preset.default_queue,
                                    lambda text: site_init.pick_queue(preset, text))

    def ask_workdir(self, given: Given, answers: Answers) -> None:
        suggested = site_init.suggest_workdir(self.ctx, answers.chosen, answers.name,
                                              answers.host, answers.account)
        answers.workdir = self.answer(given.workdir, "Work dir on the site ($VARS and ~ are "
                                      "expanded there)", suggested, _non_empty("work dir"))

    def answer(self, given: str | None, question: str, default: str,
               check: Callable[[str], T]) -> T:
        """The checked answer: the option's, the default's (no input), or typed until good."""
        if given is not None:
            return check(given)
        if not self.interactive:
            return check(default)
        self.asked = True
        while True:
            text = self.prompt(question, default)
            if text.strip().lower() == BACK:
                raise GoBack
            try:
                return check(text)
            except MegarunError as exc:
                self.console.print(f"  {exc}", style="red", markup=False)

    def prompt(self, question: str, default: str) -> str:
        try:  # escaped: rich would take `[user@]` for markup and show `host[:port]`
            return Prompt.ask(escape(question), console=self.console, default=default,
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
        self.console.print(f"The host key of {unknown.host} is not known: {unknown.key_type} "
                           f"{unknown.fingerprint}", markup=False)
        try:
            return Confirm.ask(escape(f"Trust it and add it to {unknown.known_hosts}?"),
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
