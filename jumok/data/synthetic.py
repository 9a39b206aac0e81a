"""Seeded generators for the book's two toy tasks (demo data and tests).

* ``date`` (Deep Learning from Scratch 2, ch. 8): a date written by a person -> ``YYYY-MM-DD``.
  Covers every input format of the book's ``date.txt``: ``Month D, YYYY`` with full or three-letter
  month (``september 27, 1994``, ``Sep 27, 1994``), the same preceded by the weekday
  (``TUESDAY, SEPTEMBER 27, 1994``), and ``M/D/YY`` (``9/27/94``, ``6/3/73``); each word format
  in lower, Title and UPPER case; dates from 1970-01-01 to 2017-12-31. With ``extra_formats``
  jumok adds formats of its own: day-first (``27 September 1994``), ISO-like (``1994.09.27``,
  ``1994/9/27``) and Korean (``1994년 9월 27일``).
* ``addition`` (ch. 7): ``a+b`` with a, b in 0..999 -> the sum (``16+75`` -> ``91``).

Generated pairs are distinct by source, and :func:`split` cuts them into train/dev/test so that
no test source occurs in train (the book's own split leaks 28% of its test set into training,
because its ``date.txt`` repeats lines).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable

Pair = tuple[str, str]

FIRST_DAY = dt.date(1970, 1, 1)
LAST_DAY = dt.date(2017, 12, 31)
MONTHS = [dt.date(2000, m, 1).strftime("%B") for m in range(1, 13)]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _month_d_yyyy(d: dt.date) -> str:  # september 27, 1994
    return f"{MONTHS[d.month - 1]} {d.day}, {d.year}"


def _mon_d_yyyy(d: dt.date) -> str:  # Sep 27, 1994
    return f"{MONTHS[d.month - 1][:3]} {d.day}, {d.year}"


def _weekday_month_d_yyyy(d: dt.date) -> str:  # TUESDAY, SEPTEMBER 27, 1994
    return f"{WEEKDAYS[d.weekday()]}, {_month_d_yyyy(d)}"


def _m_d_yy(d: dt.date) -> str:  # 9/27/94
    return f"{d.month}/{d.day}/{d.year % 100:02d}"


def _d_month_yyyy(d: dt.date) -> str:  # 27 September 1994 (jumok's own)
    return f"{d.day} {MONTHS[d.month - 1]} {d.year}"


def _iso_dots(d: dt.date) -> str:  # 1994.09.27 (jumok's own)
    return f"{d.year}.{d.month:02d}.{d.day:02d}"


def _iso_slashes(d: dt.date) -> str:  # 1994/9/27 (jumok's own)
    return f"{d.year}/{d.month}/{d.day}"


def _korean(d: dt.date) -> str:  # 1994년 9월 27일 (jumok's own)
    return f"{d.year}년 {d.month}월 {d.day}일"


_CASES: list[Callable[[str], str]] = [str.lower, str.title, str.upper]
# (format, whether it has letters and so comes in three cases)
BOOK_FORMATS = [
    (_month_d_yyyy, True),
    (_mon_d_yyyy, True),
    (_weekday_month_d_yyyy, True),
    (_m_d_yy, False),
]
EXTRA_FORMATS = [
    (_d_month_yyyy, True),
    (_iso_dots, False),
    (_iso_slashes, False),
    (_korean, False),
]


def date_pair(day: dt.date, rng: random.Random, extra_formats: bool = False) -> Pair:
    """One (human date, ISO date) pair in a randomly chosen format and case."""
    formats = BOOK_FORMATS + (EXTRA_FORMATS if extra_formats else [])
    fmt, has_letters = rng.choice(formats)
    text = fmt(day)
    if has_letters:
        text = rng.choice(_CASES)(text)
    return text, day.isoformat()


def addition_pair(rng: random.Random) -> Pair:
    """One ``a+b`` -> sum pair with a, b in 0..999."""
    a, b = rng.randint(0, 999), rng.randint(0, 999)
    return f"{a}+{b}", str(a + b)


def capacity(task: str, extra_formats: bool = False) -> int:
    """How many distinct sources ``task`` has: no ``size`` beyond it can be generated.

    Dates are counted by writing every day in every format and case (a quarter of a second):
    some spellings coincide (``May 1, 2000`` is both ``Month D, YYYY`` and ``Mon D, YYYY``).
    """
    if task == "addition":
        return 1000 * 1000
    formats = BOOK_FORMATS + (EXTRA_FORMATS if extra_formats else [])
    days = [FIRST_DAY + dt.timedelta(days=n) for n in range((LAST_DAY - FIRST_DAY).days + 1)]
    spellings = {
        case(fmt(day)) if has_letters else fmt(day)
        for fmt, has_letters in formats
        for case in _CASES
        for day in days
    }
    return len(spellings)


def generate(task: str, size: int, seed: int, extra_formats: bool = False) -> list[Pair]:
    """``size`` pairs with distinct sources, reproducible from ``seed``.

    Raises:
        ValueError: ``size`` exceeds the task's :func:`capacity`, or the draws stop finding new
            sources (an unknown task).
    """
    if task in ("date", "addition") and size > 100_000:  # small sizes always fit: skip the count
        most = capacity(task, extra_formats)
        if size > most:
            raise ValueError(
                f"{size:,} distinct {task} pairs asked for, but the {task} task has only "
                f"{most:,} distinct inputs; ask for at most that many"
            )
    rng = random.Random(seed)
    span = (LAST_DAY - FIRST_DAY).days
    seen: set[str] = set()
    pairs: list[Pair] = []
    attempts = 0
    while len(pairs) < size:
        attempts += 1
        if attempts > 50 * size + 1000:
            raise ValueError(f"cannot generate {size} distinct {task} pairs; ask for fewer")
        if task == "date":
            day = FIRST_DAY + dt.timedelta(days=rng.randint(0, span))
            pair = date_pair(day, rng, extra_formats)
        elif task == "addition":
            pair = addition_pair(rng)
        else:
            raise ValueError(f"unknown task {task!r}; expected 'date' or 'addition'")
        if pair[0] not in seen:
            seen.add(pair[0])
            pairs.append(pair)
    return pairs


def split(pairs: list[Pair], dev_size: int, test_size: int, seed: int) -> dict[str, list[Pair]]:
    """Shuffle distinct pairs and cut them into ``train``, ``dev`` and ``test``."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    shuffled = [pairs[i] for i in order]
    test = shuffled[:test_size]
    dev = shuffled[test_size : test_size + dev_size]
    train = shuffled[test_size + dev_size :]
    return {"train": train, "dev": dev, "test": test}
