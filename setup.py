"""Build hook: ship the top-level templates/ and site-presets/ inside the megarun package.

The design keeps both folders at the top of the repository; an installed wheel finds them
under megarun/_data/. Editable installs read them straight from the repository.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA_DIRS = ("templates", "site-presets")


class BuildWithData(build_py):
    def run(self) -> None:
        super().run()
        root = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "megarun" / "_data"
        for name in DATA_DIRS:
            source = root / name
            if source.is_dir():
                shutil.copytree(source, target / name, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithData})
