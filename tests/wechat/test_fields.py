"""Template values: rendered in local time and cut to WeChat's limits."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from app.integrations.wechat.fields import LIMITS, cut, field_type, render


@pytest.mark.parametrize(
    ("key", "kind"),
    [("thing1", "thing"), ("phrase12", "phrase"), ("character_string3", "character_string")],
)
def test_field_type(key: str, kind: str) -> None:
    assert field_type(key) == kind


def test_thing_is_cut_to_twenty_with_an_ellipsis() -> None:
    text = "一二三四五六七八九十" * 3
    assert cut("thing1", text) == text[:19] + "…"
    assert len(cut("thing1", text)) == LIMITS["thing"] == 20
    assert cut("thing1", text[:20]) == text[:20]


def test_other_types_are_cut_to_their_limit() -> None:
    assert cut("phrase2", "审核未通过了") == "审核未通过"
    assert cut("name3", "欧阳" * 8) == ("欧阳" * 8)[:10]
    assert cut("unknown9", "x" * 100) == "x" * 100


def test_render_times_in_shanghai_and_placeholders() -> None:
    at = datetime(2026, 11, 25, 16, 30, tzinfo=UTC)  # 00:30 the next day in Shanghai
    assert render("time4", at) == "2026年11月26日 00:30"
    assert render("date2", at) == "2026年11月26日"
    assert render("date2", date(2026, 1, 2)) == "2026年1月2日"
    assert render("thing3", None) == "无"
    assert render("thing3", "a\nb") == "a b"
    assert render("number1", 2.5) == "2.5"
