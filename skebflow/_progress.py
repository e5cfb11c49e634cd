"""Progress bars: tqdm's (notebook-aware) when it is installed, else none."""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar"]


def progress_bar(total: int, description: str, unit: str, *, leave: bool) -> Any:
    """A ``tqdm.auto`` bar of ``total`` ``unit``\\ s, or ``None`` without tqdm (the
    caller then reports in lines of its own).

    Examples
    --------
    >>> from skebflow._progress import progress_bar
    >>> bar = progress_bar(3, "demo", "step", leave=False)
    >>> bar is None or bar.total == 3
    True
    >>> if bar is not None:
    ...     bar.close()
    """
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return tqdm(total=total, desc=description, unit=unit, leave=leave)
