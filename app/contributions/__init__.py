"""奉献双岗位 dual-post contributions: logging with evidence, review, summaries, statistics and
exports (API.md, "Dual-post contributions" and "Statistics and exports")."""
