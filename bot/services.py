"""Application services: what the command line and the Discord cogs call.

Every action is split in two so the job queue can sit in between:

* **plan** — parse and check the request, find the parent image (by public id in the
  database, or by PNG file alone), resolve seeds and sizes.  Cheap, no GPU; every user
  mistake surfaces here as a :class:`~generation.errors.BrushworkError`.
* **execute** — run the engine on a plan, write each PNG (with its recipe) and then its
  row.  This is what a GPU worker does.

A :class:`GenerationPlan` is a plain value with ``to_dict``/``from_dict`` so it can be
stored with a job and executed after a restart.  The command line (and the bot) submit
plans to the job queue (``bot/jobs.py``), whose runner executes them in batches with the
helpers at the end of this module; :meth:`ImageService.execute` runs one plan directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generation import operations
from generation.datasets import CleanImage, DatasetError, validate_image
from generation.datasets.images import megabytes
from generation.errors import BrushworkError, ImageNotFound, MetadataError, ModelError, RequestError, echo
from generation.grammar import parse, parse_defaults
from generation.metadata import Recipe, describe_unreproduced, png_bytes, read_recipe
from generation.operations import Relation
from generation.request import Note, Request, format_number, picture_aspect, resolve
from generation.version import VERSION
from storage.archive import save_image
from storage.assets import AssetStore
from storage.errors import NotFound
from storage.files import ImageStore
from storage.ids import is_public_id, normalize_public_id
from storage.records import ImageRecord, ImageRelation, NewImage, Scope
from storage.unit_of_work import UnitOfWork
from storage.uploads import UploadRecord, upload_path

if TYPE_CHECKING:  # the engine pulls in torch: only the worker needs it
    from PIL import Image

    from generation.compare import Axis, Comparison
    from generation.engine import Engine, StepInfo
    from generation.engine import GeneratedImage as EngineImage
    from generation.models import ModelRegistry

#: A source that names an image file rather than an image id (its recipe is read from the file).
RECIPE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")

# ---------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class ParentImage:
    """The image an operation starts from: a stored image, or a PNG file with a recipe."""

    request: Request
    public_id: str | None  # None when it came from a file outside the database
    path: Path  # the PNG on disk
    unreproduced: dict[str, str] = field(default_factory=dict)  # a file's pairs Brushwork cannot follow

    def load_pixels(self) -> Image.Image:
        from PIL import Image

        with Image.open(self.path) as img:
            return img.convert("RGB")


@dataclass(frozen=True, slots=True)
class PlannedLora:
    """A ``--lora`` name resolved, when the job was planned, for the scope that asked.

    Two servers may both have an ``ink``; jobs from both may wait in one queue.  So the name
    is turned into a file once, at plan time, by the caller's own resolver (the server's
    LoRAs first, then the operator's folder: ``bot/lora_services.py``), and the runner
    applies exactly that file.  ``name`` is as the request writes it (what the image's
    metadata records, with ``short_hash``); ``sha256`` (of the file) goes into the batch key.
    """

    name: str
    path: str  # absolute path of the .safetensors file
    sha256: str
    short_hash: str  # A1111's "Lora hashes" value (12 hex digits)
    source: str = "folder"  # "server" (a server's or user's own) or "folder" (the operator's)
    lora_id: str | None = None  # the server LoRA's public id

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "short_hash": self.short_hash,
                "source": self.source, "lora_id": self.lora_id}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlannedLora:
        return cls(name=data["name"], path=data["path"], sha256=data["sha256"], short_hash=data["short_hash"],
                   source=data.get("source", "folder"), lora_id=data.get("lora_id"))


@dataclass(frozen=True, slots=True)
class GenerationPlan:
    """A checked, resolved piece of work: the request (``n`` images), its lineage, its notes,
    and the LoRA files its ``--lora`` names stand for (resolved for the caller's scope)."""

    request: Request
    relation: Relation | None = None
    parent_public_id: str | None = None
    init_image_path: str | None = None  # upscale: the parent's PNG is the base pass
    notes: tuple[Note, ...] = ()
    loras: tuple[PlannedLora, ...] = ()

    @property
    def kind(self) -> str:
        return self.relation.value if self.relation else "generate"

    def to_dict(self) -> dict[str, Any]:
        return {
            "request": self.request.to_dict(),
            "relation": self.relation.value if self.relation else None,
            "parent": self.parent_public_id,
            "init_image": self.init_image_path,
            "notes": [{"code": n.code, "params": n.params} for n in self.notes],
            "loras": [lora.to_dict() for lora in self.loras],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationPlan:
        return cls(
            request=Request.from_dict(data["request"]),
            relation=Relation(data["relation"]) if data.get("relation") else None,
            parent_public_id=data.get("parent"),
            init_image_path=data.get("init_image"),
            notes=tuple(Note(n["code"], dict(n.get("params") or {})) for n in data.get("notes", ())),
            loras=tuple(PlannedLora.from_dict(item) for item in data.get("loras") or ()),
        )

    def lora_resolver(self) -> Callable[[str], tuple[str, str]] | None:
        """The engine's per-call resolver for this plan's LoRAs (None: the plan resolved none,
        e.g. one stored before plan-time resolution existed; the engine's own resolver applies)."""
        if not self.loras:
            return None
        files = {lora.name.casefold(): (lora.path, lora.short_hash) for lora in self.loras}

        def resolve(name: str) -> tuple[str, str]:
            return files[name.casefold()]  # KeyError: the engine reports an unknown LoRA

        return resolve


@dataclass(frozen=True, slots=True)
class StartImage:
    """The picture an img2img request (``--image ID``) starts from."""

    public_id: str
    path: Path
    aspect: tuple[int, int]  # the --ar used (``picture_aspect``): its shape within --ar's limits
    size: tuple[int, int]  # its own width and height
    beyond_limits: bool  # wider or taller than --ar allows: drawn at the nearest allowed shape


@dataclass(frozen=True, slots=True)
class PendingUpload:
    """A picture to start from, checked and decoded but not kept yet
    (:meth:`ImageService.prepare_upload`): the request that starts from it is planned with it —
    every check made — and only then is it written (:meth:`ImageService.keep_upload`), so a
    refused request leaves neither a file nor a row."""

    public_id: str  # the id it will have: the upload's own when this picture was sent here before
    filename: str
    image: CleanImage
    known: UploadRecord | None = None  # the same picture, sent here before


@dataclass(frozen=True, slots=True)
class SavedImage:
    record: ImageRecord
    path: Path  # absolute path of the stored PNG
    request: Request


@dataclass(frozen=True, slots=True)
class ImageDetails:
    """Everything ``show`` prints: the recipe, where it is, where it comes from."""

    request: Request
    infotext: str | None
    path: Path | None
    record: ImageRecord | None = None
    lineage: tuple[ImageRecord, ...] = field(default_factory=tuple)
    model_name: str | None = None  # a file's Model as written (request.model: the model here, if any)
    unreproduced: dict[str, str] = field(default_factory=dict)  # a file's pairs Brushwork cannot follow


# ---------------------------------------------------------------------- the service


class ImageService:
    def __init__(
        self,
        *,
        registry: ModelRegistry,
        engine: Callable[[], Engine],
        uow_factory: Callable[[], UnitOfWork],
        store: ImageStore,
        loras: Callable[[Scope], Any] | None = None,
        uploads: AssetStore | None = None,
        upload_max_bytes: int = 20 * 1024 * 1024,
    ) -> None:
        self._registry = registry
        self._engine = engine  # a provider: torch loads on first use, not for `history`
        self._uow = uow_factory
        self._store = store
        self.uploads = uploads  # pictures sent to start from (``--image`` of an upload)
        self.upload_max_bytes = upload_max_bytes
        # scope -> its LoRA resolver (`LoraService.resolver_for`): `resolve(name) -> PlannedLora`
        self._loras_for = loras

    # -- planning ------------------------------------------------------------------
    def plan_generate(
        self,
        text: str | Request,
        scope: Scope,
        *,
        model: str | None = None,
        defaults: Iterable[Request] = (),
        picture: PendingUpload | None = None,
    ) -> GenerationPlan:
        """``picture``: a picture not kept yet that the request's ``--image`` names by its
        future id (:meth:`prepare_upload`); keep it with :meth:`keep_upload` once planned."""
        request = parse(text) if isinstance(text, str) else text
        if model is not None:
            request = replace(request, model=model)
        layers = list(defaults)
        if not layers:
            layers = self._stored_defaults(scope)
        return self._resolve(request, defaults=layers, scope=scope, picture=picture)

    def plan_reroll(self, source: str, scope: Scope, *, n: int | None = None,
                    chaos: int | None = None) -> GenerationPlan:
        """Same settings, a new seed.  ``n``/``chaos``: reroll a whole batch (the bot's 🔁 on a
        result of ``--n 4`` makes four new images from its first one's settings)."""
        parent = self.find_parent(source, scope)
        request = operations.reroll(parent.request)
        if n is not None or chaos is not None:
            request = replace(request, n=n, chaos=chaos)
        return self._resolve(request, relation=Relation.REROLL, parent=parent, scope=scope)

    def plan_tweak(self, source: str, changes: str | Request, scope: Scope) -> GenerationPlan:
        parent = self.find_parent(source, scope)
        overrides = _tweak_changes(changes, parent.request) if isinstance(changes, str) else changes
        return self._resolve(operations.tweak(parent.request, overrides), relation=Relation.TWEAK, parent=parent, scope=scope)

    def plan_remix(self, source: str, text: str, scope: Scope) -> GenerationPlan:
        """Remix (the bot's ✏️): ``text`` is the whole new request, prompt and flags as the user
        edited them; the parent's seed is kept unless the text sets one (a tweak in which what
        the box says is what you get: a flag deleted from it falls back to the defaults)."""
        parent = self.find_parent(source, scope)
        request = parse(text)
        if request.seed is None:
            request = request.with_seed(parent.request.seed)
        return self._resolve(request, defaults=self._stored_defaults(scope), relation=Relation.TWEAK, parent=parent, scope=scope)

    def plan_upscale(self, source: str, scope: Scope, *, mode: str = "subtle") -> GenerationPlan:
        parent = self.find_parent(source, scope)
        request = operations.upscale(parent.request, mode, parent_id=parent.public_id)
        plan = self._resolve(request, relation=Relation.UPSCALE, parent=parent, scope=scope)
        return replace(plan, init_image_path=str(parent.path))

    def plan_vary(self, source: str, scope: Scope, *, mode: str = "subtle") -> GenerationPlan:
        parent = self.find_parent(source, scope)
        return self._resolve(operations.vary(parent.request, mode), relation=Relation.VARY, parent=parent, scope=scope)

    def _resolve(
        self,
        request: Request,
        *,
        defaults: Sequence[Request] = (),
        relation: Relation | None = None,
        parent: ParentImage | None = None,
        scope: Scope | None = None,
        picture: PendingUpload | None = None,
    ) -> GenerationPlan:
        model = request.model or self._merged_model(defaults) or self._registry.default
        self._registry.get(model)  # unknown model: a clear ModelError listing the known ones
        start = self._start_image(request.image, scope, picture) if request.image is not None else None
        shape_notes: list[Note] = []
        if start is not None and request.aspect is None and request.width is None:
            request = replace(request, aspect=start.aspect)  # the picture's shape, at the model's native area
            if start.beyond_limits:
                shape_notes.append(Note("note.image_aspect", {"image": start.public_id,
                                                              "size": "{}x{}".format(*start.size),
                                                              "used": "{}:{}".format(*start.aspect)}))
        resolved, notes = resolve(request, self._registry.profile(model), model=model, defaults=defaults)
        notes = shape_notes + notes + _unreproduced_note(request, parent)
        return GenerationPlan(
            request=resolved,
            relation=relation,
            parent_public_id=parent.public_id if parent else None,
            notes=tuple(notes),
            loras=self._plan_loras(resolved, scope),
            init_image_path=str(start.path) if start is not None else None,
        )

    def _start_image(self, public_id: str, scope: Scope | None, picture: PendingUpload | None = None) -> StartImage:
        """``--image ID``: a stored image the caller may see (another server's is "not found"),
        whose file is there, or the picture about to be kept under that id; with its aspect
        ratio for a request that sets no size."""
        if picture is not None and public_id == picture.public_id and self.uploads is not None:
            relative = picture.known.file_path if picture.known is not None else upload_path(picture.public_id)
            width, height = picture.image.width, picture.image.height
            aspect, beyond = picture_aspect(width, height)
            return StartImage(public_id=public_id, path=self.uploads.absolute(relative), aspect=aspect,
                              size=(width, height), beyond_limits=beyond)
        scope = scope or Scope.local_operator()
        record: Any
        with self._uow() as uow:
            try:
                record = uow.images.get(public_id, scope)
                path = self._store.absolute(record.file_path)
            except NotFound:
                try:
                    record = uow.uploads.get(public_id, scope)  # a picture sent to start from
                except NotFound:
                    raise ImageNotFound("image.start_not_found", id=public_id) from None
                if self.uploads is None:
                    raise ImageNotFound("image.start_not_found", id=public_id) from None
                path = self.uploads.absolute(record.file_path)
        if not path.is_file():
            raise ImageNotFound("image.start_file_missing", id=public_id)
        aspect, beyond = picture_aspect(record.width, record.height)
        return StartImage(public_id=public_id, path=path, aspect=aspect, size=(record.width, record.height),
                          beyond_limits=beyond)

    @staticmethod
    def _merged_model(defaults: Sequence[Request]) -> str | None:
        model = None
        for layer in defaults:
            model = layer.model or model
        return model

    def _plan_loras(self, request: Request, scope: Scope | None) -> tuple[PlannedLora, ...]:
        """Each ``--lora`` name as a file, for the caller's scope (ModelError listing what that
        scope may use).  Without a scope or a LoRA service: only checked against the engine's
        folder, and resolved again when the job runs (the behaviour before server LoRAs)."""
        if not request.loras:
            return ()
        if scope is None or self._loras_for is None:
            self._check_loras(request)
            return ()
        from generation.engine.loras import ResolvedLora  # torch: the engine is near when LoRAs are asked for

        resolver = self._loras_for(scope)
        planned = tuple(resolver.resolve(ref.name) for ref in request.loras)
        self._check_lora_files([ResolvedLora(name=p.name, path=Path(p.path), short_hash=p.short_hash)
                                for p in planned], request)
        return planned

    def _check_loras(self, request: Request) -> None:
        if request.loras:
            from generation.engine.loras import resolve_lora

            resolver = self._lora_resolver()
            files = []
            for ref in request.loras:
                if resolver is None:  # an engine without a LoRA folder has none to offer
                    raise ModelError("model.no_loras", name=ref.name)
                files.append(resolve_lora(resolver, ref.name))  # ModelError listing what exists
            self._check_lora_files(files, request)

    def _check_lora_files(self, files: list[Any], request: Request) -> None:
        """A LoRA file that cannot be applied (damaged, NaN weights, keys or shapes of another
        model) is refused here, with one line, instead of failing the job (``Engine.check_loras``:
        once per file content)."""
        if files and request.model is not None:
            self._engine().check_loras(files, request.model)

    def _lora_resolver(self):
        return self._engine().lora_resolver

    def _stored_defaults(self, scope: Scope) -> list[Request]:
        """Server defaults, then the user's: each a flag string saved with /settings."""
        layers: list[Request] = []
        with self._uow() as uow:
            texts = []
            if scope.guild_id is not None:
                texts.append(uow.settings.get_guild(scope.guild_id).defaults)
            texts.append(uow.settings.get_user(scope.user_id).defaults)
        for text in texts:
            if text and text.strip():
                layers.append(parse_defaults(text))
        return layers

    # -- pictures to start from (img2img uploads) -------------------------------------------
    def check_upload(self, filename: str, size: int) -> None:
        """Before downloading a picture to start from: its announced size."""
        if size > self.upload_max_bytes:
            raise DatasetError("dataset.image_too_large", name=filename[:100], size=megabytes(size),
                               limit=megabytes(self.upload_max_bytes))

    def add_upload(self, scope: Scope, filename: str, data: bytes) -> UploadRecord:
        """Keep a picture sent to start an image from: checked before it is trusted (size,
        format, pixels, decompression bombs), re-encoded as PNG, written before its row; the
        same picture sent again in the same place is the same upload.  ``--image <its id>``
        then starts from it, where the caller's images are visible.  (A request that comes
        with the picture: :meth:`prepare_upload`, plan, then :meth:`keep_upload`.)"""
        return self.keep_upload(scope, self.prepare_upload(scope, filename, data))

    def prepare_upload(self, scope: Scope, filename: str, data: bytes) -> PendingUpload:
        """A picture to start from checked (size, format, pixels, decompression bombs) and
        re-encoded, with the id it will be kept under; nothing is written."""
        if self.uploads is None:
            raise RuntimeError("this ImageService has no uploads folder")
        self.check_upload(filename, len(data))
        clean = validate_image(data, max_bytes=self.upload_max_bytes, name=filename)
        with self._uow() as uow:
            known = uow.uploads.find(scope, clean.sha256)
            public_id = uow.uploads.free_id() if known is None else known.public_id
        return PendingUpload(public_id=public_id, filename=filename, image=clean, known=known)

    def keep_upload(self, scope: Scope, picture: PendingUpload) -> UploadRecord:
        """Write a prepared picture (the file first, then its row), or give the upload it
        already is (its file written again if it was purged)."""
        if self.uploads is None:
            raise RuntimeError("this ImageService has no uploads folder")
        known = picture.known
        if known is not None:
            if not self.uploads.exists(known.file_path):  # its file went (purged): the same bytes again
                self.uploads.write(known.file_path, picture.image.png)
            return known
        clean = picture.image
        relative = upload_path(picture.public_id)
        stored = self.uploads.write(relative, clean.png)  # the file first, then the row that points to it
        try:
            with self._uow() as uow:
                record = uow.uploads.add(scope, public_id=picture.public_id, sha256=clean.sha256,
                                         width=clean.width, height=clean.height, size=stored.size,
                                         file_path=relative, original_name=picture.filename)
                uow.commit()
        except BaseException:
            self.uploads.delete(relative)
            raise
        return record

    # -- comparisons (/compare, `brushwork compare`) -------------------------------------
    def plan_compare(
        self,
        text: str | Request,
        vary: str,
        values: str,
        scope: Scope,
        *,
        vary2: str | None = None,
        values2: str | None = None,
        model: str | None = None,
        defaults: Iterable[Request] = (),
        guard: Callable[[Request], Request] | None = None,
    ) -> ComparePlan:
        """An X/Y comparison as one job: the prompt resolved once (defaults, model, ONE seed),
        then one single-image plan per cell with the axis values applied, row by row.

        ``guard`` (a server's rules: allowed models, safety policy) is applied to the resolved
        base request, so every cell inherits what it adds (a forced negative prompt).  Cells
        that need a variation seed all share one, drawn here.
        """
        from generation.compare import build, parse_axis
        from generation.request import draw_seed

        if (vary2 is None) != (values2 is None) or (vary2 is not None and not vary2.strip()):
            raise RequestError("compare_cmd.second_axis_incomplete")
        x = parse_axis(vary, values)
        y = parse_axis(vary2, values2) if vary2 is not None and values2 is not None else None
        request = parse(text) if isinstance(text, str) else text
        if model is not None:
            request = replace(request, model=model)
        if (request.n or 1) > 1 or request.chaos is not None:
            raise RequestError("compare_cmd.one_image_per_cell")
        layers = list(defaults) or self._stored_defaults(scope)
        base = self._resolve(request, defaults=layers, scope=scope)
        resolved = base.request
        if guard is not None:
            resolved = guard(resolved)
        comparison = build(resolved, x, y)
        shared_vary_seed: int | None = None
        cells: list[GenerationPlan] = []
        notes: list[Note] = list(base.notes)
        for cell in comparison.requests:
            if cell.vary_strength is not None and cell.vary_seed is None:
                shared_vary_seed = shared_vary_seed if shared_vary_seed is not None else draw_seed()
                cell = replace(cell, vary_seed=shared_vary_seed)
            plan = self._resolve(cell, scope=scope)
            notes.extend(note for note in plan.notes if note not in notes)
            cells.append(replace(plan, notes=()))
        return ComparePlan(cells=tuple(cells), x=x, y=y, notes=tuple(notes))

    # -- finding images ----------------------------------------------------------------
    def find_parent(self, source: str, scope: Scope) -> ParentImage:
        """An image by public id (checked against the scope) or by image file path (PNG, or a JPEG/WebP with A1111 EXIF)."""
        text = source.strip()
        path = Path(text).expanduser()
        if text.lower().endswith(RECIPE_SUFFIXES) or _is_file(path):
            if not _is_file(path):
                raise ImageNotFound("image.file_missing", path=echo(text, 200))
            recipe = self.recipe(path)
            request = _single(recipe.request)
            return ParentImage(request=request, public_id=None, path=path.resolve(),
                               unreproduced=dict(recipe.unreproduced))
        ident = normalize_public_id(text)
        if not is_public_id(ident):
            raise ImageNotFound("image.bad_reference", value=echo(text))
        record = self._get_record(ident, scope)
        return ParentImage(
            request=Request.from_dict(record.request),
            public_id=record.public_id,
            path=self._store.absolute(record.file_path),
        )

    def recipe(self, source: bytes | Path) -> Recipe:
        """The recipe in an image file (or its bytes), its model a registered one where it can
        be: an A1111 ``Model`` name this server does not have, but whose ``Model hash`` is one
        of its models' hashes, means that model (found without downloading anything)."""
        recipe = read_recipe(source)
        model = recipe.request.model
        if recipe.origin != "a1111" or not recipe.model_hash or (model is not None and model in self._registry):
            return recipe
        found = self._engine().model_for_hash(recipe.model_hash)
        return recipe.with_model(found) if found is not None else recipe

    def _get_record(self, public_id: str, scope: Scope) -> ImageRecord:
        try:
            with self._uow() as uow:
                return uow.images.get(public_id, scope)
        except NotFound:
            raise ImageNotFound("image.not_found", id=public_id) from None

    def show(self, source: str, scope: Scope) -> ImageDetails:
        text = source.strip()
        path = Path(text).expanduser()
        if text.lower().endswith(RECIPE_SUFFIXES) or _is_file(path):
            if not _is_file(path):
                raise ImageNotFound("image.file_missing", path=echo(text, 200))
            recipe = self.recipe(path)
            return ImageDetails(request=recipe.request, infotext=recipe.infotext, path=path.resolve(),
                                model_name=recipe.model_name, unreproduced=dict(recipe.unreproduced))
        ident = normalize_public_id(text)
        if not is_public_id(ident):
            raise ImageNotFound("image.bad_reference", value=echo(text))
        try:
            with self._uow() as uow:
                record = uow.images.get(ident, scope)
                lineage = tuple(uow.images.lineage(ident, scope))
        except NotFound:
            raise ImageNotFound("image.not_found", id=ident) from None
        path = self._store.absolute(record.file_path)
        infotext = None
        try:
            infotext = read_recipe(path).infotext
        except (MetadataError, OSError):
            infotext = None  # the row still has the full request
        return ImageDetails(request=Request.from_dict(record.request), infotext=infotext, path=path,
                            record=record, lineage=lineage)

    def history(self, scope: Scope, *, limit: int = 20, before: str | None = None,
                user_id: int | None = None) -> list[ImageRecord]:
        with self._uow() as uow:
            return uow.images.history(scope, user_id=user_id, limit=limit, before=before)

    # -- execution -----------------------------------------------------------------
    def execute(
        self,
        plan: GenerationPlan,
        scope: Scope,
        *,
        on_step: Callable[[StepInfo], None] | None = None,
        should_abort: Callable[[], bool] | None = None,
        channel_id: int | None = None,
        job_public_id: str | None = None,
    ) -> list[SavedImage]:
        engine = self._engine()
        requests = plan.request.images()
        init_images = None
        if plan.init_image_path is not None:
            base = _load_rgb(Path(plan.init_image_path))
            init_images = [base] * len(requests)
        generated = engine.generate(requests, init_images=init_images, on_step=on_step,
                                    should_abort=should_abort, lora_resolver=plan.lora_resolver())
        saved: list[SavedImage] = []
        for index, image in enumerate(generated):
            data = encode_png(image)
            new = new_image_row(plan, image, index, owner_id=scope.user_id, guild_id=scope.guild_id,
                                channel_id=channel_id, job_public_id=job_public_id)
            record = save_image(self._uow, self._store, data, new)
            saved.append(SavedImage(record=record, path=self._store.absolute(record.file_path),
                                    request=image.request))
        return saved


# ---------------------------------------------------------------------- shared with the queue's runner


def encode_png(image: EngineImage) -> bytes:
    """The PNG of a generated image, with its recipe (A1111 infotext and the Brushwork chunk)."""
    return png_bytes(image.image, request=image.request, model_hash=image.model_hash,
                     lora_hashes=image.lora_hashes, version=VERSION)


def new_image_row(plan: GenerationPlan, image: EngineImage, index: int, *, owner_id: int, guild_id: int | None,
                  channel_id: int | None = None, job_public_id: str | None = None) -> NewImage:
    """The row describing image ``index`` of a plan's result (its own single-image request)."""
    relation = ImageRelation(plan.relation.value) if plan.relation and plan.parent_public_id else None
    request = image.request
    seed, steps, cfg, sampler, model = request.seed, request.steps, request.cfg, request.sampler, request.model
    if seed is None or steps is None or cfg is None or sampler is None or model is None:
        raise ValueError("new_image_row: the engine made an image from an unresolved request")
    return NewImage(
        owner_id=owner_id,
        guild_id=guild_id,
        channel_id=channel_id,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        seed=seed,
        steps=steps,
        cfg=cfg,
        sampler=sampler,
        width=image.image.width,
        height=image.image.height,
        model=model,
        model_hash=image.model_hash,
        lora_hashes=dict(image.lora_hashes),
        request=image.request.to_dict(),
        canonical=image.request.render(),
        batch_index=index,
        parent_public_id=plan.parent_public_id if relation else None,
        relation=relation,
        job_public_id=job_public_id,
    )


def _unreproduced_note(request: Request, parent: ParentImage | None) -> list[Note]:
    """What a parent read from a file had that this image will not follow ("not reproduced:
    Sampler: Restart"), less what the request now sets itself (``--sampler`` chosen in a tweak)."""
    if parent is None or not parent.unreproduced:
        return []
    fields = dict(parent.unreproduced)
    if request.sampler is not None and parent.request.sampler is None:
        fields.pop("Sampler", None)
        fields.pop("Schedule type", None)
    return [Note("note.not_reproduced", {"fields": describe_unreproduced(fields)})] if fields else []


def _single(request: Request) -> Request:
    """A recipe read from a PNG describes one image; make sure it is used as one."""
    return replace(request, n=None, chaos=None) if request.n or request.chaos is not None else request


def _tweak_changes(text: str, parent: Request) -> Request:
    """A tweak's flags.  ``--strength``/``--hires-steps`` alone tune the parent's own refine pass
    (its hires fix, or the pass over its ``--image`` picture): the parser, which does not know
    the parent, would otherwise ask for ``--hires``."""
    try:
        return parse(text, allow_empty_prompt=True)
    except RequestError as error:
        if error.code != "grammar.needs_hires" or parent.hires is None:
            raise
    anchor = [f"--image {parent.image}"] if parent.image is not None else []
    if parent.image is None or parent.hires.scale != 1:
        anchor.append(f"--hires {format_number(parent.hires.scale)}")
    return parse(f"{text} {' '.join(anchor)}", allow_empty_prompt=True)


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for a name the file system cannot even look up (a 300-character
    "id" is too long to be a file name: it is then judged as an id)."""
    try:
        return path.is_file()
    except (OSError, ValueError):  # ENAMETOOLONG, a NUL byte in the name
        return False


def _load_rgb(path: Path):
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as exc:
        raise BrushworkError("image.unreadable", path=str(path), reason=str(exc)) from None


# ---------------------------------------------------------------------- comparisons


@dataclass(frozen=True, slots=True)
class ComparePlan:
    """An X/Y comparison, planned: one resolved single-image plan per cell, row by row (the
    ``y`` values), column by column (the ``x`` values), all with the same seed.

    Queued as ONE job (``bot.jobs.compare_submission``); the runner groups the cells that can
    share a pipeline call and makes the others in further calls.  Each cell is stored as an
    ordinary image (its own recipe, in ``/history``, usable with ``/info``, reroll, upscale…);
    the labelled grid is derived from the cells by :func:`compare_grid` and is never stored
    as an image of its own (it has no single recipe).
    """

    cells: tuple[GenerationPlan, ...]
    x: Axis
    y: Axis | None = None
    notes: tuple[Note, ...] = ()

    kind = "compare"

    @property
    def base(self) -> Request:
        """The first cell's request: the prompt, model, seed and size every cell shares."""
        return self.cells[0].request

    @property
    def columns(self) -> int:
        return len(self.x.values)

    def labels(self) -> list[tuple[str | None, str]]:
        """Each cell's ``(y value, x value)``, in cell order."""
        rows = self.y.values if self.y is not None else (None,)
        return [(y_value, x_value) for y_value in rows for x_value in self.x.values]

    def comparison(self) -> Comparison:
        from generation.compare import Comparison

        requests = [cell.request for cell in self.cells]
        rows = tuple(tuple(requests[i:i + self.columns]) for i in range(0, len(requests), self.columns))
        return Comparison(base=self.base, x=self.x, y=self.y, cells=rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cells": [cell.to_dict() for cell in self.cells],
            "x": {"flag": self.x.flag, "values": list(self.x.values)},
            "y": {"flag": self.y.flag, "values": list(self.y.values)} if self.y is not None else None,
            "notes": [{"code": n.code, "params": n.params} for n in self.notes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComparePlan:
        from generation.compare import Axis

        def axis(value: dict[str, Any] | None) -> Axis | None:
            return Axis(flag=value["flag"], values=tuple(value["values"])) if value else None

        x = axis(data["x"])
        assert x is not None
        return cls(cells=tuple(GenerationPlan.from_dict(dict(cell)) for cell in data["cells"]), x=x,
                   y=axis(data.get("y")),
                   notes=tuple(Note(n["code"], dict(n.get("params") or {})) for n in data.get("notes", ())))


def compare_grid(plan: ComparePlan, paths: Sequence[Path | None], *, title: str | None = None) -> bytes:
    """The labelled grid PNG of a comparison's cells (their stored files, in cell order); a cell
    without a file (``None``: withheld by a server's safety policy) is drawn as a grey tile."""
    import io

    from PIL import Image

    from generation.compare import grid

    if len(paths) != len(plan.cells):
        raise ValueError(f"a grid of {len(plan.cells)} cells needs as many images, got {len(paths)}")
    loaded = [_load_rgb(Path(path)) if path is not None else None for path in paths]
    size = next((image.size for image in loaded if image is not None), None) or plan.base.output_size or (64, 64)
    images = [image if image is not None else Image.new("RGB", size, (128, 128, 128)) for image in loaded]
    sheet = grid(plan.comparison(), images, title=title if title is not None else plan.base.prompt)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


__all__ = [
    "ComparePlan",
    "compare_grid",
    "GenerationPlan",
    "PlannedLora",
    "encode_png",
    "new_image_row",
    "ImageDetails",
    "ImageService",
    "ParentImage",
    "PendingUpload",
    "SavedImage",
]
