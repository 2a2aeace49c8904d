"""The command line: comfycord run | serve | check | generate | workflows | backends | import
| sync | keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from bot.errors import ComfycordError, ComfyError, ConfigError, UserError
from bot.jobs.model import JobState
from bot.jobs.runner import JobUpdate
from bot.jobs.store import Store
from bot.lifecycle import SHUTDOWN_SECONDS, stop_requested
from bot.settings import Settings, load_settings
from bot.workflows import Workflow, load_workflows
from bot.workflows.nodemap import NodeMap

log = logging.getLogger("comfycord")

TOKEN_HELP = """\
DISCORD_TOKEN is not set, so the bot cannot log in.
  1. Open https://discord.com/developers/applications, create an application, open "Bot"
     and press "Reset Token" to get the token.
  2. export DISCORD_TOKEN='<the token>'   (never put it in a file that is committed)
  3. Run this command again. See README.md ("Set up the Discord bot") for inviting it.
"""


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    logging.getLogger("discord.gateway").setLevel(logging.WARNING)
    # discord.py's debug lines carry request URLs, and an interaction's URL holds its token
    for name in ("discord.http", "discord.webhook.async_"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger().level))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="comfycord", description=__doc__)
    parser.add_argument("--config", type=Path, help="settings file (config/comfycord.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the Discord bot")
    check = sub.add_parser("check", help="validate the settings and every workflow")
    check.add_argument("--offline", action="store_true", help="do not ask ComfyUI")
    gen = sub.add_parser("generate", help="run one workflow on ComfyUI and save its results")
    gen.add_argument("workflow")
    gen.add_argument("--prompt", "-p", help="the prompt text")
    gen.add_argument(
        "--set", "-s", action="append", default=[], metavar="NAME=VALUE", help="a parameter"
    )
    gen.add_argument(
        "--file",
        "--image",
        dest="files",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a file for an image, video or audio parameter",
    )
    gen.add_argument("--count", type=int, default=1, help="how many images (seeds)")
    gen.add_argument("--out", type=Path, default=Path("out"), help="where to write the results")
    sub.add_parser("serve", help="serve the HTTP API alone (no Discord token needed)")
    keys = sub.add_parser("keys", help="create, list and revoke HTTP API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key (printed once)")
    create.add_argument("name")
    create.add_argument("--limit-queued", type=int, help="jobs this key may have waiting")
    create.add_argument("--workflows", help="the only workflows it may use: a,b")
    create.add_argument(
        "--admin",
        action="store_true",
        help="an admin key: adds and removes workflows (API and web console), sees every job",
    )
    keys_sub.add_parser("list", help="list the keys (never the keys themselves)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key")
    revoke.add_argument("name")
    sub.add_parser("workflows", help="list the workflows and their parameters")
    sub.add_parser("backends", help="the ComfyUI backends: state, version, device, jobs done")
    imp = sub.add_parser(
        "import", help="turn an exported ComfyUI workflow into a pack (NAME.json + NAME.yaml)"
    )
    imp.add_argument("file", type=Path, help="the workflow, saved or exported from ComfyUI")
    imp.add_argument("--name", help="the pack name (default: derived from the file name)")
    imp.add_argument("--yaml", type=Path, help="a YAML spec to use instead of detecting params")
    imp.add_argument("--offline", action="store_true", help="do not ask ComfyUI")
    sync = sub.add_parser("sync", help="register the slash commands with Discord")
    sync.add_argument("--guild", type=int, help="sync to this server only (instant)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `comfycord` console script."""
    try:
        code = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # whoever read our output stopped early (`comfycord workflows | head`): not an error;
        # point stdout at nothing so that the interpreter's last flush cannot fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    try:
        if args.command == "check":
            return asyncio.run(check(settings, offline=args.offline))
        if args.command == "backends":
            return asyncio.run(show_backends(settings))
        if args.command == "workflows":
            return list_workflows(settings)
        if args.command == "generate":
            return asyncio.run(generate(settings, args))
        if args.command == "import":
            return asyncio.run(import_workflow(settings, args))
        if args.command == "keys":
            return manage_keys(settings, args)
        if args.command == "serve":
            from bot.http.server import serve

            return asyncio.run(serve(settings))
        if args.command in ("run", "sync"):
            if not settings.discord_token:
                print(TOKEN_HELP, file=sys.stderr)
                return 2
            from bot.app import run_bot, sync_commands

            if args.command == "sync":
                return asyncio.run(sync_commands(settings, args.guild))
            return asyncio.run(run_bot(settings))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


# check ---------------------------------------------------------------------------------------
async def check(settings: Settings, *, offline: bool = False, out: TextIO | None = None) -> int:
    """Validate settings and workflows (and against ComfyUI's /object_info when reachable)."""
    out = out or sys.stdout
    problems: list[str] = []
    object_info: dict[str, Any] | None = None
    version: str | None = None
    if not offline:
        object_info = await _fetch_object_info(settings, out)
        version = await _fetch_version(settings) if object_info is not None else None
    node_map = await _fetch_node_map(settings) if object_info is not None else None
    workflows, load_problems = load_workflows(
        settings.workflows.dir, object_info, comfyui_version=version, node_map=node_map
    )
    problems += [str(p) for p in load_problems]  # with object_info, checked against it too
    if settings.workflows.default not in workflows:
        problems.append(
            f"settings: workflows.default: no workflow called '{settings.workflows.default}'"
            f" in {settings.workflows.dir}"
        )
    for name in sorted(workflows):
        print(f"ok: workflow {name} ({len(workflows[name].params)} parameters)", file=out)
        for repair in workflows[name].repairs:
            print(f"repaired: workflow {name}: {repair}", file=out)
    for problem in problems:
        print(f"problem: {problem}", file=out)
    print(f"{len(workflows)} workflow(s), {len(problems)} problem(s)", file=out)
    return 1 if problems else 0


async def _fetch_object_info(settings: Settings, out: TextIO) -> dict[str, Any] | None:
    """The node classes of every backend that answers (model lists merged), None if none does."""
    from bot.comfy.client import ComfyClient
    from bot.comfy.pool import merge_object_info

    timeout = aiohttp.ClientTimeout(total=min(10.0, settings.comfyui.request_timeout))
    infos = []
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for backend in settings.comfyui.pool():
            client = ComfyClient(
                session, backend.url, request_timeout=10.0, headers=backend.headers
            )
            try:
                info = await client.object_info()
            except ComfyError as exc:
                print(f"note: {exc}; checked without its node list", file=out)
                continue
            finally:
                await client.close()
            print(f"ok: ComfyUI at {backend.url} ({len(info)} node types)", file=out)
            infos.append(info)
    if not infos:
        print("note: checked without ComfyUI's node list", file=out)
        return None
    return infos[0] if len(infos) == 1 else merge_object_info(infos)


async def _fetch_node_map(settings: Settings) -> NodeMap:
    """The class -> pack map: the first backend's ComfyUI-Manager's, over the bundled copy."""
    from bot.comfy.client import ComfyClient

    timeout = aiohttp.ClientTimeout(total=min(10.0, settings.comfyui.request_timeout))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for backend in settings.comfyui.pool():
            client = ComfyClient(
                session, backend.url, request_timeout=10.0, headers=backend.headers
            )
            try:
                live = await client.node_mappings()
            finally:
                await client.close()
            if live is not None:
                return NodeMap.for_server(live)
    return NodeMap.bundled()


async def _fetch_version(settings: Settings) -> str | None:
    """The ComfyUI version `/system_stats` reports, or None when it can't be read."""
    from bot.comfy.client import ComfyClient

    timeout = aiohttp.ClientTimeout(total=min(10.0, settings.comfyui.request_timeout))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        backend = settings.comfyui.pool()[0]
        client = ComfyClient(session, backend.url, request_timeout=10.0, headers=backend.headers)
        try:
            stats = await client.system_stats()
        except ComfyError:
            return None
        finally:
            await client.close()
    system = stats.get("system")
    version = system.get("comfyui_version") if isinstance(system, dict) else None
    return version if isinstance(version, str) and version else None


# backends ------------------------------------------------------------------------------------
async def show_backends(settings: Settings, out: TextIO | None = None) -> int:
    """Print a table of the ComfyUI backends; exits 1 when one of them is down."""
    from bot.comfy.pool import Pool

    out = out or sys.stdout
    done: dict[str, int] = {}
    if Path(settings.storage.path).exists():
        store = Store(settings.storage.path)
        try:
            done = store.done_by_backend()
        finally:
            store.close()
    timeout = min(10.0, settings.comfyui.request_timeout)
    comfy = settings.comfyui.model_copy(update={"request_timeout": timeout})
    async with aiohttp.ClientSession() as session:
        pool = Pool.from_settings(session, comfy)
        try:
            await pool.start(ready_timeout=timeout)
            rows = []
            for backend in pool:
                if not backend.up:
                    await backend.refresh()  # to say why
                status = backend.status(0, done.get(backend.name, 0))
                state = status.state
                if backend.up:
                    state = "busy" if backend.client.queue_remaining else "idle"
                rows.append(
                    [
                        status.name,
                        status.url,
                        state,
                        status.version,
                        status.device,
                        status.vram,
                        str(status.jobs_done),
                        status.last_error or "-",
                    ]
                )
        finally:
            await pool.close()
    header = ["NAME", "URL", "STATE", "VERSION", "DEVICE", "VRAM", "JOBS DONE", "LAST ERROR"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)
    return 1 if any(row[2] == "down" for row in rows) else 0


# keys ----------------------------------------------------------------------------------------
def manage_keys(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`comfycord keys create|list|revoke`."""
    from bot.http.keys import KeyStore

    out = out or sys.stdout
    store = Store(settings.storage.path)
    try:
        keys = KeyStore(store)
        if args.keys_command == "create":
            workflows = [w.strip() for w in (args.workflows or "").split(",") if w.strip()]
            known, _ = load_workflows(settings.workflows.dir)
            unknown = [w for w in workflows if w not in known]
            if unknown:
                raise UserError(f"--workflows: no workflow called {', '.join(unknown)}")
            created = keys.create(
                args.name,
                limit_queued=args.limit_queued,
                workflows=workflows or None,
                role="admin" if args.admin else "member",
            )
            role = "admin key" if args.admin else "key"
            print(f"{role} {args.name} created. It is shown only this once:", file=out)
            print(f"  API key:        {created.secret}", file=out)
            print(f"  webhook secret: {created.webhook_secret}", file=out)
            print("Use it as: Authorization: Bearer <API key>", file=out)
        elif args.keys_command == "list":
            listed = keys.list()
            for key in listed:
                limit = key.limit_queued if key.limit_queued is not None else "default"
                allowed = ",".join(key.workflows) if key.workflows else "all"
                when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(key.created_at))
                print(
                    f"{key.name}  {key.role}  created {when} UTC  queued limit {limit}  "
                    f"workflows {allowed}",
                    file=out,
                )
            if not listed:
                print("no keys; create one with `comfycord keys create NAME`", file=out)
        else:
            keys.revoke(args.name)
            print(f"key {args.name} revoked", file=out)
    finally:
        store.close()
    return 0


# workflows -----------------------------------------------------------------------------------
def list_workflows(settings: Settings, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    workflows, problems = load_workflows(settings.workflows.dir)
    for name in sorted(workflows):
        out.write(describe_workflow(workflows[name]))
    for problem in problems:
        print(f"problem: {problem}", file=out)
    return 1 if problems else 0


def describe_workflow(workflow: Workflow) -> str:
    spec = workflow.spec
    lines = [f"{workflow.name}: {spec.title}" + (f"  (/{spec.command})" if spec.command else "")]
    for param in workflow.params:
        bits: list[str] = [param.type]
        if param.min is not None or param.max is not None:
            bits.append(f"{param.min if param.min is not None else ''}..{param.max or ''}")
        if param.choices:
            bits.append("one of " + ", ".join(str(c) for c in param.choices))
        if param.default is not None and param.default != "":
            bits.append(f"default {param.default}")
        if param.required:
            bits.append("required")
        lines.append(f"  {param.name}: {'; '.join(bits)}")
    return "\n".join(lines) + "\n"


# import --------------------------------------------------------------------------------------
def _read_upload(path: Path, limit: int) -> bytes:
    from bot.workflows.packs import check_size

    try:
        check_size(path.stat().st_size, path.name, limit)
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as exc:
        raise UserError(f"{path}: can't be read: {exc.strerror or exc}") from None


async def import_workflow(
    settings: Settings, args: argparse.Namespace, out: TextIO | None = None
) -> int:
    """Write `NAME.json` + `NAME.yaml` (every param written out) from an exported workflow.

    The workflow is checked against ComfyUI's /object_info when it is reachable; when ComfyUI
    could not run it (unknown node classes...), nothing is written.
    """
    from bot.workflows.packs import (
        MAX_GRAPH_BYTES,
        MAX_YAML_BYTES,
        prepare_import,
        preview_lines,
        save_pack,
    )

    out = out or sys.stdout
    data = _read_upload(args.file, MAX_GRAPH_BYTES)
    yaml_data = _read_upload(args.yaml, MAX_YAML_BYTES) if args.yaml is not None else None
    object_info = None if args.offline else await _fetch_object_info(settings, out)
    folder = Path(settings.workflows.dir)
    folder.mkdir(parents=True, exist_ok=True)
    existing, _ = load_workflows(folder)
    preview = prepare_import(
        data,
        args.file.name,
        folder=folder,
        object_info=object_info,
        yaml_data=yaml_data,
        yaml_name=args.yaml.name if args.yaml is not None else "spec.yaml",
        name=args.name,
        existing=existing,
        node_map=await _fetch_node_map(settings) if object_info is not None else None,
    )
    print(f"{preview.name}: {preview.title}", file=out)
    for line in preview_lines(preview):
        print(f"  {line}", file=out)
    if preview.blocking:
        print(f"nothing written: ComfyUI can't run {preview.name} as it is", file=out)
        return 1
    for path in save_pack(preview, folder, existing):
        print(f"wrote {path}", file=out)
    print("edit the YAML if you like, then run `comfycord check`", file=out)
    return 0


# generate ------------------------------------------------------------------------------------
def parse_assignments(items: Sequence[str], what: str) -> dict[str, str]:
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"{what} '{item}' must look like NAME=VALUE")
        values[name.strip()] = value
    return values


async def generate(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run one job through the engine with a live progress bar; write its images to --out."""
    out = out or sys.stderr
    from bot.admission import Admission, Requester, image_offer
    from bot.engine import Engine, ImageInput
    from bot.policy import Policy

    values: dict[str, Any] = parse_assignments(args.set, "--set")
    if args.prompt is not None:
        values["prompt"] = args.prompt
    images = {}
    for name, file in parse_assignments(args.files, "--file").items():
        path = Path(file)
        if not path.is_file():
            raise UserError(f"--file {name}: no such file: {file}")
        images[name] = ImageInput(path.name, path.read_bytes())

    # log lines go through tqdm, above the bars instead of through them
    with tempfile.TemporaryDirectory(prefix="comfycord-") as tmp, logging_redirect_tqdm():
        # a person at a terminal waits 10 s at most for an unreachable ComfyUI, not a minute
        retry = min(settings.comfyui.submit_retry_seconds, 10.0)
        cli_settings = settings.model_copy(
            update={
                "storage": replace_storage(settings, Path(tmp)),
                "comfyui": settings.comfyui.model_copy(update={"submit_retry_seconds": retry}),
            }
        )
        store = Store(":memory:")
        async with aiohttp.ClientSession() as session:
            engine = Engine(session, cli_settings, store=store)
            bar = ProgressBar(out)
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            ids: set[str] = set()
            finished: dict[str, Any] = {}
            interrupted = False

            def on_update(update: JobUpdate) -> None:
                if update.job.id not in ids:
                    return
                bar.show(update)
                if update.kind == "finished":
                    finished[update.job.id] = update.job
                    if len(finished) == len(ids) and not done.done():
                        done.set_result(None)

            engine.listen(on_update)
            await engine.start()
            try:
                admission = Admission(engine, Policy(store, cli_settings, lambda: engine.workflows))
                # the owner at the terminal: a moderator, exempt from the queue limits
                admitted = admission.admit(
                    Requester("cli", "cli", moderator=True),
                    args.workflow,
                    values,
                    images={k: image_offer(v) for k, v in images.items()},
                    count=args.count,
                )
                with stop_requested() as stop:
                    jobs = await admission.submit(admitted, images)
                    ids.update(j.id for j in jobs)
                    stopping = asyncio.ensure_future(stop.wait())
                    waiters: set[asyncio.Future[Any]] = {done, stopping}
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                    stopping.cancel()
                    if not done.done():
                        # nothing would collect these jobs later: don't leave them on the GPU
                        interrupted = True
                        with contextlib.suppress(UserError, TimeoutError):
                            async with asyncio.timeout(SHUTDOWN_SECONDS / 2):
                                for job_id in sorted(ids):
                                    await engine.cancel(job_id, by="a stop signal")
                        print(
                            f"interrupted: cancelled job(s) {', '.join(sorted(ids))}",
                            file=sys.stderr,
                        )
            finally:
                bar.close()
                await engine.stop()
                store.close()
        if interrupted:
            return 130
        args.out.mkdir(parents=True, exist_ok=True)
        status = 0
        for job in finished.values():
            if job.state is not JobState.DONE:
                print(f"job {job.id} {job.state.value}: {job.error}", file=sys.stderr)
                status = 1
                continue
            for note in job.meta.get("notes", []):
                print(f"note: {note}", file=sys.stderr)
            for output in job.outputs:
                target = args.out / f"{job.workflow}-{job.id}-{output.filename}"
                shutil.copyfile(output.path, target)
                print(target)
        return status


def replace_storage(settings: Settings, folder: Path) -> Any:
    return settings.storage.model_copy(update={"outputs": folder / "outputs"})


class ProgressBar:
    """A tqdm bar per job for its sampler steps; other states are written above the bars.

    Log lines go through tqdm as well (see `generate`), so they never cut a bar in half.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.bars: dict[str, tqdm[Any]] = {}
        self.node: dict[str, str] = {}

    def _bar(self, job_id: str) -> tqdm[Any]:
        existing = self.bars.get(job_id)
        if existing is not None:
            return existing
        bar: tqdm[Any] = tqdm(
            total=1,
            desc=f"[{job_id}]",
            file=self.out,
            position=len(self.bars),
            leave=True,
            bar_format="{desc} |{bar:24}| step {n}/{total} {postfix}",
        )
        self.bars[job_id] = bar
        return bar

    def show(self, update: JobUpdate) -> None:
        job = update.job
        if update.kind == "preview":
            return  # a terminal shows no pictures
        if update.kind == "progress":
            node = f"node {update.node_index}/{update.node_count}"
            if update.node_title:
                node += f" {update.node_title}"
            if not update.steps:
                if self.node.get(job.id) != node:
                    self.node[job.id] = node
                    self.write(f"[{job.id}] {node}")
                return
            bar = self._bar(job.id)
            if bar.total != update.steps or update.step < bar.n:
                bar.reset(total=update.steps)  # the next sampler of the graph
            bar.set_postfix_str(f"· {node}", refresh=False)
            bar.update(update.step - bar.n)
            return
        if update.kind in ("queued", "position"):
            self.write(f"[{job.id}] queued (position {update.position})")
        elif update.kind == "finished":
            shown = self.bars.get(job.id)
            if shown is not None:
                shown.refresh()
            self.write(f"[{job.id}] {job.state.value}" + (f": {job.error}" if job.error else ""))
        elif update.kind == "retrying":
            self.write(f"[{job.id}] ComfyUI is not reachable; retrying")

    def write(self, line: str) -> None:
        tqdm.write(line, file=self.out)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ComfycordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
