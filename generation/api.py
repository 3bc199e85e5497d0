"""The Python API: one call from a prompt to images with their recipe.

    from generation import generate

    images = generate("a cat on a motorbike --ar 3:2 --seed 42", num_inference_steps=30)
    images[0].save("cat.png")          # PNG with the A1111 infotext and the Brushwork recipe
    print(images[0].seed, images[0].infotext)

The prompt may carry inline flags (the same language as ``/imagine`` and ``brushwork
generate``); keyword arguments override them.  diffusers' names are accepted
(``num_inference_steps``, ``guidance_scale``, ``negative_prompt``,
``num_images_per_prompt``, ``width``/``height``) as well as Brushwork's (``steps``,
``cfg``, ``n``…).  Every image's request reproduces it: ``generate(img.request.render())``.

img2img: ``generate("a watercolor", image="photo.png", strength=0.6)`` (a path or a PIL image,
as in diffusers' img2img), or by the id a recipe names: ``generate("… --image k3x9fq2a
--strength 0.6", image_files={"k3x9fq2a": "k3x9fq2a.png"})``.  A picture given directly gets an
id made from its pixels, so its recipe names it the same way every time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generation.errors import RequestError, echo
from generation.grammar import parse
from generation.request import (
    DEFAULT_HIRES_SCALE,
    IMAGE_SCALE,
    Hires,
    LoraRef,
    Note,
    Request,
    picture_aspect,
    resolve,
)
from generation.version import VERSION

if TYPE_CHECKING:
    from PIL import Image

    from generation.engine import Engine, StepInfo

IMAGE_ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"  # storage's public-id letters (``--image`` ids)
_default_engine: Engine | None = None
_default_lock = threading.Lock()


def default_engine() -> Engine:
    """A process-wide engine with the built-in model registry (created on first use)."""
    global _default_engine
    with _default_lock:
        if _default_engine is None:
            from generation.engine import Engine
            from generation.models import ModelRegistry

            _default_engine = Engine(ModelRegistry.with_builtins({}, default="tiny"))
        return _default_engine


@dataclass(frozen=True)
class GeneratedImage:
    """One image and the recipe that reproduces it."""

    image: Image.Image
    request: Request  # resolved, single image: seed, size, sampler… all set
    model_hash: str
    lora_hashes: Mapping[str, str]
    notes: tuple[Note, ...] = ()

    @property
    def seed(self) -> int:
        return self.request.seed  # type: ignore[return-value]

    @property
    def infotext(self) -> str:
        """AUTOMATIC1111's ``parameters`` text for this image."""
        from generation.metadata import infotext

        return infotext(self.request, model_hash=self.model_hash, lora_hashes=self.lora_hashes, version=VERSION)

    def png_bytes(self) -> bytes:
        from generation.metadata import png_bytes

        return png_bytes(self.image, request=self.request, model_hash=self.model_hash,
                         lora_hashes=self.lora_hashes, version=VERSION)

    def save(self, path: str | PathLike[str]) -> Path:
        """Write a PNG carrying the recipe (A1111 infotext + Brushwork's JSON)."""
        target = Path(path)
        target.write_bytes(self.png_bytes())
        return target


# keyword → (Request field, how to convert)
_ALIASES = {
    "num_inference_steps": "steps",
    "guidance_scale": "cfg",
    "cfg_scale": "cfg",
    "num_images_per_prompt": "n",
    "num_images": "n",
    "negative": "negative_prompt",
    "aspect_ratio": "aspect",
    "ar": "aspect",
    "variation_seed": "vary_seed",
    "variation_strength": "vary_strength",
    "tiling": "tile",
}


def build_request(prompt: str | Request, **kwargs: Any) -> Request:
    """The request for ``generate``: inline flags from ``prompt``, overridden by keywords
    (``image`` here is an image id; :func:`generate` also takes a picture)."""
    if not isinstance(prompt, (str, Request)):
        raise RequestError("api.bad_prompt", type=type(prompt).__name__)
    base = parse(prompt) if isinstance(prompt, str) else prompt
    values: dict[str, Any] = {}
    for key, value in kwargs.items():
        if value is None:
            continue
        field = _ALIASES.get(key, key)
        if field in values and values[field] != value:
            raise RequestError("api.conflicting_arguments", first=key, field=field)
        values[field] = value
    hires_steps = values.pop("hires_steps", None)
    strength = values.pop("strength", None)
    if "hires" in values or hires_steps is not None or strength is not None:
        img2img = values.get("image") is not None or base.image is not None
        values["hires"] = _hires(values.get("hires", base.hires), hires_steps, strength,
                                 default_scale=IMAGE_SCALE if img2img else DEFAULT_HIRES_SCALE)
    if "aspect" in values:
        values["aspect"] = _aspect(values["aspect"])
    if "loras" in values:
        values["loras"] = _loras(values["loras"])
    if "size" in values:
        size = values.pop("size")
        values["width"], values["height"] = _size(size)
    known = set(Request.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        from difflib import get_close_matches

        name = unknown[0]
        close = get_close_matches(name, sorted(known | set(_ALIASES)), n=1)
        raise RequestError("api.unknown_argument", name=name, suggestion=close[0] if close else "")
    overrides = Request(prompt="", **values)
    if overrides.aspect is not None or overrides.width is not None:
        base = replace(base, aspect=None, width=None, height=None)
    return base.merged(overrides)


def _hires(value: Any, steps: int | None, strength: float | None, *,
           default_scale: float = DEFAULT_HIRES_SCALE) -> Hires | None:
    if value is False:
        return None
    if isinstance(value, Hires):
        hires = value
    elif value is None:
        hires = Hires(scale=default_scale)  # --strength alone: the refine pass of --image keeps the size
    elif value is True:
        hires = Hires()
    elif isinstance(value, (int, float)):
        hires = Hires(scale=float(value))
    else:
        raise RequestError("request.bad_hires")
    return Hires(scale=hires.scale, steps=steps if steps is not None else hires.steps,
                 strength=strength if strength is not None else hires.strength)


def _aspect(value: Any) -> tuple[int, int]:
    if isinstance(value, str):
        from generation.grammar import parse as _parse

        return _parse(f"x --ar {value}").aspect  # type: ignore[return-value]
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return (value[0], value[1])
    raise RequestError("request.bad_aspect", value=value)


def _size(value: Any) -> tuple[int, int]:
    if isinstance(value, str):
        request = parse(f"x --size {value}")
        return request.width, request.height  # type: ignore[return-value]
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return (value[0], value[1])
    raise RequestError("request.bad_size", value=value)


def _loras(value: Any) -> tuple[LoraRef, ...]:
    if isinstance(value, Mapping):  # {"ink": 0.8}; a weight written as text reads as --lora ink:TEXT does
        return tuple(_lora_ref(name, weight) for name, weight in value.items())
    if isinstance(value, str):
        value = [value]
    refs = []
    for item in value if isinstance(value, Iterable) else [value]:
        if isinstance(item, LoraRef):
            refs.append(item)
        elif isinstance(item, str):
            refs.extend(parse(f"x --lora {item}").loras or ())
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            refs.append(_lora_ref(item[0], item[1]))
        else:
            raise RequestError("request.bad_lora", value=item)
    return tuple(refs)


def _lora_ref(name: Any, weight: Any) -> LoraRef:
    if isinstance(weight, str):
        refs = parse(f"x --lora {name}:{weight}").loras or ()
        if len(refs) == 1:
            return refs[0]
        raise RequestError("request.bad_lora", value=f"{name}:{weight}")
    return LoraRef(str(name), weight)  # checks the name and that the weight is a number in range


def generate(
    prompt: str | Request,
    *,
    engine: Engine | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    lora_files: Mapping[str, str | PathLike[str]] | str | PathLike[str] | None = None,
    image_files: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> list[GeneratedImage]:
    """Generate images; see the module docstring.  Raises ``RequestError`` for bad input.

    ``lora_files`` says where ``--lora`` names are: ``{"inkwash": "inkwash.safetensors"}``, or a
    folder of ``.safetensors`` files (by file name); default: the engine's own LoRA folder.
    ``image_files`` says where ``--image`` ids are: ``{"k3x9fq2a": "k3x9fq2a.png"}`` (paths or PIL
    images); ``image=`` may also be the picture itself.
    """
    if not isinstance(prompt, (str, Request)):  # before any work (the default engine loads a model)
        raise RequestError("api.bad_prompt", type=type(prompt).__name__)
    engine = engine or default_engine()
    files = dict(image_files or {})
    picture = kwargs.get("image")
    if isinstance(picture, str) and not _looks_like_id(picture):  # a path, as in diffusers' examples
        if not _is_file(Path(picture).expanduser()):
            raise RequestError("api.image_not_a_file", value=echo(picture, 80))
        picture = Path(picture).expanduser()
    if picture is not None and not isinstance(picture, str):  # diffusers' img2img: the picture itself
        kwargs["image"] = _picture_id(_load_picture(picture, "image"))
        files[kwargs["image"]] = picture
    request = build_request(prompt, **kwargs)
    start = None
    if request.image is not None:
        if request.image not in files:
            raise RequestError("api.image_file_missing", id=request.image)
        start = _load_picture(files[request.image], request.image)
        if request.aspect is None and request.width is None:
            request = replace(request, aspect=picture_aspect(*start.size)[0])  # keep the picture's shape
    model = request.model or engine.registry.default
    engine.registry.get(model)
    resolved, notes = resolve(request, engine.registry.profile(model), model=model)
    images = resolved.images()
    results = engine.generate(images, init_images=[start] * len(images) if start is not None else None,
                              on_step=on_step, lora_resolver=_lora_files(lora_files))
    return [
        GeneratedImage(image=r.image, request=r.request, model_hash=r.model_hash,
                       lora_hashes=dict(r.lora_hashes), notes=tuple(notes))
        for r in results
    ]


def python_code(request: Request, *, save_as: str | None = None) -> str:
    """The Python that reproduces ``request`` with this API (shown by ``brushwork show`` and ℹ️)."""
    call = f"generate({request.render()!r}"
    if request.image is not None:  # the picture it started from, saved beside it under its id
        call += f", image_files={{{request.image!r}: {request.image + '.png'!r}}}"
    lines = ["from generation import generate", "", f"images = {call})"]
    if save_as is not None:
        lines.append(f"images[0].save({save_as!r})")
    return "\n".join(lines)


def _looks_like_id(text: str) -> bool:
    """An ``--image`` id (8 of storage's id letters), as opposed to a file path."""
    ref = text.strip().lower()
    return len(ref) == 8 and all(ch in IMAGE_ID_ALPHABET for ch in ref)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def _load_picture(source: Any, name: str) -> Image.Image:
    """A start picture from a PIL image or a file path, as RGB, under the rules the command
    line and the bot apply to pictures (one frame; sides and pixels within the limits)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        return _checked_picture(source, name)
    if isinstance(source, (str, PathLike)):
        label = Path(source).name or name
        try:
            with Image.open(source) as opened:
                return _checked_picture(opened, label)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
            raise RequestError("api.image_unreadable", name=name, path=echo(source, 200),
                               reason=str(exc)[:200]) from None
    raise RequestError("api.image_unreadable", name=name, path=type(source).__name__, reason="not a picture")


def _checked_picture(picture: Image.Image, name: str) -> Image.Image:
    from generation.datasets.errors import DatasetError
    from generation.datasets.images import check_dimensions

    check_dimensions(name, picture.width, picture.height)
    frames = getattr(picture, "n_frames", 1)
    if frames > 1:  # an animated GIF, PNG or WebP: which frame would be meant?
        raise DatasetError("dataset.image_animated", name=name, frames=frames)
    return picture.convert("RGB")


def _picture_id(picture: Image.Image) -> str:
    """An ``--image`` id made from a picture's pixels: the same picture, the same id."""
    import hashlib

    digest = hashlib.sha256(f"{picture.size}".encode() + picture.tobytes()).digest()
    return "".join(IMAGE_ID_ALPHABET[byte % len(IMAGE_ID_ALPHABET)] for byte in digest[:8])


def _lora_files(files: Mapping[str, str | PathLike[str]] | str | PathLike[str] | None) -> Any:
    if files is None:
        return None
    if not isinstance(files, Mapping):
        from generation.engine import FolderLoraResolver

        return FolderLoraResolver(Path(files))
    from generation.models.hashing import FileHasher

    hasher = FileHasher(None)
    by_name = {str(name).casefold(): Path(path) for name, path in files.items()}

    def resolve_file(name: str) -> tuple[Path, str]:
        path = by_name[name.casefold()]  # KeyError: reported as an unknown LoRA
        return path, hasher.lora_hash(path)

    return resolve_file


# ---------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainedLora:
    """What :func:`train_lora` made: the ``.safetensors`` (kohya's key names: AUTOMATIC1111,
    ComfyUI and diffusers load it, and its hash is the one images record; ``kohya_path``: a
    copy named ``…-kohya``, if asked), its metadata, and the samples drawn before and after."""

    path: Path
    metadata: Mapping[str, str]
    steps: int
    loss: float | None
    before: Image.Image | None = None
    after: Image.Image | None = None
    kohya_path: Path | None = None


def train_lora(
    images: str | PathLike[str] | Iterable[Any],
    *,
    out: str | PathLike[str],
    model: str | None = None,
    trigger_word: str | None = None,
    steps: int | None = None,
    rank: int | None = None,
    learning_rate: float | None = None,
    resolution: int | None = None,
    kohya: bool = False,
    workdir: str | PathLike[str] | None = None,
    engine: Engine | None = None,
    on_progress: Callable[[Any], None] | None = None,
    **settings: Any,
) -> TrainedLora:
    """Train a LoRA on a few images and write it to ``out`` — no database, no queue.

    ``images``: a folder (images with same-named ``.txt`` captions, kohya's convention), a
    dataset ``.zip`` (same), or ``(image, caption)`` pairs where an image is a PIL image, a
    file path or bytes.  Files and bytes go through the same checks as uploads (format,
    size, pixels).  The defaults suit the device (``TrainingConfig.for_device``: 1000 steps
    at 512 px on a GPU, 100 at 256 on a CPU); ``settings`` are more
    :class:`~generation.training.TrainingConfig` fields (``seed``, ``sample_every``…).
    ``rank`` also sets alpha (scale 1).  ``workdir`` keeps the checkpoint and the samples:
    call again with the same one to resume an interrupted run (default: a temporary folder).
    ``on_progress`` gets a :class:`~generation.training.TrainingProgress` per step.
    ``kohya=True`` also writes ``<out stem>-kohya.safetensors`` (the same tensors, so the same
    A1111 hash: ``out`` already has kohya's names).
    """
    import shutil
    import tempfile

    from PIL import Image as PILImage

    from generation.training import LoraTrainer, TrainingConfig, export_kohya, export_lora

    engine = engine or default_engine()
    model = model or engine.registry.default
    items = _training_items(images)
    overrides: dict[str, Any] = {k: v for k, v in {
        "steps": steps, "rank": rank, "alpha": rank, "learning_rate": learning_rate, "resolution": resolution,
        "trigger_word": trigger_word}.items() if v is not None}
    overrides.update(settings)
    config = TrainingConfig.for_device(engine.device.type, **overrides)
    target = Path(out)
    temporary = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="brushwork-lora-")) if temporary else Path(workdir)
    try:
        trainer = LoraTrainer.from_engine(engine, model, items, config, folder)
        result = trainer.run_chunk(on_progress=on_progress)
        path = export_lora(trainer, target, {"brushwork.name": target.stem})
        samples = sorted((folder / "samples").glob("step_*.png"))

        def load(sample: Path | None) -> Image.Image | None:
            if sample is None:
                return None
            with PILImage.open(sample) as image:
                return image.convert("RGB")

        before = samples[0] if samples and samples[0].name == "step_000000.png" else None
        after = samples[-1] if samples and samples[-1] != before else None
        kohya_path = export_kohya(path, target.with_name(f"{target.stem}-kohya.safetensors")) if kohya else None
        trainer.close()
        return TrainedLora(path=path, metadata=trainer.metadata(), steps=result.step, loss=result.loss,
                           before=load(before), after=load(after), kohya_path=kohya_path)
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)


def _training_items(images: str | PathLike[str] | Iterable[Any]) -> list[tuple[Any, str | None]]:
    """(image, caption) pairs from a folder, a zip, or pairs (see :func:`train_lora`)."""
    from generation.datasets import read_zip, validate_image

    if isinstance(images, (str, PathLike)):
        source = Path(images)
        if source.is_file():
            return [(member.image, member.caption) for member in read_zip(source)]
        if not source.is_dir():
            raise RequestError("api.training_images", path=str(source))
        pairs = []
        for path in sorted(source.iterdir()):
            if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp") and path.is_file():
                caption_file = path.with_suffix(".txt")
                caption = None
                if caption_file.is_file():
                    from generation.datasets import clean_caption

                    caption = clean_caption(caption_file.read_bytes(), name=caption_file.name, max_chars=1000)
                pairs.append((validate_image(path.read_bytes(), name=path.name), caption))
        if not pairs:
            raise RequestError("api.training_images", path=str(source))
        return pairs
    out = []
    for index, item in enumerate(images):
        image, caption = item
        if isinstance(image, (str, PathLike)):
            image = validate_image(Path(image).read_bytes(), name=Path(image).name)
        elif isinstance(image, (bytes, bytearray, memoryview)):
            image = validate_image(image, name=f"image {index + 1}")
        out.append((image, caption))
    return out
