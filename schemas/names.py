"""What people call things: the skills' Chinese names (the English name is the skill's code
with spaces). One table, shared by the pages, the API and the command-line tools."""

from __future__ import annotations

from typing import Final

from schemas.events import SKILLS

SKILL_NAMES_ZH: Final[dict[str, str]] = {
    "bricklayer": "瓦工",
    "carpenter": "木工",
    "electrician": "电工",
    "plumber": "水管工",
    "painter": "油漆工",
    "welder": "焊工",
    "rebar_worker": "钢筋工",
    "tiler": "贴砖工",
    "general_labourer": "普工",
    "mover": "搬运工",
    "cleaner": "保洁",
    "domestic_helper": "家政",
    "caregiver": "护工",
    "cook": "厨师",
    "kitchen_helper": "帮厨",
    "waiter": "服务员",
    "courier": "快递员",
    "driver": "司机",
    "warehouse_picker": "仓库拣货",
    "farmhand": "农工",
}
assert set(SKILL_NAMES_ZH) == set(SKILLS), "every skill has a Chinese name"


def skill_en(skill: str) -> str:
    """The skill's English name: its code with spaces (``general_labourer``: general labourer)."""
    return skill.replace("_", " ")


def skill_label(skill: str) -> str:
    """Chinese and English, as the command-line tools print a skill: ``厨师 cook``."""
    return f"{SKILL_NAMES_ZH.get(skill, '')} {skill_en(skill)}".strip()


def skill_from(text: str) -> str | None:
    """The skill code a person means: its code, its English name (any case, spaces or
    underscores) or its Chinese name; None if it names no skill."""
    wanted = "_".join(text.strip().casefold().replace("_", " ").split())
    if wanted in SKILL_NAMES_ZH:
        return wanted
    return next((k for k, zh in SKILL_NAMES_ZH.items() if zh == text.strip()), None)
