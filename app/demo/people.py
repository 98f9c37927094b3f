"""Demo people: fixed accounts (an administrator, two secretaries, twenty members with one
check-in each), the members' contributions, and a city client.

Every account signs in with the configured demo password (`demo_password`).  Organizations
are named by their key in `app.demo.places.ORGS`; members by their position in `MEMBERS`.
"""

from __future__ import annotations

from typing import NamedTuple

ADMIN_PHONE = "13900000000"
ADMIN_NAME = "系统管理员"
# phone -> (name, key of the organization whose secretary they are)
SECRETARIES = {
    "13900000001": ("力邦书记", "libang"),
    "13900000002": ("楼宇书记", "haishu-buildings"),
}
SECRETARY_POST_TITLE = "书记"


class MemberSpec(NamedTuple):
    """A member account and its one check-in.  The record organization (组织关系所在) is
    either a demo organization (`record_org`, a key) or one elsewhere (`record_org_name`)."""

    name: str
    gender: str
    party_status: str
    record_org: str | None
    record_org_name: str | None
    employer: str
    checkin_org: str
    checkin_status: str


MEMBERS: list[MemberSpec] = [
    MemberSpec(
        "王建国",
        "male",
        "full",
        "libang-machinery",
        None,
        "宁波力邦机械有限公司",
        "libang",
        "approved",
    ),
    MemberSpec(
        "李秀英",
        "female",
        "full",
        "xiwu-textile",
        None,
        "奉化西坞纺织有限公司",
        "libang",
        "approved",
    ),
    MemberSpec(
        "张伟",
        "male",
        "full",
        None,
        "贵州省毕节市七星关区某村党支部",
        "宁波力邦机械有限公司",
        "libang",
        "approved",
    ),
    MemberSpec(
        "刘洋",
        "female",
        "probationary",
        None,
        "四川省广安市某镇党委",
        "奉化西坞纺织有限公司",
        "libang",
        "approved",
    ),
    MemberSpec(
        "陈静",
        "male",
        "full",
        None,
        "江西省上饶市某村党支部",
        "宁波力邦电器有限公司",
        "libang",
        "pending",
    ),
    MemberSpec(
        "杨磊",
        "female",
        "full",
        "libang-electric",
        None,
        "宁波力邦电器有限公司",
        "libang-electric",
        "approved",
    ),
    MemberSpec(
        "赵敏",
        "male",
        "full",
        None,
        "安徽省阜阳市某村党支部",
        "宁波力邦电器有限公司",
        "libang",
        "pending",
    ),
    MemberSpec(
        "黄勇",
        "female",
        "full",
        None,
        "河南省信阳市某村党支部",
        "奉化西坞纺织有限公司",
        "libang",
        "pending",
    ),
    MemberSpec("周芳", "male", "full", "libang", None, "力邦村委会", "libang", "approved"),
    MemberSpec(
        "吴强",
        "female",
        "full",
        None,
        "湖南省邵阳市某村党支部",
        "宁波力邦机械有限公司",
        "libang",
        "approved",
    ),
    MemberSpec(
        "徐丽",
        "male",
        "probationary",
        "tianyi-tower",
        None,
        "宁波天一科技有限公司",
        "haishu-buildings",
        "approved",
    ),
    MemberSpec(
        "孙涛",
        "female",
        "full",
        "heyi-tower",
        None,
        "和义律师事务所",
        "haishu-buildings",
        "approved",
    ),
    MemberSpec(
        "胡军",
        "male",
        "full",
        None,
        "浙江省温州市鹿城区某企业党支部",
        "宁波天一科技有限公司",
        "tianyi-tower",
        "approved",
    ),
    MemberSpec(
        "朱琳",
        "female",
        "full",
        None,
        "江苏省南京市某社区党委",
        "甬商咨询有限公司",
        "haishu-buildings",
        "pending",
    ),
    MemberSpec(
        "高峰",
        "male",
        "full",
        "haishu-buildings",
        None,
        "海曙区商务楼宇服务中心",
        "haishu-buildings",
        "approved",
    ),
    MemberSpec(
        "林娜",
        "female",
        "full",
        None,
        "福建省宁德市某村党支部",
        "和义律师事务所",
        "heyi-tower",
        "pending",
    ),
    MemberSpec("何斌", "male", "full", "fenghua", None, "奉化区机关", "libang", "approved"),
    MemberSpec(
        "郭婷",
        "female",
        "probationary",
        None,
        "山东省临沂市某村党支部",
        "宁波力邦机械有限公司",
        "libang",
        "approved",
    ),
    MemberSpec(
        "马超",
        "male",
        "full",
        "nanmen",
        None,
        "南门街道社区服务中心",
        "haishu-buildings",
        "approved",
    ),
    MemberSpec(
        "罗霞",
        "female",
        "full",
        None,
        "重庆市万州区某村党支部",
        "宁波天一科技有限公司",
        "haishu-buildings",
        "approved",
    ),
]

# The note a member leaves with a check-in still waiting for a decision.
PENDING_CHECKIN_NOTE = "在力邦村居住，希望参加组织生活"


def member_phone(i: int) -> str:
    """The phone number (and sign-in name) of `MEMBERS[i]`."""
    return f"139000000{10 + i:02d}"


class ContributionSpec(NamedTuple):
    """A contribution of `MEMBERS[member]`, recorded with the organization they checked in
    to and, once decided, decided by its secretary."""

    member: int
    post: str
    category: str
    title: str
    days_ago: int
    hours: float
    status: str
    comment: str | None


CONTRIBUTIONS: list[ContributionSpec] = [
    ContributionSpec(
        0, "enterprise", "technical_innovation", "改进冲压模具，减少废品率", 10, 4, "approved", None
    ),
    ContributionSpec(
        0, "community", "volunteering", "协助新居民办理居住登记", 3, 2, "pending", None
    ),
    ContributionSpec(1, "community", "elder_care", "看望村里独居老人", 5, 1.5, "pending", None),
    ContributionSpec(2, "community", "patrol", "夜间治安巡逻", 7, 3, "pending", None),
    ContributionSpec(
        3, "enterprise", "safety", "车间安全隐患排查", 12, 2, "returned", "请补充现场照片"
    ),
    ContributionSpec(9, "enterprise", "mentoring", "带教两名新入职员工", 8, 2, "approved", None),
    ContributionSpec(10, "enterprise", "mentoring", "带教新入职员工", 4, 2, "pending", None),
    ContributionSpec(11, "community", "mediation", "调解楼宇租户纠纷", 6, 1, "approved", None),
]

DEMO_CLIENT_ID = "city-demo"
DEMO_CLIENT_NAME = "城市党建平台（演示）"
DEMO_CLIENT_SECRET = "demo-city-secret"  # noqa: S105  (documented demo credential)
DEMO_CLIENT_SCOPES = "orgs:read stats:read"
