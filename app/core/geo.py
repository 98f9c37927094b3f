"""Geometry on the Earth's surface: great-circle distance, `near=lat,lng` parsing, and the
planar estimates used in SQL (plain arithmetic, so identical on SQLite and PostgreSQL)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy import ColumnElement, or_
from sqlalchemy.orm import QueryableAttribute

from app.core.errors import ValidationFailed
from app.core.i18n import text

# A latitude or longitude column, nullable or not (a mapped attribute or a column expression).
Coordinate: TypeAlias = (
    "ColumnElement[float] | ColumnElement[float | None]"
    " | QueryableAttribute[float] | QueryableAttribute[float | None]"
)

EARTH_RADIUS_M = 6_371_008.8
METRES_PER_DEGREE = EARTH_RADIUS_M * math.pi / 180  # about 111,195 m


@dataclass(frozen=True)
class Near:
    """A point (degrees) and a radius in metres around it."""

    lat: float
    lng: float
    radius_m: float


def distance_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle (haversine) distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


# `lat,lng` in decimal degrees, latitude in -90..90 and longitude in -180..180: the whole rule,
# so that the OpenAPI document declares exactly what `parse_near` accepts.
_LAT = r"-?(?:90(?:\.0+)?|[1-8]?[0-9](?:\.[0-9]+)?)"
_LNG = r"-?(?:180(?:\.0+)?|(?:1[0-7][0-9]|[1-9]?[0-9])(?:\.[0-9]+)?)"
NEAR_PATTERN = f"^{_LAT},{_LNG}$"


def parse_near(near: str | None, radius_km: float | None, *, default_km: float) -> Near | None:
    """`near=lat,lng` (degrees) with an optional `radius_km`; None without `near`.
    422 `validation_error` naming the parameter at fault: a malformed or out-of-range point
    (`near`), a radius without a point (`radius_km`)."""
    if near is None:
        if radius_km is not None:
            raise ValidationFailed("radius_km", text("需与 near 一起使用", "radius_km needs near"))
        return None
    parts = near.split(",")
    try:
        if len(parts) != 2:
            raise ValueError(near)
        lat, lng = float(parts[0]), float(parts[1])
    except ValueError as exc:
        raise ValidationFailed("near", text("格式应为 纬度,经度", "Expected near=lat,lng")) from exc
    if not (math.isfinite(lat) and -90 <= lat <= 90):
        raise ValidationFailed("near", text("纬度应在 -90 到 90 之间", "lat must be in -90..90"))
    if not (math.isfinite(lng) and -180 <= lng <= 180):
        raise ValidationFailed(
            "near", text("经度应在 -180 到 180 之间", "lng must be in -180..180")
        )
    km = radius_km if radius_km is not None else default_km
    return Near(lat=lat, lng=lng, radius_m=km * 1000)


def planar_distance_sq(lat: Coordinate, lng: Coordinate, lat0: float, lng0: float) -> Any:
    """Squared distance in m² on the equirectangular projection around (lat0, lng0): within
    0.1 % of the great circle at the scale of a city; for ORDER BY and pre-filtering."""
    k_lng = METRES_PER_DEGREE * max(math.cos(math.radians(lat0)), 0.01)
    dy = (lat - lat0) * METRES_PER_DEGREE
    dx = (lng - lng0) * k_lng
    return dy * dy + dx * dx


def bounding_box(lat: Coordinate, lng: Coordinate, near: Near) -> list[ColumnElement[bool]]:
    """WHERE clauses for a box around the circle (index-friendly), across the antimeridian
    and over the poles too."""
    dlat = near.radius_m / METRES_PER_DEGREE
    where: list[Any] = [lat.between(near.lat - dlat, near.lat + dlat)]
    cos_lat = math.cos(math.radians(near.lat))
    if abs(near.lat) + dlat < 90 and cos_lat > 0:
        dlng = dlat / cos_lat
        if dlng < 180:
            low, high = near.lng - dlng, near.lng + dlng
            if low < -180:  # the box crosses the antimeridian
                where.append(or_(lng >= low + 360, lng <= high))
            elif high > 180:
                where.append(or_(lng >= low, lng <= high - 360))
            else:
                where.append(lng.between(low, high))
    else:  # a polar cap: every longitude
        where.append(lng.is_not(None))
    return where
