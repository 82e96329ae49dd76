"""Filters in people's terms: when a photo was taken, near which place, with which camera.

Each becomes the Milvus expression a user could have written with ``--filter`` (:meth:`PhotoFilter.expression`),
over the EXIF fields of :mod:`vitsearch.exif`; rows without the field never match. ``near`` also needs
an exact check that Milvus cannot do (:meth:`PhotoFilter.accepts`): the expression is the bounding box
of the circle, and the rows in its corners are dropped after the search.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timezone

from .errors import UsageError
from .exif import CAMERA_WORDS, words_of
from .store import quote

EARTH_RADIUS_KM = 6371.0088  # the mean radius (IUGG)
_SLACK = 1e-9  # degrees added around a box, so that rounding never drops a row on its edge

TimeInput = str | int | float | date | datetime
NearInput = str | Sequence[float]


# Epoch seconds of the first and last second of years 1 to 9999 (what a date can name; Milvus filters
# take 64-bit integers, and a number beyond them is no date).
_FIRST_SECOND, _LAST_SECOND = -62_135_596_800, 253_402_300_799


def parse_time(value: TimeInput, what: str = "time") -> int:
    """Epoch seconds of a date or time: '2024-06-01', '2024-06-01T18:30', '2024-06-01 18:30+02:00',
    a ``date``/``datetime``, or epoch seconds (of years 1 to 9999). Without an offset a time is read as
    UTC (as are photos whose EXIF gives none)."""
    seconds = _epoch_seconds(value, what)
    if not _FIRST_SECOND <= seconds <= _LAST_SECOND:
        raise UsageError(f"{what}: {value!r} is out of range (epoch seconds from {_FIRST_SECOND} to {_LAST_SECOND}, "
                         "the years 1 to 9999)")
    return seconds


def _epoch_seconds(value: TimeInput, what: str) -> int:
    if isinstance(value, bool):
        raise UsageError(f"{what}: {value!r} is not a date or time")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise UsageError(f"{what}: {value!r} is not a date or time")
        return math.floor(value)
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, date):
        when = datetime.combine(value, time())
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+", text):
            return int(text)
        try:
            when = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" and text else text)
        except ValueError:
            raise UsageError(
                f"{what}: {value!r} is not a date or time (e.g. 2024-06-01, 2024-06-01T18:30 or 2024-06-01T18:30+02:00)"
            ) from None
    else:
        raise UsageError(f"{what}: {value!r} is not a date or time")
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return math.floor(when.timestamp())


@dataclass(frozen=True)
class Near:
    lat: float
    lon: float
    km: float

    @classmethod
    def parse(cls, value: NearInput) -> Near:
        """'LAT,LON,KM' or (lat, lon, km): decimal degrees (north and east positive) and a radius in km."""
        parts = value.split(",") if isinstance(value, str) else list(value)
        try:
            lat, lon, km = (float(p) for p in parts)
        except (TypeError, ValueError):
            raise UsageError(f"near: {value!r} is not LAT,LON,KM (e.g. 48.8584,2.2945,5)") from None
        if not (math.isfinite(lat) and -90 <= lat <= 90):
            raise UsageError(f"near: latitude {lat} is not between -90 and 90")
        if not (math.isfinite(lon) and -180 <= lon <= 180):
            raise UsageError(f"near: longitude {lon} is not between -180 and 180")
        if not (math.isfinite(km) and km > 0):
            raise UsageError(f"near: the radius must be a positive number of km, not {km}")
        return cls(lat, lon, km)

    def distance_km(self, lat: float, lon: float) -> float:
        """Great-circle (haversine) distance from the centre to (lat, lon)."""
        p1, p2 = math.radians(self.lat), math.radians(lat)
        dp, dl = p2 - p1, math.radians(lon - self.lon)
        h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
        return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))

    def box(self) -> str:
        """The Milvus expression of the smallest latitude/longitude box around the circle; a box that
        crosses the antimeridian is two longitude ranges, and one that reaches a pole spans every longitude."""
        angle = self.km / EARTH_RADIUS_KM  # radians of arc
        dlat = math.degrees(angle)
        south, north = self.lat - dlat - _SLACK, self.lat + dlat + _SLACK
        parts = [f"gps_lat >= {max(-90.0, south):.9f}", f"gps_lat <= {min(90.0, north):.9f}"]
        cos_lat = math.cos(math.radians(self.lat))
        if north < 90 and south > -90 and math.sin(angle) < cos_lat and angle < math.pi / 2:
            dlon = math.degrees(math.asin(math.sin(angle) / cos_lat)) + _SLACK
            west, east = self.lon - dlon, self.lon + dlon
            if west < -180:
                parts.append(f"(gps_lon >= {west + 360:.9f} or gps_lon <= {east:.9f})")
            elif east > 180:
                parts.append(f"(gps_lon >= {west:.9f} or gps_lon <= {east - 360:.9f})")
            else:
                parts += [f"gps_lon >= {west:.9f}", f"gps_lon <= {east:.9f}"]
        else:
            parts.append("(gps_lon >= -180 and gps_lon <= 180)")  # a pole inside: any longitude, but one is needed
        return " and ".join(parts)


@dataclass(frozen=True)
class PhotoFilter:
    """``taken_after`` <= taken_at < ``taken_before`` (epoch seconds), within ``near``, ``camera`` words."""

    taken_after: int | None = None
    taken_before: int | None = None
    near: Near | None = None
    camera: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        *,
        taken_after: TimeInput | None = None,
        taken_before: TimeInput | None = None,
        near: NearInput | Near | None = None,
        camera: str | None = None,
    ) -> PhotoFilter:
        """From what people type; raises ValueError saying what is wrong."""
        after = parse_time(taken_after, "taken_after") if taken_after not in (None, "") else None
        before = parse_time(taken_before, "taken_before") if taken_before not in (None, "") else None
        if after is not None and before is not None and before <= after:
            raise UsageError(f"taken_before ({taken_before}) must be later than taken_after ({taken_after})")
        where = near if isinstance(near, Near) or near in (None, "") else Near.parse(near)
        words = tuple(words_of(camera)) if camera else ()
        if camera and not words:
            raise UsageError(f"camera: {camera!r} has no letters or digits to match")
        return cls(after, before, where or None, words)

    def __bool__(self) -> bool:
        return self.taken_after is not None or self.taken_before is not None or self.near is not None or bool(self.camera)

    def expression(self) -> str:
        """The Milvus expression of this filter ('' when empty)."""
        parts = []
        if self.taken_after is not None:
            parts.append(f"taken_at >= {self.taken_after}")
        if self.taken_before is not None:
            parts.append(f"taken_at < {self.taken_before}")
        if self.near is not None:
            parts.append(self.near.box())
        if self.camera:
            parts.append(f"json_contains_all({CAMERA_WORDS}, [{', '.join(quote(w) for w in self.camera)}])")
        return " and ".join(parts)

    def combine(self, filter: str | None) -> str | None:
        """``filter`` and this filter's expression, both holding; None when neither says anything."""
        mine = self.expression()
        theirs = (filter or "").strip()
        if mine and theirs:
            return f"({theirs}) and {mine}"
        return mine or theirs or None

    @property
    def exact(self) -> bool:
        """Whether the expression alone selects exactly the right rows (``near`` needs :meth:`accepts`)."""
        return self.near is None

    def accepts(self, row: dict) -> bool:
        """The check the expression cannot make: the row lies within ``near``'s radius."""
        if self.near is None:
            return True
        lat, lon = row.get("gps_lat"), row.get("gps_lon")
        if not isinstance(lat, (int, float)) or not isinstance(lon, (int, float)):
            return False
        return self.near.distance_km(float(lat), float(lon)) <= self.near.km
