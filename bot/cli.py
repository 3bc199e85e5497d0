"""The ``brushwork`` command line.

Exit status: 0 on success, 2 for a user mistake (one line on stderr saying what was wrong and
what is allowed), 1 for an internal failure (one line; ``--debug`` shows the traceback).

Request flags go *inside* the quoted prompt, exactly as in Discord:
``brushwork generate "a cat on a motorbike --ar 3:2 --seed 42"``.

Generating goes through the shared job queue, like the bot's requests: the command submits
a job and waits for it.  If a worker is alive in another process on the same database (the
bot), it runs the job; otherwise this process starts a worker thread for as long as it waits.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot.cli_common import (
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_USAGE,
    Parser,
    Progress,
    UsageError,
    check_out_folder,
    duration,
    human_size,
    place,
    wait_for_job,
)
from generation.errors import BrushworkError
from generation.version import VERSION

if TYPE_CHECKING:
    from bot.container import Container
    from bot.services import GenerationPlan, SavedImage

log = logging.getLogger("brushwork")

#: Errors that are failures of the machine, not mistakes in the command (exit status 1).
FAILURE_CODES = frozenset({"queue.internal", "queue.crashed", "queue.out_of_memory", "queue.worker_hung"})
#: Shared errors whose catalogue text speaks Discord ("in this server", "/history"): the
#: command line says the same thing in its own words, from the same error data.  Discord
#: keeps the catalogue's wording.
CLI_TEXTS: dict[str, str] = {
    "image.not_found": "No image `{id}` here. `brushwork history` lists your images and their ids.",
    "image.start_not_found": "--image {id}: no image `{id}` here to start from. Use the id of one of your images "
                             "(printed after each result, listed by `brushwork history`), or start from a file "
                             "with --picture FILE.",
    "grammar.missing_image": "{flag} needs the id of one of your images to start from, e.g. `{example}` (ids are "
                             "printed after each result and listed by `brushwork history`).",
    "request.bad_image_ref": "{flag} `{value}` is not an image id: ids are 8 letters and digits, e.g. `k3x9fq2a` "
                             "(printed after each result and listed by `brushwork history`).",
}


# ---------------------------------------------------------------------- output helpers


def say(error: BrushworkError) -> str:
    """An error in the command line's words (:data:`CLI_TEXTS`), else in the catalogue's."""
    template = CLI_TEXTS.get(error.code)
    if template is not None:
        try:
            return template.format(**error.params)
        except (KeyError, IndexError, ValueError):  # the error changed its data: its own text still says it
            pass
    return error.message()


def _check_devices(container: Container) -> None:
    """Before a job is stored: when this process will run it, refuse a device that is not
    there now (one line, exit 2) rather than queue a job no worker here can ever run."""
    if not container.queue.started and not container.queue.remote_worker_alive():
        container.check_devices()


def _print_notes(plan: GenerationPlan) -> None:
    for note in plan.notes:
        print(f"note: {note.message()}", file=sys.stderr)


def _progress(container: Container, args: argparse.Namespace, model: str | None) -> Progress:
    return Progress(sys.stderr, enabled=args.progress if args.progress is not None else sys.stderr.isatty(),
                    model=model, queue=container.queue)


def _print_saved(saved: Sequence[SavedImage], out: Path | None) -> None:
    for item in saved:
        path = item.path
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            target = out / f"{item.record.public_id}.png"
            shutil.copyfile(item.path, target)
            path = target
        print(f"{item.record.public_id}\tseed={item.record.seed}\t{path}")


def _scope():
    from storage.records import Scope

    return Scope.local_operator()


#: How much of a value typed by the user an error message repeats.
ECHO_CHARS = 40


def _echo(text: str, limit: int = ECHO_CHARS) -> str:
    """A value the user typed, as an error repeats it: one line, at most ``limit`` characters
    (a 10,000-character id is not printed back whole)."""
    from generation.errors import echo

    return echo(text, limit)


def _admit(container: Container, plan: GenerationPlan) -> None:
    """The queue's limits checked before anything is kept for a job that would be refused."""
    from bot.jobs import plan_submission

    container.queue.admit(plan_submission(plan, _scope()))


# ---------------------------------------------------------------------- commands


def _run_plan(container: Container, plan: GenerationPlan, args: argparse.Namespace) -> int:
    from bot.jobs import plan_submission

    check_out_folder(getattr(args, "out", None))
    _print_notes(plan)
    _check_devices(container)
    progress = _progress(container, args, plan.request.model)
    handle = container.queue.submit(plan_submission(plan, _scope()))
    saved = wait_for_job(container, handle, progress)
    _print_saved(saved, args.out)
    return EXIT_OK


def cmd_generate(container: Container, args: argparse.Namespace) -> int:
    """A ``--picture`` is checked and decoded, the request planned with it (every check made),
    and only then kept as an upload: a refused request leaves no file and no row."""
    text = " ".join(args.prompt)
    picture = None
    if args.picture is not None:  # img2img from a file: checked, planned with, kept; then --image <its id>
        path = Path(args.picture).expanduser()
        if not path.is_file():
            raise UsageError(f"--picture: there is no file {_echo(args.picture)}")
        container.images.check_upload(path.name, path.stat().st_size)
        picture = container.images.prepare_upload(_scope(), path.name, path.read_bytes())
        text = f"{text} --image {picture.public_id}"
    plan = container.images.plan_generate(text, _scope(), model=args.model, picture=picture)
    if picture is not None:
        _admit(container, plan)
        check_out_folder(args.out)
        container.images.keep_upload(_scope(), picture)
    return _run_plan(container, plan, args)


def cmd_reroll(container: Container, args: argparse.Namespace) -> int:
    return _run_plan(container, container.images.plan_reroll(args.image, _scope()), args)


def cmd_tweak(container: Container, args: argparse.Namespace) -> int:
    changes = " ".join(args.changes)
    return _run_plan(container, container.images.plan_tweak(args.image, changes, _scope()), args)


def cmd_upscale(container: Container, args: argparse.Namespace) -> int:
    mode = "creative" if args.creative else "subtle"
    return _run_plan(container, container.images.plan_upscale(args.image, _scope(), mode=mode), args)


def cmd_vary(container: Container, args: argparse.Namespace) -> int:
    mode = "strong" if args.strong else "subtle"
    return _run_plan(container, container.images.plan_vary(args.image, _scope(), mode=mode), args)


def cmd_compare(container: Container, args: argparse.Namespace) -> int:
    """One seed, one or two parameters varied: one line per cell (id, values, seed, file), then
    the labelled grid's path (``<out>/compare-<job>.png``, default ``$BRUSHWORK_HOME/comparisons``)."""
    from bot.jobs import compare_submission
    from bot.services import compare_grid

    if (args.vary2 is None) != (args.values2 is None):
        raise UsageError("--vary2 and --values2 go together, e.g. --vary2 steps --values2 \"10,20,30\"")
    plan = container.images.plan_compare(" ".join(args.prompt), args.vary, args.values, _scope(),
                                         vary2=args.vary2, values2=args.values2, model=args.model)
    check_out_folder(args.out)
    for note in plan.notes:
        print(f"note: {note.message()}", file=sys.stderr)
    _check_devices(container)
    progress = _progress(container, args, plan.base.model)
    handle = container.queue.submit(compare_submission(plan, _scope()))
    saved = wait_for_job(container, handle, progress)
    out = args.out if args.out is not None else container.settings.home / "comparisons"
    out.mkdir(parents=True, exist_ok=True)
    for item, (y_value, x_value) in zip(saved, plan.labels(), strict=True):
        path = item.path
        if args.out is not None:
            path = out / f"{item.record.public_id}.png"
            shutil.copyfile(item.path, path)
        label = f"--{plan.x.flag} {x_value}" + (f" --{plan.y.flag} {y_value}" if plan.y is not None else "")
        print(f"{item.record.public_id}\t{label}\tseed={item.record.seed}\t{path}")
    grid_path = out / f"compare-{handle.job_id}.png"
    grid_path.write_bytes(compare_grid(plan, [item.path for item in saved]))
    print(f"grid\t{grid_path}")
    return EXIT_OK


def cmd_show(container: Container, args: argparse.Namespace) -> int:
    details = container.images.show(args.image, _scope())
    request = details.request
    if args.json:
        payload = {
            "request": request.to_dict(),
            "canonical": request.render(),
            "infotext": details.infotext,
            "path": str(details.path) if details.path else None,
            "model_name": details.model_name,
            "unreproduced": details.unreproduced,
        }
        if details.record is not None:
            rec = details.record
            payload.update({
                "id": rec.public_id,
                "parent": rec.parent_public_id,
                "relation": rec.relation.value if rec.relation else None,
                "model_hash": rec.model_hash,
                "lora_hashes": rec.lora_hashes,
                "sha256": rec.content_sha256,
                "created_at": rec.created_at.isoformat(),
                "lineage": [r.public_id for r in details.lineage],
            })
        print(json.dumps(payload, ensure_ascii=False, indent=2))
        return EXIT_OK
    rec = details.record
    if rec is not None:
        print(f"id:        {rec.public_id}")
        print(f"created:   {rec.created_at:%Y-%m-%d %H:%M:%S} UTC")
        if rec.parent_public_id:
            print(f"parent:    {rec.parent_public_id} ({rec.relation.value if rec.relation else '?'})")
    size = request.output_size
    print(f"prompt:    {request.prompt}")
    if request.negative_prompt:
        print(f"negative:  {request.negative_prompt}")
    print(f"seed:      {request.seed}")
    print(f"size:      {size[0]}x{size[1]}" if size else "size:      ?")
    print(f"model:     {_model_line(request.model, details.model_name, request.model in container.registry)}")
    print(f"flags:     {request.render()}")
    if details.unreproduced:
        from generation.metadata import describe_unreproduced

        print(f"not reproduced: {describe_unreproduced(details.unreproduced)}")
    if details.path:
        print(f"file:      {details.path}")
    if details.infotext:
        print("infotext:")
        for line in details.infotext.splitlines():
            print(f"  {line}")
    from generation.api import python_code

    print("python:")
    for line in python_code(request).splitlines():
        print(f"  {line}" if line else "")
    return EXIT_OK


def _model_line(model: str | None, written: str | None, here: bool) -> str:
    """The model ``show`` names: the one here, and the file's own name when that differs."""
    if model is None or not here:
        name = model or written
        return f"{name} (no model of that name here)" if name else "?"
    if written and written != model:
        return f"{model} (the file says {written}; same model hash)"
    return model


def cmd_history(container: Container, args: argparse.Namespace) -> int:
    from storage.ids import is_public_id, normalize_public_id

    if args.before is not None and not is_public_id(normalize_public_id(args.before)):
        raise UsageError(f"--before `{_echo(args.before)}` is not an image id: ids are 8 letters and digits, "
                         "e.g. k3x9fq2a (the last id of the page before, from `brushwork history`)")
    records = container.images.history(_scope(), limit=args.limit, before=args.before)
    if not records:
        print("no images yet: try  brushwork generate \"a lighthouse at dusk\"", file=sys.stderr)
        return EXIT_OK
    for rec in records:
        prompt = rec.prompt if len(rec.prompt) <= 60 else rec.prompt[:57] + "..."
        relation = f" {rec.relation.value}:{rec.parent_public_id}" if rec.relation else ""
        print(f"{rec.public_id}\t{rec.created_at:%Y-%m-%d %H:%M}\tseed={rec.seed}\t{rec.width}x{rec.height}"
              f"\t{rec.model}{relation}\t{prompt}")
    return EXIT_OK


def cmd_samplers(_container: Container | None, _args: argparse.Namespace) -> int:
    from generation.samplers import DEFAULT_SAMPLER, SAMPLERS

    width = max(len(s.name) for s in SAMPLERS)
    for sampler in SAMPLERS:
        mark = " (default)" if sampler.name == DEFAULT_SAMPLER else ""
        print(f"{sampler.name:<{width}}  {sampler.description}{mark}")
        if sampler.note:
            print(f"{'':<{width}}  note: {sampler.note}")
    return EXIT_OK


def cmd_models(container: Container, _args: argparse.Namespace) -> int:
    registry = container.registry
    for name in registry.names():
        spec = registry.get(name)
        mark = " (default)" if name == registry.default else ""
        family = spec.family or "auto"
        print(f"{name}{mark}\t{family}\t{spec.source}" + (f"\t{spec.description}" if spec.description else ""))
    return EXIT_OK


def cmd_queue(container: Container, args: argparse.Namespace) -> int:
    """Workers, then jobs in the order they will start.  ``position`` is the place in line, 1
    next, in the table and in ``--json`` alike; an ETA from defaults (a model not run on this
    machine yet, here or ahead) is marked an estimate (``eta_measured``: false)."""
    queue = container.queue
    views = queue.jobs()
    workers = [(status, alive) for status, alive in queue.workers_status() if alive or status.state == "hung"]
    groups = {snap.job_id: snap.cost_group for snap in queue.store.active()}
    measured: list[bool] = []
    for view in views:  # running first, then in start order: an ETA includes the jobs before it
        measured.append((not measured or measured[-1]) and queue.rates.measured(groups.get(view.job_id, "")))
    if args.json:
        print(json.dumps({
            "workers": [{"id": s.worker_id, "device": s.device, "state": s.state, "alive": alive,
                         "running": list(s.running)} for s, alive in workers],
            "jobs": [{"id": v.job_id, "state": v.state.value,
                      "position": None if v.position is None else place(v.position), "owner": v.owner,
                      "guild": v.guild, "kind": v.kind, "images": v.images, "progress": round(v.progress, 3),
                      "eta_s": None if v.eta_s is None else round(v.eta_s, 1), "eta_measured": known,
                      "attempts": v.attempts, "cancel_requested": v.cancel_requested}
                     for v, known in zip(views, measured, strict=True)],
        }, ensure_ascii=False, indent=2))
        return EXIT_OK
    if not workers:
        print("workers:  none running (jobs wait until `brushwork generate` or the bot starts one)")
    for status, alive in workers:
        state = status.state if alive else f"{status.state}, silent"
        print(f"worker:   {status.worker_id} on {status.device}: {state}")
    if not views:
        print("queue:    empty")
        return EXIT_OK
    print(f"{'JOB':<10} {'STATE':<8} {'POS':>4}  {'OWNER':<20} {'SERVER':<20} {'KIND':<9} {'N':>2} "
          f"{'PROGRESS':>8}  ETA")
    for view, known in zip(views, measured, strict=True):
        position = "-" if view.position is None else str(place(view.position))
        state = "stopping" if view.cancel_requested else view.state.value
        guild = "-" if view.guild is None else str(view.guild)
        print(f"{view.job_id:<10} {state:<8} {position:>4}  {view.owner:<20} {guild:<20} {view.kind:<9} "
              f"{view.images:>2} {view.progress:>8.0%}  {duration(view.eta_s, known)}")
    return EXIT_OK


def cmd_cancel(container: Container, args: argparse.Namespace) -> int:
    from generation.queue import Requester
    from storage.ids import is_public_id, normalize_public_id

    job_id = normalize_public_id(args.job)
    if not is_public_id(job_id):
        raise UsageError(f"`{_echo(args.job)}` is not a job id: job ids are 8 letters and digits, e.g. k3x9fq2a "
                         "(listed by `brushwork queue`)")
    state = container.queue.cancel(job_id, Requester(user=_scope().user_id, operator=True))
    messages = {
        "cancelled": f"job {job_id} cancelled",
        "running": f"job {job_id} is running: it stops at its next step",
        "done": f"job {job_id} had already finished",
        "failed": f"job {job_id} had already failed",
    }
    print(messages.get(state.value, f"job {job_id} is {state.value}"))
    return EXIT_OK


def cmd_run(_container: Container | None, args: argparse.Namespace) -> int:
    """The Discord bot, the database, the queue and its worker, in this process, until Ctrl-C."""
    import asyncio

    from bot.container import build_container
    from bot.settings import load_settings

    settings = load_settings(**({"home": args.home} if args.home else {}))
    token = settings.discord_token.get_secret_value().strip() if settings.discord_token else ""
    if not token:
        raise UsageError("no Discord bot token: set BRUSHWORK_DISCORD_TOKEN (or discord_token in brushwork.toml) to "
                         "the token of your application's bot (https://discord.com/developers/applications)")
    import discord

    from bot.discord_app.client import configure_logging, serve

    configure_logging("DEBUG" if args.debug else settings.log_level, [token], replace=True)
    container = build_container(settings)
    try:
        container.start_workers()
        asyncio.run(serve(container, token, force_sync=args.sync))
    except discord.LoginFailure:
        raise UsageError("Discord refused the bot token (BRUSHWORK_DISCORD_TOKEN): copy it again from the "
                         "Bot page of your application") from None
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        container.close()
    return EXIT_OK


def cmd_db(container: Container, args: argparse.Namespace) -> int:
    from storage.migrate import current_revision, head_revision, upgrade_to_head

    if args.db_command == "check":
        return _db_check(container, args)
    if args.db_command == "purge":
        return _db_purge(container, args)
    if args.db_command == "upgrade":
        upgrade_to_head(container.database)
    print(f"database: {container.settings.effective_database_url.split('@')[-1]}")
    print(f"revision: {current_revision(container.database)} (head: {head_revision()})")
    return EXIT_OK


def _db_check(container: Container, args: argparse.Namespace) -> int:
    """Files and rows compared in every storage area; ``--clean`` deletes the stray files."""
    from datetime import timedelta

    from storage.integrity import Roots, check, remove_strays

    s = container.settings
    roots = Roots(images=container.store.root, datasets=s.datasets_dir, loras=s.server_loras_dir,
                  training=s.training_dir, uploads=s.uploads_dir)
    grace = timedelta(minutes=args.grace_minutes)
    reports = check(container.unit_of_work, roots, grace=grace)
    width = max(len(report.area) for report in reports)
    for report in reports:
        unit = "folders" if report.area == "training folders" else "files"
        strays = f"{len(report.strays)} stray" + (f" ({human_size(report.stray_bytes)})" if report.strays else "")
        line = (f"{report.area:<{width}}  {report.files} {unit} · {report.referenced} rows · {strays} · "
                f"{len(report.missing)} missing")
        if report.too_new:
            line += f" · {report.too_new} newer than {args.grace_minutes} min (not judged)"
        print(line)
    for report in reports:
        for stray in report.strays:
            print(f"stray\t{stray.path}\t{human_size(stray.size)}\t{stray.modified:%Y-%m-%d %H:%M} UTC")
        for missing in report.missing:
            print(f"missing\t{report.area} {missing.public_id}\t{missing.path}")
    strays = sum(len(report.strays) for report in reports)
    size = sum(report.stray_bytes for report in reports)
    if any(report.missing for report in reports):
        print("Files of the rows marked missing are gone: restore them from a backup (their recipes are still "
              "in the database: `brushwork show ID`).")
    young = sum(report.too_new for report in reports)
    if not strays:
        print("No stray files." if not young else f"No stray files older than {args.grace_minutes} min.")
    elif args.clean:
        removed, freed = remove_strays(container.unit_of_work, roots, reports, grace=grace)
        print(f"Deleted {removed} stray file(s) or folder(s) ({human_size(freed)}).")
    else:
        print(f"Run `brushwork db check --clean` to delete the {strays} stray file(s) or folder(s) "
              f"({human_size(size)}).")
    if young:  # after a crash, its strays are young: say so, or "no stray files" would be the last word
        print(f"Skipped {young} unreferenced file(s) or folder(s) younger than {args.grace_minutes} min: their "
              f"rows may still be being written. Run `brushwork db check` again in {args.grace_minutes} min "
              "(or with `--grace-minutes 0` while no Brushwork process is running).")
    return EXIT_OK


def _db_purge(container: Container, args: argparse.Namespace) -> int:
    """Remove the files of images deleted more than ``--days`` ago (their rows stay)."""
    from datetime import timedelta

    from storage.integrity import purge_deleted

    removed, freed = purge_deleted(container.unit_of_work, container.store.root,
                                   older_than=timedelta(days=args.days))
    print(f"Removed the files of {removed} image(s) deleted more than {args.days} day(s) ago "
          f"({human_size(freed) if removed else '0 KB'}).")
    return EXIT_OK


# ---------------------------------------------------------------------- parser


def _int_between(low: int, high: int):
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: use {low}-{high}")
        return value

    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="brushwork",
        description="Generate images from prompts with inline flags, reproduce them, and run the Discord bot.",
        epilog='Example: brushwork generate "a cat on a motorbike, sunset --ar 3:2 --seed 42 --steps 30"',
    )
    parser.add_argument("--version", action="version", version=f"brushwork {VERSION}")
    parser.add_argument("--home", type=Path, help="data folder (default: $BRUSHWORK_HOME or the user data dir)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def add_output(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", type=Path, help="also copy the PNGs into this folder")
        group = p.add_mutually_exclusive_group()
        group.add_argument("--progress", dest="progress", action="store_true", default=None,
                           help="show a progress bar even when stderr is not a terminal")
        group.add_argument("--no-progress", dest="progress", action="store_false")

    flags_help = ('the prompt and its flags, quoted: "a cat --ar 3:2 --seed 42 --steps 30 --cfg 7 '
                  '--sampler euler_a --no blurry --n 4"')
    p = sub.add_parser("generate", help="make images from a prompt with inline flags",
                       description="Make images. Prints one line per image: id, seed, file.",
                       epilog='Flags: --seed --steps --cfg --sampler --ar --size --no --n --model --lora '
                              '--image --hires --hires-steps --strength --vary-seed --vary-strength --chaos '
                              '--clip-skip --tile. See README for ranges.')
    p.add_argument("prompt", nargs="+", help=flags_help)
    p.add_argument("--model", help="model to use (see `brushwork models`)")
    p.add_argument("--picture", metavar="FILE", help="start from this picture (img2img; PNG, JPEG or WebP): it is "
                                                     "checked and kept, and --strength in the prompt sets how "
                                                     "much changes")
    add_output(p)
    p.set_defaults(handler=cmd_generate)

    for name, handler, help_text in (
        ("reroll", cmd_reroll, "same settings, new seed"),
        ("upscale", cmd_upscale, "2x hires pass over an image"),
        ("vary", cmd_vary, "same seed with a variation seed"),
    ):
        p = sub.add_parser(name, help=help_text, description=f"{help_text.capitalize()}. "
                           "IMAGE is an image id or a PNG file made by Brushwork or AUTOMATIC1111.")
        p.add_argument("image", metavar="IMAGE", help="image id (e.g. k3x9fq2a) or PNG file")
        if name == "upscale":
            p.add_argument("--creative", action="store_true", help="let the model repaint more (strength "
                           "0.65 instead of 0.4)")
        if name == "vary":
            p.add_argument("--strong", action="store_true", help="a stronger variation (0.45 instead of 0.15)")
        add_output(p)
        p.set_defaults(handler=handler)

    p = sub.add_parser("tweak", help="same seed, changed prompt and/or flags",
                       description='Same seed and settings, with a new prompt and/or flags, '
                                   'e.g. brushwork tweak k3x9fq2a "a red cat --cfg 5".')
    p.add_argument("image", metavar="IMAGE", help="image id or PNG file")
    p.add_argument("changes", nargs="+", metavar="CHANGES", help='new prompt and/or flags, e.g. "--steps 40"')
    add_output(p)
    p.set_defaults(handler=cmd_tweak)

    p = sub.add_parser("compare", help="one seed, a parameter varied: a labelled X/Y grid",
                       description="Draw the same prompt and seed once per value of one parameter (or of two: "
                                   "rows and columns) and lay the images out in a labelled grid. Prints one "
                                   "line per cell (id, values, seed, file), then the grid's path.",
                       epilog='Example: brushwork compare "a lighthouse --seed 42" --vary cfg --values "3,7,12" '
                              '--vary2 sampler --values2 "euler_a | DPM++ 2M Karras". Values are separated by '
                              '"," (or "|" when a value contains commas); at most 8 per axis, 16 images in all.')
    p.add_argument("prompt", nargs="+", help=flags_help)
    p.add_argument("--vary", required=True, metavar="FLAG", help="the parameter of the columns: cfg, steps, "
                   "sampler, seed, strength, hires-steps, clip-skip, lora, vary-strength…")
    p.add_argument("--values", required=True, metavar="LIST", help='its values, e.g. "3,7,12"')
    p.add_argument("--vary2", metavar="FLAG", help="the parameter of the rows (optional)")
    p.add_argument("--values2", metavar="LIST", help="its values")
    p.add_argument("--model", help="model to use (see `brushwork models`)")
    p.add_argument("--out", type=Path, help="write the cells and the grid into this folder "
                   "(default: the grid in $BRUSHWORK_HOME/comparisons)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--progress", dest="progress", action="store_true", default=None,
                       help="show a progress bar even when stderr is not a terminal")
    group.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(handler=cmd_compare)

    p = sub.add_parser("show", help="an image's settings, infotext and Python code",
                       description="Show the recipe of an image id or of a PNG file.")
    p.add_argument("image", metavar="IMAGE", help="image id or PNG file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("history", help="your recent images, newest first")
    p.add_argument("--limit", type=_int_between(1, 100), default=20, metavar="N", help="1-100 (default 20)")
    p.add_argument("--before", metavar="ID", help="page: images older than this id")
    p.set_defaults(handler=cmd_history)

    p = sub.add_parser("samplers", help="the samplers and what they are good for")
    p.set_defaults(handler=cmd_samplers, needs_container=False)

    p = sub.add_parser("models", help="the models in the registry")
    p.set_defaults(handler=cmd_models)

    p = sub.add_parser("queue", help="waiting and running jobs, with position, progress and ETA",
                       description="The shared job queue: workers, then running jobs, then waiting ones in the "
                                   "order they will start (POS 1 is next; --json says \"position\": 1). ETAs come "
                                   "from runs measured on this machine, a model's first load counted apart; "
                                   "before a model has run here they are marked (estimate).")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_queue)

    p = sub.add_parser("cancel", help="cancel a job: a waiting one is dropped, a running one stops",
                       description="Cancel a job by id (shown by `brushwork queue`). A waiting job is removed; a "
                                   "running one stops at its next step, in whichever process runs it.")
    p.add_argument("job", metavar="JOB", help="job id, e.g. k3x9fq2a")
    p.set_defaults(handler=cmd_cancel)

    p = sub.add_parser("run", help="run the Discord bot (with the queue's worker) until Ctrl-C",
                       description="Start the Discord bot with the token from BRUSHWORK_DISCORD_TOKEN (or the "
                                   "settings file), the database, the job queue and its worker, in this process. "
                                   "Application commands are synced only when they changed.")
    p.add_argument("--sync", action="store_true", help="sync the application commands even if unchanged")
    p.set_defaults(handler=cmd_run, needs_container=False)

    p = sub.add_parser("db", help="database maintenance")
    db_sub = p.add_subparsers(dest="db_command", metavar="ACTION", parser_class=Parser, required=True)
    db_sub.add_parser("upgrade", help="upgrade the schema to the newest revision")
    db_sub.add_parser("current", help="show the schema revision")
    c = db_sub.add_parser("check", help="compare stored files with the database: stray files, missing files",
                          description="Lists files no row points to (left by a crash between writing a file and "
                                      "its row) and rows whose file is gone, for images, dataset images, server "
                                      "LoRAs and training folders. Nothing is changed without --clean.")
    c.add_argument("--clean", action="store_true", help="delete the stray files (checked again first)")
    c.add_argument("--grace-minutes", type=_int_between(0, 100_000), default=60, metavar="N",
                   help="files younger than this are never called stray: their row may be being written "
                        "(default: 60)")
    pg = db_sub.add_parser("purge", help="remove the files of images deleted (🗑) some days ago",
                           description="Images deleted in Discord (🗑) or with their owner's consent are hidden at "
                                       "once; their files stay until this removes them. The rows stay too (lineage, "
                                       "job results) without their pictures.")
    pg.add_argument("--days", type=_int_between(0, 36500), default=30, metavar="N",
                    help="only images deleted more than N days ago (default: 30; 0: all deleted images)")
    p.set_defaults(handler=cmd_db)

    from bot.lora_cli import add_lora_commands  # brushwork lora …: datasets, training, export, import

    add_lora_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    container = None
    try:
        if getattr(args, "needs_container", True):
            from bot.container import build_container
            from bot.settings import load_settings

            overrides = {"home": args.home} if args.home else {}
            container = build_container(load_settings(**overrides))
        return args.handler(container, args)
    except BrushworkError as exc:
        print(f"brushwork: {say(exc)}", file=sys.stderr)
        return EXIT_INTERNAL if exc.code in FAILURE_CODES else EXIT_USAGE
    except UsageError as exc:
        print(f"brushwork: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\nbrushwork: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `brushwork history | head`: the reader left, nothing is wrong

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # the last line of defence: one readable line, never a traceback
        from bot.settings import SettingsError
        from storage.errors import InvalidValue, NotFound, PermissionDenied

        if isinstance(exc, (SettingsError, InvalidValue, NotFound, PermissionDenied)):
            print(f"brushwork: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if args.debug:
            raise
        print(f"brushwork: internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
              file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        if container is not None:
            container.close()


if __name__ == "__main__":  # python -m bot.cli: run the importable module's main, whose error classes
    from bot.cli import main as _main  # (UsageError…) are the ones `bot.lora_cli` raises

    sys.exit(_main())
