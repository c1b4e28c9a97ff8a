"""Compile the translation catalogues while the package is built (the .mo files are not committed).

Everything else about the build is declared in pyproject.toml; this only hooks build_py.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

TRANSLATIONS = Path("plugin", "translations")


class BuildPyWithCatalogues(build_py):
    """Build the packages, then compile each translations/*/LC_MESSAGES/*.po next to it."""

    def run(self):
        """Copy the package files, then write the .mo files where the package is built."""
        super().run()
        # Imported here: babel is a build requirement, not something setup.py needs to parse.
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        # An editable install serves the checkout itself, so the catalogue goes beside the .po.
        target = Path(".") if self.editable_mode else Path(self.build_lib)
        for po in sorted(TRANSLATIONS.glob("*/LC_MESSAGES/*.po")):
            mo = target / po.with_suffix(".mo")
            mo.parent.mkdir(parents=True, exist_ok=True)
            with po.open("rb") as source:
                catalogue = read_po(source, locale=po.parts[-3])
            with mo.open("wb") as compiled:
                write_mo(compiled, catalogue, use_fuzzy=False)


setup(cmdclass={"build_py": BuildPyWithCatalogues})
