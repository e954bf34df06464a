"""Expected failures in an asset step: one clear message, not a Python traceback.

`expected_failures()` turns a `UserError` (bad input, refused setting, missing file, full disk:
see `specforge_assets.errors.user_message`) raised by the domain code into `dagster.Failure`
with that one line as its description (secrets redacted), so the run page says what is wrong
and what to do. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib

import dagster as dg

from ..errors import user_message


@contextlib.contextmanager
def expected_failures():
    try:
        yield
    except dg.Failure:
        raise
    except Exception as e:  # noqa: BLE001 - classified by user_message; bugs re-raised unchanged
        msg = user_message(e)
        if msg is None:
            raise
        raise dg.Failure(description=msg, allow_retries=False) from None
