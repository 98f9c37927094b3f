"""What pyproject.toml cannot say: the migration scripts ship inside the wheel.

The repository keeps them in `alembic/` (see docs/architecture.md); installed, they are the
package `quyu_migrations`, so that `quyu migrate` works from a wheel (a container image, a
server) as well as from a checkout.  Everything else about the project is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["app", "app.*"]),
        "quyu_migrations",
        "quyu_migrations.versions",
    ],
    package_dir={"quyu_migrations": "alembic"},
    package_data={"": ["*.json"], "quyu_migrations": ["script.py.mako"]},
)
