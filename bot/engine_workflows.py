"""The engine's workflows: loading them, importing a pack, exporting and removing one, and
telling watchers when they changed.

`WorkflowPacks` is a part of `bot.engine.Engine` (its methods are the engine's:
`engine.prepare_import(...)`, `engine.save_import(preview)`, `engine.watch_workflows(...)`); the
engine gives it its settings and its pool of ComfyUI backends, whose node lists the imports are
checked against. The files themselves are read and written by `bot.workflows.packs`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from bot.comfy.pool import Pool
from bot.errors import ComfyError, NotFound, WorkflowError
from bot.settings import Settings
from bot.workflows import Workflow, load_workflows, packs
from bot.workflows.nodemap import NodeMap
from bot.workflows.packs import ImportPreview

log = logging.getLogger(__name__)

__all__ = ["WorkflowPacks"]


class WorkflowPacks:
    """The workflows part of the engine (mixed into `Engine`, which sets `settings` and `pool`
    and calls `_init_workflows`)."""

    settings: Settings
    pool: Pool
    workflows: dict[str, Workflow]
    workflow_problems: list[str]
    _workflow_watchers: list[Callable[[], None]]

    def _init_workflows(self, workflows: Mapping[str, Workflow] | None) -> None:
        self.workflows = dict(workflows or {})
        self.workflow_problems = []
        self._workflow_watchers = []

    def reload_workflows(self) -> None:
        """Load the workflows folder again; what does not load is in `workflow_problems` (and
        logged)."""
        workflows, problems = load_workflows(
            self.settings.workflows.dir, self.pool.object_info(), check=False
        )
        self.workflows = dict(workflows)
        self.workflow_problems = [str(p) for p in problems]
        for problem in self.workflow_problems:
            log.warning("%s", problem)

    def watch_workflows(self, watcher: Callable[[], None]) -> Callable[[], None]:
        """Call `watcher` after a pack is saved or removed, whichever way in did it (Discord,
        the HTTP API, the console), so each way out can follow: Discord's commands, the OpenAPI
        document. Returns a function that stops watching."""
        self._workflow_watchers.append(watcher)
        return lambda: (
            self._workflow_watchers.remove(watcher) if watcher in self._workflow_watchers else None
        )

    def _workflows_changed(self) -> None:
        for watcher in list(self._workflow_watchers):
            try:
                watcher()
            except Exception:
                log.exception("workflow watcher failed")

    def workflow(self, name: str) -> Workflow:
        """The workflow called `name`.

        Raises:
            NotFound: no such workflow (the message lists the ones there are).
        """
        try:
            return self.workflows[name]
        except KeyError:
            known = ", ".join(sorted(self.workflows)) or "none"
            raise NotFound(f"There is no workflow called `{name}`. Available: {known}") from None

    async def prepare_import(
        self,
        data: bytes,
        file_name: str,
        *,
        yaml_data: bytes | None = None,
        yaml_name: str = "spec.yaml",
        name: str | None = None,
    ) -> ImportPreview:
        """Read, convert and check an uploaded workflow against ComfyUI; writes nothing.

        ComfyUI's node list is asked for afresh (the last one known is used when ComfyUI is
        unreachable; with none, an API-format graph is previewed unchecked). Missing node
        classes are named by their pack from the map a ComfyUI with ComfyUI-Manager serves,
        else from the bundled copy of it.

        Raises:
            WorkflowError: a bad or taken name, or files that can't be loaded (every problem
                listed).
        """
        live = None
        for backend in self.pool:
            try:
                await backend.client.object_info(refresh=True)
            except ComfyError as exc:
                log.warning("import checked without a fresh node list of %s: %s", backend.name, exc)
                continue
            live = live or await backend.client.node_mappings()
        return packs.prepare_import(
            data,
            file_name,
            folder=Path(self.settings.workflows.dir),
            object_info=self.pool.object_info(),
            yaml_data=yaml_data,
            yaml_name=yaml_name,
            name=name,
            existing=self.workflows,
            comfyui_version=next((b.health.version for b in self.pool if b.up and b.health), None),
            node_map=NodeMap.for_server(live),
        )

    def save_import(self, preview: ImportPreview) -> Workflow:
        """Save a previewed import as a pack and reload the workflows.

        Raises:
            WorkflowError: ComfyUI can't run it, the name was taken meanwhile, or the files
                can't be written.
        """
        if preview.blocking:
            raise WorkflowError(
                f"`{preview.name}` can't be saved: "
                + "; ".join(p.message for p in preview.blocking[:5])
            )
        packs.save_pack(preview, Path(self.settings.workflows.dir), self.workflows)
        self.reload_workflows()
        self._workflows_changed()
        if preview.name not in self.workflows:
            found = [p for p in self.workflow_problems if preview.name in p]
            raise WorkflowError(
                f"`{preview.name}` was saved but does not load: " + "; ".join(found[:5])
            )
        return self.workflows[preview.name]

    def export_pack(self, name: str) -> list[tuple[str, bytes]]:
        """A pack's files, `(file name, bytes)`: its graph and its YAML.

        Raises:
            NotFound: no such workflow, or its graph is gone.
        """
        return packs.export_pack(self.workflow(name), Path(self.settings.workflows.dir))

    def delete_workflow(self, name: str) -> list[str]:
        """Remove a pack's files (its YAML, and its graph unless another pack uses it) and
        reload the workflows. Jobs already queued keep the graph they were given.

        Returns:
            The names of the files removed.

        Raises:
            NotFound: no such workflow.
            WorkflowError: a file can't be removed.
        """
        workflow = self.workflow(name)
        folder = Path(self.settings.workflows.dir).resolve()
        graph = workflow.spec.graph_file(name)
        shared = any(
            w.spec.graph_file(other) == graph
            for other, w in self.workflows.items()
            if other != name
        )
        paths = [] if shared else [folder / graph]
        paths += [p for p in packs.pack_files(folder, name)[1:] if p.is_file()]
        removed = []
        for path in paths:
            if path.resolve().parent != folder:
                continue  # never outside the workflows folder
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise WorkflowError(
                    f"could not remove {path.name} of `{name}`: {exc.strerror or exc}"
                ) from None
            removed.append(path.name)
        log.info("removed the pack %s (%s)", name, ", ".join(removed))
        self.reload_workflows()
        self._workflows_changed()
        return removed
