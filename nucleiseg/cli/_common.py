"""What every command shares: the ``nucleiseg`` group, progress bars, logging, errors as one
line, and click options derived from the configuration dataclasses (one source of defaults)."""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import typing
from typing import Any, Callable, Iterable, Literal

import click

from ..errors import NucleisegError
from ..hardware import PRECISIONS
from ..inference import DEFAULT_DIAMETER, DEFAULT_PRECISION
from ..progress import parse_sized

DEVICES = ("auto", "cpu", "cuda")


def fail(message: str) -> typing.NoReturn:
    """Stop the command with ``message`` as one line (exit status 1)."""
    raise click.ClickException(message)


class _Group(click.Group):
    """Unexpected errors become one line (with their type) unless --verbose asks for the traceback;
    nucleiseg's own errors (bad files, bad options) are always one line."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except NucleisegError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            if (ctx.obj or {}).get("verbose"):
                raise
            raise click.ClickException(f"{type(exc).__name__}: {exc} (--verbose shows the traceback)") from None


class _TqdmHandler(logging.Handler):
    """Log records as lines on stderr, written around any progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


def _setup_logging() -> None:
    """nucleiseg's log messages (INFO and above) on stderr, once per process."""
    log = logging.getLogger("nucleiseg")
    log.handlers = [h for h in log.handlers if not isinstance(h, _TqdmHandler)]
    log.addHandler(_TqdmHandler())
    log.setLevel(logging.INFO)
    log.propagate = False


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="nucleiseg")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.pass_context
def main(ctx: click.Context, quiet: bool, verbose: bool) -> None:
    """Find every cell nucleus in microscopy images and give each its own label.

    \b
    Example:
      nucleiseg predict -o out          # bundled model on the bundled sample images
      nucleiseg -q score truth/ out/    # no progress bars
    """
    ctx.obj = {"quiet": quiet, "verbose": verbose}
    _setup_logging()


#: The bar of a slide's blocks, counted in megapixels: "slide  45%|####  | 121/269 Mpx [00:30<00:36, 4.03Mpx/s]".
SLIDE_BAR = "{desc} {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}, {rate_fmt}]"


def progress_bar(unit: str = "image", description: str | None = None, **tqdm_options) -> Callable:
    """A :class:`~nucleiseg.progress.Progress` drawing a tqdm bar on stderr (none with --quiet);
    ``description`` replaces the one the library gives, except for the blocks of a slide
    (:func:`~nucleiseg.inference.blockwise.predict_blockwise`), which get a bar of their own."""
    from tqdm import tqdm

    ctx = click.get_current_context(silent=True)
    quiet = bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("quiet"))

    def progress(items: Iterable, total: int | None = None, given: str = "") -> Iterable:
        sized = parse_sized(given)
        if sized and sized[0] == "blocks":  # the blocks of one slide, under the bar of the images: a bar of its
            # own, in megapixels (each block counts for the mean of the blocks), with the rate and an ETA
            return tqdm(items, total=total, desc="slide", unit=sized[2], unit_scale=sized[1], file=sys.stderr,
                        disable=quiet, leave=False, bar_format=SLIDE_BAR)
        return tqdm(items, total=total, desc=description or given, unit=unit, file=sys.stderr, disable=quiet,
                    **tqdm_options)

    return progress


def device_option(function: Callable) -> Callable:
    return click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                        help="Where the network runs: auto = CUDA when available, else CPU.")(function)


def precision_option(function: Callable) -> Callable:
    return click.option("--precision", type=click.Choice(PRECISIONS), default=DEFAULT_PRECISION, show_default=True,
                        help="The network's arithmetic: auto = bf16 autocast on CUDA and on CPUs with AMX or "
                        "AVX512-BF16 (faster there), float32 elsewhere; the diameter estimate is float32 "
                        "always.")(function)


# ---------------------------------------------------------------- options from dataclasses


def field_docs(cls: type) -> dict[str, str]:
    """{field: description} from the numpydoc "Attributes" section of ``cls``'s docstring."""
    doc = typing.cast(str, cls.__doc__ or "")
    section = doc.split("Attributes\n", 1)[-1]
    docs: dict[str, list[str]] = {}
    current: list[str] = []
    for line in section.splitlines()[1:]:
        match = re.match(r"^    (\w+(?:, \w+)*) :", line)
        if match:
            current = []
            for name in match.group(1).split(", "):
                docs[name] = current
        elif line.startswith("        ") and line.strip():
            current.append(line.strip())
        elif line.strip() and not line.startswith(" "):
            break
    return {name: " ".join(words) for name, words in docs.items()}


def _option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def dataclass_options(cls: type, exclude: Iterable[str] = ()) -> Callable:
    """A decorator adding one click option per field of dataclass ``cls`` (except ``exclude``):
    its type, default and choices from the field, its help from the class docstring. Booleans
    become flags (``--x`` when False by default, ``--x/--no-x`` when True); ``tuple[int, ...]``
    becomes a comma-separated list; ``Literal`` a choice; ``X | None`` an optional X."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    decorators = []
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        kind, args = hints[f.name], typing.get_args(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        opts: dict[str, Any] = {"help": docs.get(f.name, ""), "show_default": default is not None}
        if kind is bool:
            decls = [_option_name(f.name) + (f"/--no-{f.name.replace('_', '-')}" if default else "")]
            opts.update(is_flag=True, default=default)
        elif typing.get_origin(kind) is Literal:
            decls = [_option_name(f.name)]
            opts.update(type=click.Choice(args), default=default)
        elif typing.get_origin(kind) is tuple:
            decls = [_option_name(f.name)]
            opts.update(type=str, default=",".join(map(str, default)), metavar="N,N,...")
        else:
            base = next((a for a in args if a is not type(None)), kind)
            decls = [_option_name(f.name)]
            opts.update(type=base, default=default)
        decorators.append(click.option(*decls, f.name, **opts))

    def decorate(function: Callable) -> Callable:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return decorate


def build_dataclass(cls: type, values: dict[str, Any]):
    """An instance of dataclass ``cls`` from the options :func:`dataclass_options` added (other
    keys of ``values`` are ignored)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        if typing.get_origin(hints[f.name]) is tuple and isinstance(value, str):
            element = typing.get_args(hints[f.name])[0]
            try:
                value = tuple(element(v) for v in value.split(",") if v.strip())
            except ValueError:
                fail(f"{_option_name(f.name)} must be comma-separated {element.__name__} values, got {value!r}")
        kwargs[f.name] = value
    return cls(**kwargs)


class Diameter(click.ParamType):
    """A nucleus diameter in pixels (> 0), "auto" to estimate it, or "none" (None) for no rescaling."""

    name = "PX|auto|none"

    def convert(self, value, param, ctx):
        if value is None or value == "auto":
            return value
        if value == "none":
            return None
        try:
            number = float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number of pixels nor 'auto' or 'none'", param, ctx)
        if not number > 0:
            self.fail(f"a diameter must be > 0 pixels, got {value}", param, ctx)
        return number


def diameter_option(function: Callable) -> Callable:
    return click.option("--diameter", type=Diameter(), default=DEFAULT_DIAMETER, show_default=True,
                        help="Typical nucleus diameter of the images in pixels, or 'auto' to estimate it per image "
                        "from a first pass: images are rescaled so their nuclei match the model's training nuclei. "
                        "'none' predicts at the original scale.")(function)
