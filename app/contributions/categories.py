"""The categories of each post: codes are the API's words, names (zh-CN and English) are for
pickers and spreadsheets."""

from __future__ import annotations

from typing import NamedTuple

from app.contributions.schemas import CategoriesRead, CategoryRead, PostCategories
from app.core.i18n import current_lang
from app.models.activity import Post


class Category(NamedTuple):
    code: str
    name_zh: str
    name_en: str


CATEGORIES: dict[Post, tuple[Category, ...]] = {
    # 企业职责岗
    Post.enterprise: (
        Category("technical_innovation", "技术创新", "Technical innovation"),
        Category("quality", "质量提升", "Quality improvement"),
        Category("safety", "安全生产", "Workplace safety"),
        Category("mentoring", "传帮带", "Mentoring"),
        Category("energy_saving", "节能降耗", "Energy saving"),
        Category("service_pledge", "岗位承诺", "Duty pledge"),
        Category("other", "其他", "Other"),
    ),
    # 社会义务岗
    Post.community: (
        Category("volunteering", "志愿服务", "Volunteering"),
        Category("elder_care", "关爱老人", "Elder care"),
        Category("patrol", "治安巡逻", "Neighbourhood patrol"),
        Category("environment", "环境保护", "Environment"),
        Category("mediation", "矛盾调解", "Dispute mediation"),
        Category("poverty_relief", "帮困助学", "Help for families in need"),
        Category("civility", "文明劝导", "Civility promotion"),
        Category("other", "其他", "Other"),
    ),
}

_CODES: dict[Post, frozenset[str]] = {
    post: frozenset(c.code for c in items) for post, items in CATEGORIES.items()
}


def is_valid(post: Post | str, category: str) -> bool:
    return category in _CODES.get(Post(post), frozenset())


def name_zh(post: str, category: str) -> str:
    """The Chinese name of a category (exports); the code itself when unknown."""
    try:
        items = CATEGORIES[Post(post)]
    except ValueError:
        return category
    return next((c.name_zh for c in items if c.code == category), category)


def category_list() -> CategoriesRead:
    """Every post with its categories, named in the language of the request."""
    english = current_lang.get() == "en"
    post_names = {
        Post.enterprise: ("企业职责岗", "Enterprise duty post"),
        Post.community: ("社会义务岗", "Social service post"),
    }
    posts = []
    for post, items in CATEGORIES.items():
        zh, en = post_names[post]
        posts.append(
            PostCategories(
                post=post,
                name=en if english else zh,
                name_zh=zh,
                name_en=en,
                categories=[
                    CategoryRead(
                        code=c.code,
                        name=c.name_en if english else c.name_zh,
                        name_zh=c.name_zh,
                        name_en=c.name_en,
                    )
                    for c in items
                ],
            )
        )
    return CategoriesRead(posts=posts)
