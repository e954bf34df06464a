"""Expected failures of the train layer (`errors.UserError`: one `error:` line on the command line,
a `dagster.Failure` with the same line in the assets). Anything else is a bug."""

from __future__ import annotations

from ..errors import UserError


class TrainInputError(ValueError, UserError):
    """Bad input data / settings: a tokenized dataset with nothing to train on, held-out data with
    no usable prompt, a mapping for another vocabulary, an invalid configs/train.yaml."""


class TrainFileNotFound(FileNotFoundError, UserError):
    """A file or folder the command needs does not exist (names it and what to do)."""


class TargetLoadError(OSError, UserError):
    """The target model / tokenizer cannot be loaded from the given folder or id."""


def load_target_part(loader, target, what: str = "target model", **kw):
    """`loader.from_pretrained(target, **kw)` with a one-line error naming the folder when it
    cannot be loaded (missing folder, not a model folder, hub unreachable)."""
    try:
        return loader.from_pretrained(str(target), **kw)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TargetLoadError(
            f"cannot load the {what} from {str(target)!r}: {first[:300]} (pass a local model "
            "folder with config.json and tokenizer files, or set path in configs/target.yaml)"
        ) from e
