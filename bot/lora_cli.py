"""``brushwork lora …``: server LoRAs from the command line (datasets, training, use, files).

The command line is the local operator: its datasets and LoRAs live in the operator's own
namespace (user 0, no server), like everything it makes; ``--guild ID`` acts in a server's
namespace instead (to look after a server's LoRAs).  Every command calls one method of
:class:`~bot.lora_services.DatasetService` or :class:`~bot.lora_services.LoraService`,
exactly what the Discord cogs call.  Mistakes exit with status 2 and one line.

``brushwork lora train`` queues the training on the shared job queue and waits with a
progress bar (step, loss, time left), running a worker here unless another process (the
bot) has one; Ctrl-C cancels it.  Sample images are listed as they are drawn.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from bot.cli_common import (
    EXIT_OK,
    EXIT_USAGE,
    Parser,
    Progress,
    UsageError,
    check_out_file,
    check_out_folder,
    human_size,
    wait_for_job,
)
from generation.errors import echo

if TYPE_CHECKING:
    from bot.container import Container
    from bot.training_jobs import TrainingResult
    from storage.records import Scope


def _scope(args: argparse.Namespace) -> Scope:
    from storage.records import OPERATOR_USER_ID, Scope

    guild = getattr(args, "guild", None)
    return Scope(user_id=OPERATOR_USER_ID, guild_id=guild, operator=True)


class TrainingBar(Progress):
    """The training's progress: step, loss and time left on one line; a line per sample image."""

    def __call__(self, event: Any) -> None:
        from generation.queue import JobProgress, JobRequeued

        if isinstance(event, JobRequeued) and event.reason == "chunk":
            return  # a long job yields between chunks: normal, not news
        if isinstance(event, JobProgress) and event.detail and event.detail.get("sample_path"):
            self.stream.write(f"\nsample at step {event.step}: {event.detail['sample_path']}\n")
            self.stream.flush()
        super().__call__(event)

    def _extra(self, event: Any) -> str:
        loss = (event.detail or {}).get("loss_ema")
        return "" if loss is None else f", loss {loss:.4f}"


# ---------------------------------------------------------------------- datasets


def cmd_dataset_create(container: Container, args: argparse.Namespace) -> int:
    record = container.datasets.create(_scope(args), args.name)
    print(f"{record.name}\tcreated (add images with: brushwork lora dataset add {record.name} FILES…)")
    return EXIT_OK


def cmd_dataset_list(container: Container, args: argparse.Namespace) -> int:
    records = container.datasets.list(_scope(args))
    if not records:
        print("no datasets yet: brushwork lora dataset create NAME", file=sys.stderr)
    for record in records:
        print(f"{record.name}\t{record.image_count} images\t{human_size(record.total_bytes)}\t"
              f"{record.updated_at:%Y-%m-%d %H:%M}")
    return EXIT_OK


def cmd_dataset_add(container: Container, args: argparse.Namespace) -> int:
    from bot.lora_services import Upload, UploadRefused

    scope = _scope(args)
    paths = [Path(item).expanduser() for item in args.files]
    for path in paths:
        if not path.is_file():
            from bot.lora_services import ServerLoraError

            raise ServerLoraError("server_dataset.not_a_file", path=str(path))
    # Sizes first, from the file system: nothing too large is read into memory.
    checked = container.datasets.check_upload(scope, args.name, [(path.name, path.stat().st_size) for path in paths])
    uploads = [Upload(paths[index].name, paths[index].read_bytes()) for index in checked.accepted]
    try:
        result = container.datasets.add_images(scope, args.name, uploads, caption=args.caption,
                                               before=checked.refused)
    except UploadRefused as refused:  # nothing added: say why for every file
        for refusal in refused.refusals:
            print(f"brushwork: not added: {refusal.error.message()}", file=sys.stderr)
        return EXIT_USAGE
    first = result.dataset.image_count - len(result.added) + 1
    for number, image in enumerate(result.added, start=first):
        print(f"#{number}\t{image.public_id}\t{image.width}x{image.height}\t{image.original_name}\t"
              f"{image.caption or ''}")
    for refusal in result.refused:
        print(f"brushwork: not added: {refusal.error.message()}", file=sys.stderr)
    print(f"{result.dataset.name}: {result.dataset.image_count} images", file=sys.stderr)
    return EXIT_USAGE if result.refused else EXIT_OK


def cmd_dataset_show(container: Container, args: argparse.Namespace) -> int:
    check_out_file(args.out)
    sheet = container.datasets.show(_scope(args), args.name)
    for number, image in enumerate(sheet.images, start=1):
        print(f"#{number}\t{image.public_id}\t{image.width}x{image.height}\t{image.original_name}\t"
              f"{image.caption or ''}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(sheet.png)
        print(f"contact sheet\t{args.out}", file=sys.stderr)
    return EXIT_OK


def cmd_dataset_caption(container: Container, args: argparse.Namespace) -> int:
    image = container.datasets.set_caption(_scope(args), args.name, args.image, " ".join(args.text))
    print(f"{image.public_id}\t{image.caption or '(no caption)'}")
    return EXIT_OK


def cmd_dataset_remove(container: Container, args: argparse.Namespace) -> int:
    image = container.datasets.remove_image(_scope(args), args.name, args.image)
    print(f"{image.public_id}\tremoved")
    return EXIT_OK


def cmd_dataset_delete(container: Container, args: argparse.Namespace) -> int:
    record = container.datasets.delete(_scope(args), args.name, can_manage=True)
    print(f"{record.name}\tdeleted ({record.image_count} images)")
    return EXIT_OK


# ---------------------------------------------------------------------- LoRAs


def cmd_train(container: Container, args: argparse.Namespace) -> int:
    from bot.lora_services import TrainOptions

    options = TrainOptions(name=args.name, dataset=args.dataset, trigger_word=args.trigger, steps=args.steps,
                           rank=args.rank, learning_rate=args.lr, resolution=args.resolution, model=args.model)
    if not container.queue.started and not container.queue.remote_worker_alive():
        container.check_devices()  # before the name is reserved and the job stored
    started = container.loras.train(_scope(args), options, can_manage=True)
    config = started.config
    print(f"training {started.lora.name} on {started.lora.base_model}: {config.steps} steps, rank {config.rank}, "
          f"{config.resolution} px, learning rate {config.learning_rate:g} (job {started.job_id}; "
          f"Ctrl-C cancels)", file=sys.stderr)
    progress = TrainingBar(sys.stderr, enabled=args.progress if args.progress is not None else sys.stderr.isatty())
    result = cast("TrainingResult | None", wait_for_job(container, started.handle, progress))  # a training's result
    if result is None:  # finished in another process and its LoRA is gone since
        result = container.loras.result(started.job_id)
    lora = result.lora if result is not None else container.loras.get(_scope(args), args.name)
    path = container.loras.files.absolute(lora.file_path) if lora.file_path else None
    print(f"{lora.name}\t{lora.status.value}\t{lora.short_hash}\t{path}")
    if result is not None:
        if result.before is not None:
            print(f"before\t{result.before}")
        if result.after is not None:
            print(f"after\t{result.after}")
    return EXIT_OK


def cmd_cancel(container: Container, args: argparse.Namespace) -> int:
    record = container.loras.cancel(_scope(args), args.name, can_manage=True)
    print(f"{record.name}\tcancelled")
    return EXIT_OK


def cmd_list(container: Container, args: argparse.Namespace) -> int:
    records = container.loras.list(_scope(args))
    if not records:
        print("no LoRAs yet: brushwork lora train NAME --dataset DATASET, or brushwork lora import FILE",
              file=sys.stderr)
    for record in records:
        print(f"{record.name}\t{record.status.value}\t{record.base_model}\trank {record.rank}\t{record.steps} steps"
              f"\t{record.short_hash or '-'}\t{record.source.value}")
    return EXIT_OK


def cmd_info(container: Container, args: argparse.Namespace) -> int:
    details = container.loras.info(_scope(args), args.name)
    lora = details.lora
    rows = [
        ("name", lora.name), ("status", lora.status.value), ("id", lora.public_id), ("source", lora.source.value),
        ("base model", f"{lora.base_model} ({lora.family}, hash {lora.base_model_hash or '?'})"),
        ("rank", f"{lora.rank} (alpha {lora.alpha:g})"), ("steps", str(lora.steps)),
        ("dataset", f"{lora.dataset_name or '-'} ({lora.dataset_size} images)"),
        ("trigger words", ", ".join(lora.trigger_words) or "-"),
        ("lora hash", lora.short_hash or "-"), ("sha256", lora.sha256 or "-"),
        ("size", human_size(lora.size_bytes) if lora.size_bytes else "-"),
        ("created", f"{lora.created_at:%Y-%m-%d %H:%M} UTC"), ("job", lora.job_public_id or "-"),
    ]
    if details.progress is not None:
        p = details.progress
        loss = f", loss {p.loss:.4f}" if p.loss is not None else ""
        rows.append(("progress", f"{p.state}: step {p.step}/{p.total}{loss}"))
    if details.path is not None:
        rows.append(("file", str(details.path)))
    if details.before is not None:
        rows.append(("before", str(details.before)))
    if details.after is not None:
        rows.append(("after", str(details.after)))
    for key, value in rows:
        print(f"{key + ':':<15}{value}")
    if lora.ready:
        print(f"{'use:':<15}brushwork generate \"{(lora.trigger_words or ['a picture'])[0]}, ... "
              f"--lora {lora.name}:0.8 --model {lora.base_model}\"")
    return EXIT_OK


def cmd_delete(container: Container, args: argparse.Namespace) -> int:
    record = container.loras.delete(_scope(args), args.name, can_manage=True)
    print(f"{record.name}\tdeleted")
    return EXIT_OK


EXPORT_FORMATS = {"kohya": "kohya keys (AUTOMATIC1111, ComfyUI, diffusers)",
                  "diffusers": "diffusers keys (diffusers, Brushwork; --kohya for AUTOMATIC1111)"}


def cmd_export(container: Container, args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.is_dir():  # a folder: the file goes into it, under the LoRA's own file name
        check_out_folder(out)
    else:
        check_out_file(out)
    export = container.loras.export(_scope(args), args.name, kohya=args.kohya)
    if out.is_dir():
        out = out / export.filename
    if out.resolve() != export.path.resolve():
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(export.path, out)
    print(f"{out}\t{human_size(export.size)}\t{EXPORT_FORMATS.get(export.format, export.format)}")
    return EXIT_OK


def cmd_import(container: Container, args: argparse.Namespace) -> int:
    path = Path(args.file).expanduser()
    if not path.is_file():
        raise UsageError(f"{path} is not a file: give the LoRA's .safetensors file")
    record = container.loras.import_lora(_scope(args), path.name, path, name=args.name, model=args.model,
                                         can_manage=True)
    print(f"{record.name}\t{record.status.value}\t{record.short_hash}\trank {record.rank}\t{record.base_model}")
    return EXIT_OK


# ---------------------------------------------------------------------- parser


#: The largest id the database stores (a signed 64-bit integer); Discord's ids are well below it.
MAX_SNOWFLAKE = 2**63 - 1


def _snowflake(text: str) -> int:
    """``--guild``: a Discord server id, e.g. 123456789012345678 (Developer Mode → Copy Server ID)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 0 < value <= MAX_SNOWFLAKE:
        raise argparse.ArgumentTypeError(f"`{echo(text)}` is not a Discord server id: a whole number from 1 to "
                                         f"{MAX_SNOWFLAKE}, e.g. 123456789012345678 (Discord: Developer Mode, "
                                         "then right-click the server → Copy Server ID)")
    return value


def _positive(kind: type):
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be more than 0")
        return value

    return convert


def add_lora_commands(sub: Any) -> None:
    """Add ``brushwork lora …`` to the command line's subcommands."""
    lora = sub.add_parser(
        "lora", help="server LoRAs: datasets, training, export, import",
        description="Train LoRAs from your own images and use them with --lora NAME:WEIGHT. "
                    "The command line works in the operator's own namespace; --guild ID acts in a server's.",
        epilog="Example: brushwork lora dataset create inkwash && brushwork lora dataset add inkwash ./ink/*.png "
               "&& brushwork lora train inkwash --dataset inkwash --trigger inkwash")
    lora.add_argument("--guild", type=_snowflake, metavar="ID", help="act in this server's namespace (operator)")
    actions = lora.add_subparsers(dest="lora_command", metavar="ACTION", parser_class=Parser, required=True)

    dataset = actions.add_parser("dataset", help="training images: create, add, show, caption, remove, delete")
    steps = dataset.add_subparsers(dest="dataset_command", metavar="ACTION", parser_class=Parser, required=True)
    p = steps.add_parser("create", help="a new, empty dataset")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(handler=cmd_dataset_create)
    p = steps.add_parser("list", help="the datasets")
    p.set_defaults(handler=cmd_dataset_list)
    p = steps.add_parser("add", help="add images (PNG, JPEG, WebP) and/or zips with .txt captions",
                         description="Add images to a dataset. A zip may hold images with same-named .txt "
                                     "captions (kohya's convention: 01.png + 01.txt). Every file is checked; "
                                     "refused ones are named with the reason (exit status 2).")
    p.add_argument("name", metavar="NAME")
    p.add_argument("files", nargs="+", metavar="FILE", help="image files or zips")
    p.add_argument("--caption", help="caption for the images that bring none")
    p.set_defaults(handler=cmd_dataset_add)
    p = steps.add_parser("show", help="the images and captions; --out writes a contact sheet")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--out", type=Path, metavar="FILE", help="write the contact sheet (PNG) here")
    p.set_defaults(handler=cmd_dataset_show)
    p = steps.add_parser("caption", help="set an image's caption")
    p.add_argument("name", metavar="NAME")
    p.add_argument("image", metavar="IMAGE", help="its number (see show) or id")
    p.add_argument("text", nargs="*", metavar="TEXT", help="the caption (empty: none)")
    p.set_defaults(handler=cmd_dataset_caption)
    p = steps.add_parser("remove", help="remove one image")
    p.add_argument("name", metavar="NAME")
    p.add_argument("image", metavar="IMAGE", help="its number (see show) or id")
    p.set_defaults(handler=cmd_dataset_remove)
    p = steps.add_parser("delete", help="delete a dataset and its images")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(handler=cmd_dataset_delete)

    p = actions.add_parser("train", help="train a LoRA on a dataset (waits, with progress; Ctrl-C cancels)",
                           description="Queue a LoRA training on the shared queue and wait for it. Defaults "
                                       "suit the device: on a GPU 1000 steps at 512 px, on a CPU 100 at 256.")
    p.add_argument("name", metavar="NAME", help="the LoRA's name (used as --lora NAME)")
    p.add_argument("--dataset", required=True, metavar="DATASET")
    p.add_argument("--trigger", metavar="WORD", help="trigger word put in front of every caption")
    p.add_argument("--steps", type=_positive(int), metavar="N")
    p.add_argument("--rank", type=_positive(int), metavar="R", help="LoRA rank (size); alpha = rank")
    p.add_argument("--lr", type=_positive(float), metavar="X", help="learning rate, e.g. 1e-4")
    p.add_argument("--resolution", type=_positive(int), metavar="PX", help="training size (multiple of 64)")
    p.add_argument("--model", metavar="M", help="base model (see brushwork models)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--progress", dest="progress", action="store_true", default=None,
                       help="show a progress bar even when stderr is not a terminal")
    group.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(handler=cmd_train)

    p = actions.add_parser("cancel", help="cancel a training")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(handler=cmd_cancel)
    p = actions.add_parser("list", help="the LoRAs, with status, base model, rank, steps and hash")
    p.set_defaults(handler=cmd_list)
    p = actions.add_parser("info", help="a LoRA's metadata, progress and before/after samples")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(handler=cmd_info)
    p = actions.add_parser("delete", help="delete a LoRA (a training one is cancelled)")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(handler=cmd_delete)
    p = actions.add_parser("export", help="write a LoRA's .safetensors (the file its images' Lora hashes name)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--kohya", action="store_true",
                   help="kohya key names, for AUTOMATIC1111 (LoRAs trained here have them already; "
                        "a diffusers-format import is converted)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="file (or folder) to write")
    p.set_defaults(handler=cmd_export)
    p = actions.add_parser("import", help="add an existing .safetensors LoRA (checked against the base model)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--name", metavar="N", help="its name (default: the file's name)")
    p.add_argument("--model", metavar="M", help="the base model it is for (default: the default model)")
    p.set_defaults(handler=cmd_import)


__all__ = ["TrainingBar", "add_lora_commands"]
