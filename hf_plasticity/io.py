"""Safe output files: checked before long work starts, written atomically, never onto an input or each other.

A crash or a bad path never leaves a user's file half-written or lost, and an unusable path is reported
(naming the user's path, never a hidden temporary file) before anything slow runs.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import OutputPathError

PathLike = str | os.PathLike[str]


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it into place in one step."""
    target = Path(path).expanduser()
    check_output_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _unwritable(target, "path", exc) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp creates owner-only files: give the result the mode a plain open() would (or the old file's)
        tmp.chmod(target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask())
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise _unwritable(target, "path", exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: PathLike, text: str) -> Path:
    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    return atomic_write(path, write)


def check_output_path(path: PathLike, label: str = "path") -> Path:
    """Fail now, with the fix, if ``path`` cannot become a file: a folder, under a file, or not writable."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise OutputPathError(
            f"{label} {str(path)!r} is a folder; pass a file path, e.g. {str(target / 'report.json')!r}"
        )
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(
            f"cannot write {label} {str(path)!r}: {str(ancestor)!r} is a file, not a folder; choose another path"
        )
    try:  # a real write (not os.access): root, read-only mounts and ACLs all answer truthfully
        with tempfile.TemporaryFile(dir=ancestor, prefix=".hf-plasticity-probe."):
            pass
    except OSError as exc:
        raise _unwritable(target, label, exc) from exc
    return target


def check_output_paths(outputs: Mapping[str, PathLike | None], inputs: Iterable[PathLike | None] = ()) -> None:
    """Check every output before work starts: each writable, no two the same file, none an input's file.

    ``outputs`` maps a label the user knows (``"--out"``) to a path. An output equal to an input, or to an
    existing file inside an input folder (a checkpoint's ``config.json``), would destroy the user's data.
    """
    seen: dict[Path, str] = {}
    for label, path in outputs.items():
        if path is None:
            continue
        target = check_output_path(path, label)
        key = target.resolve()
        if key in seen:
            raise OutputPathError(
                f"{seen[key]} and {label} both name {str(path)!r}: one would overwrite the other; "
                "give them different file names"
            )
        seen[key] = label
    for source in inputs:
        if source is None:
            continue
        src = Path(source).expanduser()
        if not src.exists():
            continue
        src = src.resolve()
        for key, label in seen.items():
            if key == src or (src.is_dir() and key.is_file() and src in key.parents):
                raise OutputPathError(
                    f"{label} {str(key)!r} would overwrite the input {str(source)!r}; write it somewhere else"
                )


def figure_format(path: PathLike, label: str = "path") -> str:
    """The matplotlib format a figure path asks for (no suffix: PNG); an unsupported suffix fails now."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(path).suffix.lstrip(".").lower() or "png"
    supported = FigureCanvasBase.get_supported_filetypes()
    if suffix not in supported:
        raise OutputPathError(
            f"{label} {str(path)!r}: matplotlib cannot write {suffix!r} figures; use one of "
            f"{', '.join('.' + s for s in sorted(supported))} (e.g. .png, .svg or .pdf)"
        )
    return suffix


def _unwritable(target: Path, label: str, exc: OSError) -> OutputPathError:
    reason = exc.strerror or type(exc).__name__
    return OutputPathError(
        f"cannot write {label} {str(target)!r} ({reason}); choose a folder you can write to, or fix its permissions"
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def jsonable(value: Any, *, digits: int | None = None) -> Any:
    """A strict-JSON (and YAML) copy: numpy and torch values as plain numbers and lists, NaN and infinities as null.

    The one sanitiser for everything this package writes as JSON (reports, metrics, results, card metadata).
    Mappings get string keys, tuples and sets become lists, named tuples dicts, anything else its ``str``.
    ``digits`` rounds floats to that many significant digits (stable card metadata).
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, digits=digits) for k, v in value.items()}
    if hasattr(value, "_asdict"):
        return jsonable(value._asdict(), digits=digits)
    if isinstance(value, list | tuple | set):
        return [jsonable(v, digits=digits) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return jsonable(value.tolist(), digits=digits)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.{digits}g}") if digits else value
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


class BothSpellings:
    """Argument-parser mixin: every multi-word flag in both spellings, help showing the hyphenated one.

    ``--num-pairs`` and ``--num_pairs`` name the same option on every ``hf-plasticity`` command, as they do
    for ``HfArgumentParser`` (whose dataclass fields are written with underscores); a user never has to remember
    which command takes which. Mixed into an ``argparse.ArgumentParser`` or an ``HfArgumentParser``.
    """

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action:
        return _add_both_spellings(super().add_argument, names, kwargs)  # type: ignore[misc]

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        return _taking_both_spellings(super().add_argument_group(*args, **kwargs))  # type: ignore[misc]

    def add_mutually_exclusive_group(self, *args: Any, **kwargs: Any) -> Any:
        return _taking_both_spellings(super().add_mutually_exclusive_group(*args, **kwargs))  # type: ignore[misc]


def _add_both_spellings(add: Any, names: Sequence[str], kwargs: dict[str, Any]) -> argparse.Action:
    shown = list(dict.fromkeys(_hyphenated(n) for n in names))
    aliases = ["--" + n[2:].replace("-", "_") for n in shown if n.startswith("--") and "-" in n[2:]]
    action: argparse.Action = add(*shown, **kwargs)
    if aliases:
        hidden = {**kwargs, "dest": action.dest, "help": argparse.SUPPRESS, "default": argparse.SUPPRESS}
        hidden["required"] = False
        add(*aliases, **hidden)
    return action


def _taking_both_spellings(group: Any) -> Any:
    """An argument group (or mutually exclusive group) of a :class:`BothSpellings` parser takes both too."""
    add = group.add_argument
    group.add_argument = lambda *names, **kwargs: _add_both_spellings(add, names, kwargs)
    return group


class FlagParser(BothSpellings, argparse.ArgumentParser):
    """``argparse.ArgumentParser`` taking ``--num-pairs`` and ``--num_pairs`` alike (see :class:`BothSpellings`)."""


def _hyphenated(name: str) -> str:
    return "--" + name[2:].replace("_", "-") if name.startswith("--") else name


def add_output_dir_argument(parser: argparse.ArgumentParser, default: Path | None, what: str) -> None:
    """``--output-dir`` (the Hugging Face spelling), with ``--out-dir`` and ``--output_dir`` as hidden aliases.

    Every command that writes a folder takes this one flag; single files keep ``--out``/``--plot``.
    """
    shown = f"{what} (default: {default})" if default is not None else what
    parser.add_argument("--output-dir", dest="output_dir", type=Path, default=default, help=shown)
    aliases = ["--out-dir"] if isinstance(parser, BothSpellings) else ["--out-dir", "--output_dir"]
    for alias in aliases:
        parser.add_argument(alias, dest="output_dir", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
