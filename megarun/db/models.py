"""peewee models of the working database. Schema changes go through megarun.db.migrations."""

from __future__ import annotations

from typing import Any

from peewee import (
    SQL,
    AutoField,
    CharField,
    DatabaseProxy,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)
from playhouse.sqlite_ext import AutoIncrementField

from megarun.core.states import JobStatus

database_proxy = DatabaseProxy()


class BaseModel(Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class SchemaMigration(BaseModel):
    """One applied, named migration step."""

    name = CharField(primary_key=True)
    applied = FloatField()


class Site(BaseModel):
    """Where jobs execute."""

    id = AutoField()
    name = CharField(unique=True)
    preset = CharField()
    scheduler = CharField(default="local")
    host = CharField(null=True)  # None: this machine
    workdir = TextField()
    settings = TextField(default="{}")  # JSON: the resolved preset plus --set overrides
    created = FloatField()


class App(BaseModel):
    """A named command template."""

    id = AutoField()
    name = CharField(unique=True)
    command = TextField()
    description = TextField(default="")
    params = TextField(default="{}")  # JSON: parameter name -> default (null: required)
    env = TextField(default="{}")
    resources = TextField(default="{}")
    requirements = TextField(default="{}")
    retries = IntegerField(default=0)
    source = TextField(default="cli")
    created = FloatField()
    # JSON [{src, dest}] (megarun.config.apps); None when the app stages nothing, so that
    # `stage_in IS NOT NULL` finds the few apps that need a transfer.
    stage_in = TextField(null=True)
    stage_out = TextField(null=True)


class Run(BaseModel):
    """A (target, runname) pair of a test suite.

    Ids are never reused (AUTOINCREMENT, 0005_archive): a run keeps its id in the
    completed-runs database and when it is restored.
    """

    id = AutoIncrementField()
    target = CharField()
    runname = CharField()
    created = FloatField()
    config_hash = CharField(default="")
    state = CharField(default="new")  # "open"; "MOVED" once migrated to another area
    moved_to = TextField(null=True)  # 0005_archive: the destination area of a MOVED run

    class Meta:
        indexes = ((("target", "runname"), True),)


class RunTest(BaseModel):
    """The resolved definition of one test as a run last used it (to detect STALE jobs)."""

    run = ForeignKeyField(Run, backref="tests", on_delete="CASCADE")
    test = CharField()
    definition_hash = CharField()
    definition = TextField()

    class Meta:
        indexes = ((("run", "test"), True),)


class BatchJob(BaseModel):
    """One scheduler allocation."""

    id = AutoField()
    site_id: int
    site = ForeignKeyField(Site, backref="batch_jobs", on_delete="CASCADE")
    scheduler_id = CharField(null=True)
    state = CharField(default="pending_submission")
    mode = CharField(default="pilot")
    nodes = IntegerField(default=1)
    walltime = FloatField(default=10.0)
    queue = CharField(null=True)
    account = CharField(null=True)
    tags = TextField(default="{}")
    message = TextField(default="")
    created = FloatField()
    ended = FloatField(null=True)
    # 0004_batch: the scheduler's own state word, the script's exit code, extra directives
    native = CharField(default="", constraints=[SQL("DEFAULT ''")])
    exit_code = IntegerField(null=True)
    submitted = FloatField(null=True)
    started = FloatField(null=True)
    extras = TextField(default="{}", constraints=[SQL("DEFAULT '{}'")])
    # 0007_elastic: 1 when the elastic policy submitted it (engine/elastic.py)
    elastic = IntegerField(default=0, constraints=[SQL("DEFAULT 0")])


class Job(BaseModel):
    """One execution unit. Ids are never reused (AUTOINCREMENT): events outlive `job rm`."""

    id = AutoIncrementField()
    app_id: int | None
    site_id: int | None
    name = CharField(default="")
    app = ForeignKeyField(App, null=True, backref="jobs", on_delete="RESTRICT")
    run = ForeignKeyField(Run, null=True, backref="jobs", on_delete="CASCADE")
    test = CharField(null=True)
    item = CharField(null=True)
    # indexed by (site, state) below
    site = ForeignKeyField(Site, null=True, backref="jobs", on_delete="RESTRICT", index=False)
    command = TextField()
    # JSON [{name, cmd}] of a test job (`"keep": true` on the steps a rerun --step does not run
    # again, megarun.campaign.rerun_step); None: one step, `command`
    steps = TextField(null=True)
    rules = TextField(null=True)  # JSON pass/fail rules judged by the agent (spool protocol)
    jobgroup = CharField(null=True)
    params = TextField(default="{}")
    tags = TextField(default="{}")
    env = TextField(default="{}")
    nodes = IntegerField(default=1)
    ranks_per_node = IntegerField(default=1)
    threads_per_rank = IntegerField(default=1)
    gpus_per_rank = IntegerField(default=0)
    # how many such jobs may share one node (0: no limit but cpus and gpus); 0004_batch
    node_packing_count = IntegerField(default=0, constraints=[SQL("DEFAULT 0")])
    walltime = FloatField(null=True)  # minutes
    priority = IntegerField(default=0)
    state = CharField()
    status = CharField(default=JobStatus.NA.value)
    attempt = IntegerField(default=0)
    runs = IntegerField(default=0)
    max_attempts = IntegerField(default=1)
    workdir = TextField(null=True)
    exit_code = IntegerField(null=True)
    message = TextField(default="")
    agent = CharField(null=True)
    batch_job = ForeignKeyField(BatchJob, null=True, backref="jobs", on_delete="SET NULL")
    created = FloatField()
    started = FloatField(null=True)
    ended = FloatField(null=True)

    class Meta:
        indexes = (
            (("state", "status"), False),
            (("status",), False),
            (("site", "state"), False),
        )


class JobTag(BaseModel):
    """One key=value tag of a job, indexed for selectors."""

    job = ForeignKeyField(Job, backref="tag_rows", on_delete="CASCADE")
    key = CharField()
    value = CharField()

    class Meta:
        primary_key = False
        indexes = ((("key", "value", "job"), True), (("job",), False))


class JobDependency(BaseModel):
    """child runs after parent."""

    parent = ForeignKeyField(Job, backref="child_links", on_delete="CASCADE")
    child = ForeignKeyField(Job, backref="parent_links", on_delete="CASCADE")
    # waiton mode: "normal" needs a good parent status, "toplevel" only a COMPLETED parent
    mode = CharField(default="normal", constraints=[SQL("DEFAULT 'normal'")])

    class Meta:
        primary_key = False
        indexes = ((("parent", "child"), True), (("child",), False))


class Event(BaseModel):
    """One state transition of one job: the audit trail."""

    id = AutoField()
    job = IntegerField(index=True)  # no foreign key: the trail outlives `job rm`
    time = FloatField()
    from_state = CharField()
    to_state = CharField()
    status = CharField()
    attempt = IntegerField(default=0)
    message = TextField(default="")
    data = TextField(null=True)


class Agent(BaseModel):
    """One agent seen on a site, and how far its event log has been read."""

    id = CharField(primary_key=True)
    site = ForeignKeyField(Site, backref="agents", on_delete="CASCADE")
    host = CharField(default="")
    pid = IntegerField(null=True)
    batch_job = IntegerField(null=True)
    started = FloatField()
    last_seen = FloatField()
    state = CharField(default="running")
    events_offset = IntegerField(default=0)
    last_seq = IntegerField(default=0)


class StageOutDue(BaseModel):
    """A dispatched attempt of a job whose app has stage_out and whose files are not back yet.

    Written with the READY -> QUEUED change, removed once the files are copied home (or the
    attempt ended badly): the table holds only jobs in flight, so looking for work is cheap.
    """

    job = ForeignKeyField(Job, primary_key=True, backref="+", on_delete="CASCADE")
    attempt = IntegerField()


class AppChangeDue(BaseModel):
    """A dispatched attempt of a job whose app changed while it was out (0006_app_change): the
    attempt runs the old command, so if it completes its result is STALE at once
    (megarun.campaign.app_stale). Written by the app's save, removed when the attempt ends:
    the table holds only jobs in flight."""

    job = ForeignKeyField(Job, primary_key=True, backref="+", on_delete="CASCADE")
    attempt = IntegerField()


class RunMove(BaseModel):
    """The intent of a run move in progress (0005_archive): written before the copy, removed
    after the delete, so that the next command finishes or undoes a move a crash cut short.

    direction: "reduce" (to completed-runs.db), "restore" (back) or "migrate" (to the area
    at `destination`). No foreign key: the run may live in either database.
    """

    run_id = IntegerField(primary_key=True)
    direction = CharField()
    destination = TextField(null=True)
    started = FloatField()


ALL_MODELS: list[Any] = [
    SchemaMigration,
    Site,
    App,
    Run,
    RunTest,
    BatchJob,
    Job,
    JobTag,
    JobDependency,
    Event,
    Agent,
    StageOutDue,
    RunMove,
    AppChangeDue,
]
