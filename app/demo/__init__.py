"""The demo data `quyu seed-demo` loads (what a front-end developer finds on a fresh clone):
`places` (organizations and their activities) and `people` (accounts, check-ins,
contributions, a city client) declare it; `loader` writes it through the domains' rules."""
