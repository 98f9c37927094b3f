"""The problem codes of activities (status, zh-CN title, English title).

Registered when the package is imported; a service module imports this one before it
raises any of them.  `not_registered` (sign-up refused by visibility) belongs to the access
policy in `app.authz.activities`.
"""

from __future__ import annotations

from app.core.errors import register_codes

register_codes(
    {
        # sign-ups
        "already_signed_up": (
            409,
            "您已报名该活动",
            "You have already signed up for this activity",
        ),
        "signup_closed": (409, "报名已截止或活动已开始", "Sign-up for this activity is closed"),
        # lifecycle
        "capacity_below_confirmed": (
            409,
            "名额不能少于已确认报名人数",
            "The capacity cannot be below the number of confirmed sign-ups",
        ),
        "activity_started": (409, "活动已开始，不能发布", "The activity has already started"),
        "activity_not_started": (409, "活动尚未开始", "The activity has not started yet"),
        # attendance
        "not_confirmed": (
            409,
            "没有已确认的报名，不能签到",
            "There is no confirmed sign-up for this activity",
        ),
        "attendance_closed": (
            409,
            "不在签到时间内（活动开始前30分钟至活动结束）",
            "Outside the check-in window (30 minutes before the start until the end)",
        ),
        "attendance_code_invalid": (
            422,
            "签到码无效或已过期",
            "The attendance code is not valid or has expired",
        ),
        "location_inaccurate": (
            422,
            "定位精度不足，请到开阔处重新定位或扫码签到",
            "The location fix is not accurate enough; retry or scan the code",
        ),
        "outside_geofence": (422, "不在活动签到范围内", "Not within the activity's check-in area"),
        "scan_too_old": (
            422,
            "签到时间距今超过24小时，不能补交",
            "Check-ins may be sent at most 24 hours late",
        ),
        "attendance_decided": (
            409,
            "组织已登记您缺席，请联系活动负责人",
            "An officer has recorded you as absent; contact the organizer",
        ),
    }
)
